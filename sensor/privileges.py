"""Least privilege: once the capture sockets are open the daemon needs neither root nor
any capability, so it gives them up for good.

Two ways the daemon is started, one result (uid != 0, no capability in any thread):

- As root (by hand, or a unit without DynamicUser): the files that must stay writable
  (EVE files, a log directory the daemon created, the control socket) are handed to the
  target user, then setgroups/setgid/setuid. Leaving uid 0 clears the permitted,
  effective and ambient capability sets, and glibc applies set*id calls to every thread.
- As an unprivileged user holding ambient capabilities (systemd's DynamicUser= with
  AmbientCapabilities=): the ambient set is cleared with prctl and the other sets with
  capset. Capabilities belong to threads and capset changes only the calling one, so the
  daemon drops before it starts threads of its own; verify() then checks every thread of
  the process (a thread started by a library at import, e.g. OpenBLAS's pool when
  OPENBLAS_NUM_THREADS is not 1, would keep them and makes the drop fail loudly).

In both cases no_new_privs is set, so no later execve can regain anything.

The user it becomes may be unable to read the install tree (a Python under /root, a
checkout in a home directory), so preload() imports, before the drop, the code that is
otherwise imported late: the rule and model stages a reload builds, and the codecs that
sockets and files use.
"""

from __future__ import annotations

import ctypes
import dataclasses
import grp
import importlib
import os
import pkgutil
import pwd
from collections.abc import Iterable

PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
DEFAULT_USERS = ("netsensor", "nobody")
# Imported on first use elsewhere: idna by getaddrinfo for str hosts (redis, syslog over UDP).
LATE_IMPORTS = ("encodings.ascii", "encodings.latin_1", "encodings.idna", "encodings.utf_8",
                "sensor.community_id", "sensor.stages")


class PrivilegeError(Exception):
    """Privileges could not be dropped (or the user does not exist), phrased for the operator."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@dataclasses.dataclass(frozen=True)
class Target:
    """Who the daemon becomes; uid/gid None when it is not root and keeps its user."""

    name: str
    uid: int | None
    gid: int | None


def resolve_target(user: str = "") -> Target:
    """The user to switch to when running as root: `user`, else netsensor, else nobody.

    Not root: stay who we are (systemd already chose the user), only capabilities go.
    """
    if os.geteuid() != 0:
        return Target(pwd.getpwuid(os.geteuid()).pw_name if _has_pw(os.geteuid())
                      else str(os.geteuid()), None, None)
    names = (user,) if user else DEFAULT_USERS
    for name in names:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return Target(name, pw.pw_uid, pw.pw_gid)
    raise PrivilegeError(f"live.user: no such user {user!r}" if user else
                         "no user 'netsensor' or 'nobody' to run as; set live.user")


def _has_pw(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def hand_over(target: Target, paths: list[str]) -> None:
    """chown `paths` (that exist) to the target user, so it can still reopen them later."""
    if target.uid is None or target.uid == 0:
        return
    for path in paths:
        try:
            os.chown(path, target.uid, target.gid if target.gid is not None else -1,
                     follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PrivilegeError(f"{path}: cannot hand over to user {target.name}: "
                                 f"{exc.strerror}") from None


def preload(packages: Iterable[str] = ("sensor.detect",), extra: Iterable[str] = ()) -> None:
    """Import every module of `packages`, LATE_IMPORTS and `extra` while they are readable.

    Best effort: a module that cannot load here fails the same way later, with its own
    message (a reload that needs it is refused and says why)."""
    names = [*LATE_IMPORTS, *extra]
    for pkg in packages:
        try:
            mod = importlib.import_module(pkg)
        except Exception:  # noqa: BLE001 - see the docstring
            continue
        names += [m.name for m in pkgutil.walk_packages(getattr(mod, "__path__", []),
                                                         pkg + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - see the docstring
            continue


def drop(target: Target) -> None:
    """Become `target` and give up every capability; PrivilegeError if anything remains."""
    libc = ctypes.CDLL(None, use_errno=True)
    if target.uid is not None and os.geteuid() == 0 and target.uid != 0:
        try:
            os.setgroups([])
            os.setgid(target.gid if target.gid is not None else target.uid)
            os.setuid(target.uid)
        except OSError as exc:
            raise PrivilegeError(f"cannot switch to user {target.name}: {exc.strerror}") \
                from None
    # The ambient set first: capset below would otherwise fail to lower what it contains.
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if any(capabilities(os.getpid()).values()):
        header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        if libc.capset(ctypes.byref(header), data) != 0:
            err = ctypes.get_errno()
            raise PrivilegeError(f"cannot drop capabilities: capset: {os.strerror(err)}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"cannot set no_new_privs: {os.strerror(err)}")
    verify()


def capabilities(pid: int, tid: int | None = None) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapAmb of a process (or one of its threads), from /proc."""
    path = f"/proc/{pid}/task/{tid}/status" if tid is not None else f"/proc/{pid}/status"
    out: dict[str, int] = {}
    with open(path, "rb") as f:
        for line in f:
            key, _, value = line.partition(b":")
            if key in (b"CapInh", b"CapPrm", b"CapEff", b"CapAmb"):
                out[key.decode()] = int(value, 16)
    return out


def verify() -> None:
    """Every thread of this process: uid != 0 unless we stayed root, and no capability."""
    pid = os.getpid()
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            caps = capabilities(pid, tid)
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        left = {k: v for k, v in caps.items() if v}
        if left:
            which = ", ".join(f"{k}={v:#x}" for k, v in sorted(left.items()))
            raise PrivilegeError(
                f"thread {tid} still holds capabilities after the drop ({which}); threads "
                f"started before it keep them (set OPENBLAS_NUM_THREADS=1)")


def describe() -> str:
    """`user nobody (65534), no capabilities` for the log."""
    uid = os.geteuid()
    name = pwd.getpwuid(uid).pw_name if _has_pw(uid) else str(uid)
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    caps = capabilities(os.getpid())
    state = "no capabilities" if not any(caps.values()) else f"CapEff={caps['CapEff']:#x}"
    return f"user {name} ({uid}), group {group}, {state}"
