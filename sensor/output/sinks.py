"""Where EVE lines go. Replay writes a file; the daemon adds sockets, syslog and Redis.

The file is opened for append and can be reopened (SIGHUP from logrotate's `create` +
`postrotate`), because `copytruncate` loses or corrupts lines.
"""

from __future__ import annotations

import os


class SinkError(Exception):
    """An output that cannot be written, phrased for the operator."""


class EveFileSink:
    """Append-mode EVE file; whole lines only, flushed after every batch."""

    def __init__(self, path: str):
        self.path = path
        self.lines = 0
        self._f = None
        self.reopen()

    def reopen(self) -> None:
        if self._f is not None:
            self._f.close()
        try:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror}") from None

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._f.write("\n".join(lines))
            self._f.write("\n")
        except OSError as exc:
            raise SinkError(f"{self.path}: write failed: {exc.strerror}") from None
        self.lines += len(lines)

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            raise SinkError(f"{self.path}: write failed: {exc.strerror}") from None

    def close(self) -> None:
        if self._f is not None:
            self.flush()
            self._f.close()
            self._f = None
