"""Shared by the live tests: two network namespaces joined by a veth pair, entering one
from this thread, and a work directory an unprivileged daemon can reach. Namespaces and
directories are removed afterwards, also on failure; nothing leaves the namespaces."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_serial = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


class VethLab:
    """Namespaces {prefix}A*/{prefix}B* joined by veth {dev}a* (in A, ip_a) <-> {dev}b* (in
    B, ip_b); IPv6 off for quiet links. Skips the test where namespaces cannot be made."""

    def __init__(self, prefix: str, dev: str, ip_a: str, ip_b: str) -> None:
        tag = f"{os.getpid() % 100000}x{next(_serial)}"
        self.ns_a, self.ns_b = f"{prefix}A{tag}", f"{prefix}B{tag}"
        self.va, self.vb = f"{dev}a{tag}"[:15], f"{dev}b{tag}"[:15]
        self.ip_a, self.ip_b = ip_a, ip_b
        self.made: list[str] = []

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                              timeout=20)

    def setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            res = self.ip("netns", "add", ns, check=False)
            if res.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {res.stderr.strip()}")
            self.made.append(ns)
            for key in ("all", "default"):
                self.ip("netns", "exec", ns, "sysctl", "-qw",
                        f"net.ipv6.conf.{key}.disable_ipv6=1")
            self.ip("-n", ns, "link", "set", "lo", "up")
        self.ip("link", "add", self.va, "netns", self.ns_a, "type", "veth", "peer", "name",
                self.vb, "netns", self.ns_b)
        for ns, dev, addr in ((self.ns_a, self.va, self.ip_a), (self.ns_b, self.vb, self.ip_b)):
            self.ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self.ip("-n", ns, "link", "set", dev, "up")

    def teardown(self) -> None:
        for ns in self.made:
            self.ip("netns", "del", ns, check=False)

    @contextlib.contextmanager
    def running(self) -> Iterator[VethLab]:
        """Set up for the `with` block; torn down afterwards whatever happened."""
        try:
            self.setup()
            yield self
        finally:
            self.teardown()


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace `name` (setns(2)); a socket
    created there stays in that namespace after the thread has gone back."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(orig, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace")
    finally:
        os.close(target)
        os.close(orig)


@contextlib.contextmanager
def reachable_tmpdir(prefix: str) -> Iterator[Path]:
    """A directory under /tmp the daemon can still reach after it dropped root (pytest's
    tmp_path is 0700); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
