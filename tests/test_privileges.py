"""sensor.privileges in child processes started as the daemon is: as root, and as an
unprivileged user holding ambient CAP_NET_RAW/CAP_NET_ADMIN (what systemd's DynamicUser +
AmbientCapabilities give). The end state is read back from /proc, not from the module."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sensor.privileges import PrivilegeError, resolve_target

REPO = Path(__file__).resolve().parents[1]
CAPS = "-all,+net_raw,+net_admin"

if os.geteuid() != 0:
    pytest.skip("privilege drop tests need root", allow_module_level=True)

CHILD = """
    import os, socket, sys, threading
    from sensor.privileges import PrivilegeError, drop, resolve_target
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)  # needs CAP_NET_RAW: we have it
    if {thread}:  # a thread started before the drop keeps its capabilities
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    try:
        drop(resolve_target({user!r}))
    except PrivilegeError as exc:
        print("ERROR", exc)
        sys.exit(3)
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        print("still may open packet sockets")
    except PermissionError:
        pass
    raw.close()
    print(open("/proc/self/status").read())
"""


def _child(user: str = "", thread: bool = False, wrap: tuple[str, ...] = (),
           ) -> subprocess.CompletedProcess:
    code = textwrap.dedent(CHILD.format(user=user, thread=thread))
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([*wrap, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_root_becomes_nobody_without_capabilities() -> None:
    nobody = pwd.getpwnam("nobody")
    res = _child("nobody")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "still may open" not in res.stdout
    st = _status(res.stdout)
    assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert st["Gid"].split() == [str(nobody.pw_gid)] * 4
    assert st["Groups"].strip() == ""
    for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[k], 16) == 0, k
    assert st["NoNewPrivs"].strip() == "1"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_ambient_capabilities_are_dropped() -> None:
    nobody = pwd.getpwnam("nobody")
    wrap = ("setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
            "--clear-groups", f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}",
            f"--bounding-set={CAPS}")
    res = _child(wrap=wrap)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "still may open" not in res.stdout
    st = _status(res.stdout)
    assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
    for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[k], 16) == 0, k
    # a thread that existed before the drop would keep them: that is refused, loudly
    res = _child(wrap=wrap, thread=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "still holds capabilities after the drop" in res.stdout


def test_resolve_target() -> None:
    default = resolve_target("")
    assert default.name in ("netsensor", "nobody") and default.uid not in (None, 0)
    assert resolve_target("root").uid == 0
    with pytest.raises(PrivilegeError, match="live.user: no such user 'nosuchuser'"):
        resolve_target("nosuchuser")
