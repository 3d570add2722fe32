"""The daemon's control socket and `netsensor ctl`, its client.

One command per connection, one line each way: the client sends `reload`, `reopen`,
`status` or `ping`; the daemon answers `OK ...` or `ERROR ...`. A reload answers only once
the new rules and model are in use (or were refused), so `netsensor ctl reload` exits 0
exactly when the new set runs. The socket is created mode 0660 in the runtime directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import stat
import sys

COMMANDS = ("reload", "reopen", "status", "ping")
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
MAX_LINE = 4096


def default_socket_path(iface: str | None = None) -> str:
    """$RUNTIME_DIRECTORY/ctl.sock under systemd, else /run/netsensor[/IFACE]/ctl.sock."""
    if iface:
        return f"/run/netsensor/{iface}/ctl.sock"
    rt = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(rt or "/run/netsensor", "ctl.sock")


class ControlError(Exception):
    """The control socket cannot be created, phrased for the operator."""


class ControlServer:
    """A listening unix stream socket; the daemon's loop polls fileno() and calls accept()."""

    def __init__(self, path: str):
        self.path = path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{path}: exists and is not a socket")
            if _alive(path):
                raise ControlError(f"{path}: another netsensor is listening there")
            os.unlink(path)  # left over from a daemon that was killed
        parent = os.path.dirname(path)
        try:
            if parent:
                os.makedirs(parent, mode=0o750, exist_ok=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old = os.umask(0o117)
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            self.sock.listen(16)
            self.sock.setblocking(False)
        except OSError as exc:
            raise ControlError(f"{path}: cannot create control socket: "
                               f"{exc.strerror or exc}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, str] | None:
        """The next client and its command line, or None (nothing pending, or a bad client)."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.settimeout(1.0)  # a client that never sends must not hold the daemon
        data = b""
        try:
            while b"\n" not in data and len(data) < MAX_LINE:
                chunk = conn.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
        except OSError:
            conn.close()
            return None
        return conn, data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def reply(conn: socket.socket, text: str) -> None:
    """Answer one client and hang up; a client that went away is not an error."""
    with contextlib.suppress(OSError):
        conn.settimeout(1.0)
        conn.sendall(text.replace("\n", " ").encode() + b"\n")
    conn.close()


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


def request(path: str, command: str, timeout: float = 120.0) -> str:
    """Send one command and return the daemon's one-line answer (OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        data = b""
        while b"\n" not in data and len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


def cmd_ctl(args: argparse.Namespace) -> int:
    path = args.socket or default_socket_path(args.interface)
    try:
        answer = request(path, args.command, args.timeout)
    except TimeoutError:
        print(f"netsensor: {path}: no answer within {args.timeout:g} s", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"netsensor: {path}: cannot reach the daemon: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    if answer.startswith("OK"):
        text = answer[2:].strip()
        if text:
            print(text)
        return EXIT_OK
    print(f"netsensor: {answer.removeprefix('ERROR').strip() or 'no answer'}", file=sys.stderr)
    return EXIT_REFUSED


def add_ctl_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ctl", help="control a running daemon (reload, reopen, status)")
    p.add_argument("command", choices=COMMANDS)
    where = p.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", help="control socket (default "
                       "$RUNTIME_DIRECTORY/ctl.sock or /run/netsensor/ctl.sock)")
    where.add_argument("-i", "--interface",
                       help="the netsensor@IFACE instance (/run/netsensor/IFACE/ctl.sock)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    p.set_defaults(fn=cmd_ctl)
    return p
