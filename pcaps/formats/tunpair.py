#!/usr/bin/env python3
"""Point-to-point layer-3 tunnel between two network namespaces built from two TUN devices.

The kernel here has no ipip/gre/sit modules, so `ip link add type ipip` is impossible.
This process creates TUN device DEV_A inside namespace NS_A and DEV_B inside NS_B
(IFF_TUN | IFF_NO_PI: the fd carries bare IP packets) and copies packets between them.
tcpdump on either TUN device captures raw IP (DLT_RAW, written as LINKTYPE_RAW 101).

usage: tunpair.py NS_A DEV_A NS_B DEV_B MAX_SECONDS
Runs until killed or MAX_SECONDS elapsed (bounded); prints "ready" once both devices exist.
"""

import ctypes
import fcntl
import os
import select
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def setns(name):
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def open_tun(dev):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    ns_a, dev_a, ns_b, dev_b, max_s = sys.argv[1:6]
    setns(ns_a)
    fa = open_tun(dev_a)
    setns(ns_b)
    fb = open_tun(dev_b)
    print("ready", flush=True)
    peer = {fa: fb, fb: fa}
    deadline = time.monotonic() + float(max_s)
    while time.monotonic() < deadline:
        r, _, _ = select.select([fa, fb], [], [], 0.5)
        for fd in r:
            try:
                os.write(peer[fd], os.read(fd, 65536))
            except OSError:
                pass  # peer device down (EIO) - drop the packet like a real link


if __name__ == "__main__":
    main()
