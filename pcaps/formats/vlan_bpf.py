#!/usr/bin/env python3
"""Attach a tiny eBPF program (tcx hook) that pushes or pops VLAN tags on an interface.

This kernel has no 8021q module and no bridge VLAN filtering, so `ip link add type vlan`
is impossible.  Instead the kernel's own bpf_skb_vlan_push / bpf_skb_vlan_pop helpers
tag every frame leaving a veth and untag every frame entering it: the tags on the wire
are real 802.1Q / 802.1ad tags, the traffic is real (ping, curl, nc).

usage (run inside the namespace that owns IFACE, as root):
  vlan_bpf.py IFACE egress push 0x8100:100            # 802.1Q id 100
  vlan_bpf.py IFACE egress push 0x8100:300 0x88a8:200 # QinQ: inner 300, outer 802.1ad 200
  vlan_bpf.py IFACE ingress pop 2                     # strip two tags
The program is attached with BPF_PROG_ATTACH (tcx), so it stays after this script exits
and disappears with the interface.
"""

import ctypes
import socket
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
FN_SKB_VLAN_PUSH, FN_SKB_VLAN_POP = 18, 19

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


MOV64_X, MOV64_K, CALL, EXIT = 0xBF, 0xB7, 0x85, 0x95


def bpf(cmd, attr: bytes):
    buf = ctypes.create_string_buffer(attr, 144)
    r = libc.syscall(SYS_BPF, cmd, buf, 144)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf cmd {cmd} failed")
    return r


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    ifname, hook, action = sys.argv[1:4]
    prog = insn(MOV64_X, 6, 1)  # r6 = skb
    if action == "push":
        for spec in sys.argv[4:]:
            proto, vid = spec.split(":")
            proto_be = socket.htons(int(proto, 0))
            prog += (
                insn(MOV64_X, 1, 6)
                + insn(MOV64_K, 2, imm=proto_be)
                + insn(MOV64_K, 3, imm=int(vid))
            )
            prog += insn(CALL, imm=FN_SKB_VLAN_PUSH)
    elif action == "pop":
        for _ in range(int(sys.argv[4]) if len(sys.argv) > 4 else 1):
            prog += insn(MOV64_X, 1, 6) + insn(CALL, imm=FN_SKB_VLAN_POP)
    else:
        sys.exit("action must be push or pop")
    prog += insn(MOV64_K, 0, imm=0) + insn(EXIT)  # TCX_PASS

    insns = ctypes.create_string_buffer(prog)
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attach_type = BPF_TCX_EGRESS if hook == "egress" else BPF_TCX_INGRESS
    attr = struct.pack(
        "<IIQQIIQII16sII",
        BPF_PROG_TYPE_SCHED_CLS,
        len(prog) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(lic),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        b"vlan_" + action.encode(),
        0,
        attach_type,
    )
    try:
        fd = bpf(BPF_PROG_LOAD, attr)
    except OSError:
        sys.stderr.write(log.value.decode(errors="replace"))
        raise
    ifindex = socket.if_nametoindex(ifname)
    # target_ifindex, attach_bpf_fd, attach_type, attach_flags, replace_fd, relative_fd, expected_revision
    bpf(BPF_PROG_ATTACH, struct.pack("<IIIIIIQ", ifindex, fd, attach_type, 0, 0, 0, 0))
    print(f"attached {action} {' '.join(sys.argv[4:])} on {ifname} {hook}")


if __name__ == "__main__":
    main()
