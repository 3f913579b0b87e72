-- wrk script for bench/issue.py: POST /token, client credentials with client_secret_basic.
-- BENCH_BASIC is base64("client_id:secret"); BENCH_BODY the form (the same for every server).
wrk.method = "POST"
wrk.path = "/token"
wrk.body = os.getenv("BENCH_BODY") or "grant_type=client_credentials&scope=inventory%3Aread"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. (os.getenv("BENCH_BASIC") or "")

-- One JSON line the bench parses: every figure it needs, latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
