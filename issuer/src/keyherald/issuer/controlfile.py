"""The control key beside Redis: a file (or a secret store mount) holding it sealed under the
KEK, so that a Redis that forgets (no persistence, an eviction, a flush) does not take the
trust anchor with it. Without it, a namespace whose Redis lost the control key can only be
restored from a backup; with it, the next replica starts a new log signed by the same key
and every agent carries on.

The file holds exactly the blob Redis holds (``kek.seal`` output): nothing in it is usable
without the KEK. It is written once, atomically and readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from keyherald.shared.errors import SettingsError

__all__ = ["ControlKeyFile"]

SETTING = "KEYHERALD_CONTROL_KEY_FILE"
MAX_SIZE = 64 * 1024


class ControlKeyFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        """The sealed blob, or None when the file does not exist yet."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SettingsError(SETTING, f"cannot read {self.path} ({exc.strerror})") from None
        if len(data) > MAX_SIZE:
            raise SettingsError(SETTING, f"{self.path} is too large to be a sealed control key")
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise SettingsError(SETTING, f"{self.path} does not hold a sealed control key") from None
        if not text:
            raise SettingsError(SETTING, f"{self.path} is empty (remove it, or put the sealed control key back)")
        return text

    def write(self, blob: str) -> None:
        """Write the blob if the file does not exist yet (never replaces one)."""
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise SettingsError(SETTING, f"cannot write {self.path} ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(blob + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, self.path)  # fails if it exists: two replicas never overwrite each other
        except FileExistsError:
            pass
        except OSError:
            self._write_exclusive(blob)  # a file system without hard links (some mounts)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _write_exclusive(self, blob: str) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise SettingsError(SETTING, f"cannot write {self.path} ({exc.strerror})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(blob + "\n")
            handle.flush()
            os.fsync(handle.fileno())
