"""The Lua scripts that write the log: each one compare-and-set, all keys in one hash slot.

The head key holds ``<log>:<seq>:<digest>`` of the last event appended. Every script first
checks it against what the writer based its decision on, so two writers never both extend
the log from one point, and a writer never writes over a log that moved under it. A head
that is not even a string (someone made it a list) reads as ``"\\0"``: it can be matched,
and replaced, like any other value.
"""

from __future__ import annotations

__all__ = ["APPEND", "CHECKPOINT", "REPAIR_HEAD", "START_LOG", "WRONG_TYPE"]

WRONG_TYPE = "\0"

_READ_HEAD = """
local head = redis.pcall('GET', KEYS[2])
if type(head) == 'table' then head = '\\0' end
if not head then head = '' end
"""

APPEND = (
    """
-- KEYS: events, head, clients
-- ARGV: expected head, new head, minid, first seq, n, n event texts, then pairs
--       (client_id, record; '' deletes)
"""
    + _READ_HEAD
    + """
if head ~= ARGV[1] then return -1 end
local first = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  local id = tostring(first + i) .. '-0'
  if i == 0 then
    local added = redis.pcall('XADD', KEYS[1], 'MINID', '~', ARGV[3], id, 'event', ARGV[6])
    if type(added) == 'table' and added.err then return -2 end
  else
    redis.call('XADD', KEYS[1], id, 'event', ARGV[6 + i])
  end
end
for j = 6 + n, #ARGV, 2 do
  if ARGV[j + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[j])
  else
    redis.call('HSET', KEYS[3], ARGV[j], ARGV[j + 1])
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)
"""-1: the head moved (retry on a fresh read); -2: the stream refused the first entry (it is
not a stream, or holds an entry above ours): nothing was written, the writer repairs."""

START_LOG = (
    """
-- KEYS: events, head, snapshot
-- ARGV: expected head, new head, base checkpoint, first event id, first event text
"""
    + _READ_HEAD
    + """
if head ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[1], ARGV[4], 'event', ARGV[5])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)
"""A new log replaces whatever was there (only if the head is still what the writer saw)."""

CHECKPOINT = """
-- KEYS: head, snapshot
-- ARGV: log, seq, SHA-1 of the checkpoint the writer saw ('' none), new checkpoint
local head = redis.pcall('GET', KEYS[1])
if type(head) ~= 'string' then return 0 end
local log, seq = string.match(head, '^([^:]+):(%d+):')
if log ~= ARGV[1] or tonumber(seq) < tonumber(ARGV[2]) then return 0 end
local current = redis.pcall('GET', KEYS[2])
local sum = ''
if type(current) == 'string' then sum = redis.sha1hex(current) end
if sum ~= ARGV[3] then return -1 end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""
"""0: the head is on another log or behind (nothing to do); -1: the checkpoint changed since the
writer read it (re-read it); 1: written."""

REPAIR_HEAD = (
    """
-- KEYS: events, head
-- ARGV: expected head, new head
"""
    + _READ_HEAD
    + """
if head ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)
"""Write the head of a log whose checkpoint and stream are whole (SET replaces any type)."""
