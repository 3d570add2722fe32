"""A private rsyslogd for the output tests: a real syslog server, as a SIEM host runs it.

It listens on a unix datagram socket (imuxsock with its stock parsing, as Debian's
/dev/log input) and on UDP 127.0.0.1:PORT (imudp), and writes every message it parsed
to a file as `programname|facility|severity|procid|hostname|msg`, so a test sees what
rsyslog understood of each message, not just the bytes that arrived.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

CONFIG = """\
global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on" RateLimit.Interval="0")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}")
template(name="fields" type="string"
         string="%programname%|%syslogfacility-text%|%syslogseverity-text%|%procid%|%hostname%|%msg%\\n")
*.* action(type="omfile" file="{out}" template="fields")
"""


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslogd:
    """rsyslogd -n with its own config in `workdir`; `prefix` runs it in a namespace."""

    def __init__(self, workdir: Path, prefix: tuple[str, ...] = ()):
        exe = rsyslogd_path()
        assert exe is not None
        self.dir = workdir
        workdir.mkdir(exist_ok=True)
        self.sock = workdir / "log.sock"
        self.out = workdir / "messages"
        self.port = free_udp_port()
        conf = workdir / "rsyslog.conf"
        conf.write_text(CONFIG.format(dir=workdir, sock=self.sock, port=self.port,
                                      out=self.out))
        self.proc = subprocess.Popen([*prefix, exe, "-n", "-f", str(conf), "-i",
                                      str(workdir / "rsyslogd.pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while not self.sock.exists() and self.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        if not self.sock.exists():
            self.stop()
            raise RuntimeError(f"rsyslogd did not start: {self.proc.stderr.read().decode()}")
        self.sock.chmod(0o666)  # as /dev/log: any user may log

    def messages(self, programname: str) -> list[dict[str, str]]:
        """What rsyslog parsed, for one program."""
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            prog, fac, sev, procid, host, msg = line.split("|", 5)
            if prog == programname:
                out.append({"facility": fac, "severity": sev, "procid": procid,
                            "hostname": host, "msg": msg.strip()})
        return out

    def wait(self, programname: str, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        end = time.monotonic() + timeout
        while len(self.messages(programname)) < count and time.monotonic() < end:
            time.sleep(0.05)
        return self.messages(programname)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
