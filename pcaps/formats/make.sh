#!/usr/bin/env bash
# Regenerate the small real captures in pcaps/formats/ (run as root; idempotent).
#
# All traffic stays inside network namespaces this script creates (prefix "pcapfmt-")
# and their loopbacks; everything is removed again on exit (trap).  Every wait/loop is
# bounded.  Needs: iproute2, tcpdump, dumpcap/mergecap/editcap/capinfos/tshark
# (wireshark-common, tshark), curl, ping (iputils), dig (bind9-dnsutils), dnsmasq,
# nc (netcat-openbsd), python3.
#
# Kernel notes (see README.md): this kernel has no 8021q, ipip/gre/sit or bridge VLAN
# filtering, so VLAN tags are pushed/popped by a tiny tcx eBPF program (vlan_bpf.py) and the
# raw-IP link is a pair of TUN devices joined by tunpair.py.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
PFX=pcapfmt
WORK=$(mktemp -d /tmp/pcapfmt.XXXXXX)
BG_PIDS=()

log() { echo "[make.sh] $*" >&2; }

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PFX}-" || true; }

cleanup() {
    set +e
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for ns in $(our_netns); do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in ip tcpdump dumpcap mergecap editcap capinfos tshark curl ping dig dnsmasq nc; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
# leftovers of an interrupted earlier run (only our own prefix)
for ns in $(our_netns); do ip netns del "$ns"; done

nsx() { local ns=$1; shift; ip netns exec "$PFX-$ns" "$@"; }

mkns() {  # mkns NAME : namespace with lo up, no DAD delay, no router solicitations
    ip netns add "$PFX-$1"
    nsx "$1" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0 \
        net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.all.router_solicitations=0
    nsx "$1" ip link set lo up
}

veth() {  # veth NS_A IF_A NS_B IF_B
    ip link add "$2" netns "$PFX-$1" type veth peer name "$4" netns "$PFX-$3"
}

spawn() {  # spawn CMD... : run an external command in background, remember its pid
    "$@" &
    BG_PIDS+=($!)
    LAST_PID=$!
}
spawn_ns() {  # spawn_ns NS CMD... : same inside a namespace ($! is the command itself: ip netns exec execs)
    local ns=$1; shift
    spawn ip netns exec "$PFX-$ns" "$@"
}

wait_for() {  # wait_for FILE PATTERN : bounded (5 s) wait for PATTERN to show up in FILE
    local i
    for i in $(seq 50); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timeout waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

CAP_PID=
start_cap() {  # start_cap NS IFACE OUTFILE [tcpdump args...]
    local ns=$1 ifc=$2 out=$3; shift 3
    : >"$WORK/cap.err"
    spawn_ns "$ns" timeout 120 tcpdump -n --immediate-mode -i "$ifc" -U -w "$out" "$@" 2>"$WORK/cap.err"
    CAP_PID=$LAST_PID
    wait_for "$WORK/cap.err" "listening on"
}
stop_cap() {
    sleep 1
    kill -TERM "$CAP_PID" 2>/dev/null || true
    wait "$CAP_PID" 2>/dev/null || true
    tail -n 3 "$WORK/cap.err" >&2
}

SRV_PIDS=()
start_servers() {  # start_servers NS V4 V6 : HTTP (8080, dual stack), DNS (dnsmasq), UDP sink (nc 7777)
    local ns=$1 v4=$2 v6=$3
    mkdir -p "$WORK/www"
    printf '<html><body>netsensor pcap fixture</body></html>\n' >"$WORK/www/index.html"
    : >"$WORK/http.err"
    spawn_ns "$ns" timeout 120 "$PY" -u -m http.server 8080 --bind :: --directory "$WORK/www" >"$WORK/http.err" 2>&1
    SRV_PIDS+=($LAST_PID)
    spawn_ns "$ns" timeout 120 dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$v4" --listen-address="$v6" --except-interface=lo --pid-file= --user=root \
        --address=/example.test/10.77.0.1 --address=/example.test/fd00:77::1 2>"$WORK/dns.err"
    SRV_PIDS+=($LAST_PID)
    spawn_ns "$ns" timeout 120 nc -u -l 7777 >/dev/null
    SRV_PIDS+=($LAST_PID)
    wait_for "$WORK/http.err" "Serving HTTP"
    sleep 0.3
}
stop_servers() {
    local p
    for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SRV_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SRV_PIDS=()
}

udp_send() {  # udp_send NS ADDR SIZE : one UDP datagram of SIZE bytes to ADDR:7777
    nsx "$1" "$PY" -c 'import socket,sys
a=sys.argv[1]; s=socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"U"*int(sys.argv[2]), (a, 7777))' "$2" "$3"
}

traffic() {  # traffic CLIENT_NS V4 V6 [nodns]: ICMP, ICMPv6, TCP (HTTP v4+v6), UDP (DNS v4+v6, nc)
    local ns=$1 v4=$2 v6=$3
    nsx "$ns" ping -n -q -c 2 -i 0.2 -W 1 "$v4" >/dev/null
    nsx "$ns" ping -6 -n -q -c 2 -i 0.2 -W 1 "$v6" >/dev/null
    nsx "$ns" curl -sS -m 5 -o /dev/null "http://$v4:8080/index.html"
    nsx "$ns" curl -sS -m 5 -g -o /dev/null "http://[$v6]:8080/index.html"
    if [ "${4:-}" != nodns ]; then
        nsx "$ns" dig +short +tries=1 +time=2 @"$v4" example.test A >/dev/null
        nsx "$ns" dig +short +tries=1 +time=2 @"$v6" example.test AAAA >/dev/null
    fi
    echo "udp-hello" | nsx "$ns" timeout 3 nc -u -w 1 "$v4" 7777
}

OUT=$HERE
cd "$WORK"

############ 1. plain Ethernet: a <-> b over a veth pair ############
log "ethernet topology"
mkns a; mkns b
veth a va b vb
nsx a ip addr add 10.1.0.1/24 dev va; nsx a ip addr add fd00:1::1/64 dev va
nsx b ip addr add 10.1.0.2/24 dev vb; nsx b ip addr add fd00:1::2/64 dev vb
nsx a ip link set va up; nsx b ip link set vb up
sleep 2   # let link-up MLD/ND chatter pass

eth_capture() {  # eth_capture OUT [tcpdump args]
    local out=$1; shift
    start_servers b 10.1.0.2 fd00:1::2
    start_cap a va "$WORK/$out" "$@"
    traffic a 10.1.0.2 fd00:1::2
    stop_cap
    stop_servers
}
log "eth-le-usec.pcap"; eth_capture eth-le-usec.pcap
log "eth-nsec.pcap";   eth_capture eth-nsec.pcap --time-stamp-precision=nano

log "sll.pcap / sll2.pcap (tcpdump -i any in namespace a, incl. loopback traffic)"
for lt in LINUX_SLL LINUX_SLL2; do
    f=$([ $lt = LINUX_SLL ] && echo sll.pcap || echo sll2.pcap)
    start_servers b 10.1.0.2 fd00:1::2
    start_cap a any "$WORK/$f" -y $lt
    nsx a ping -n -q -c 1 -W 1 127.0.0.1 >/dev/null
    nsx a ping -6 -n -q -c 1 -W 1 ::1 >/dev/null
    traffic a 10.1.0.2 fd00:1::2
    stop_cap
    stop_servers
done

log "single.pcapng (dumpcap writes pcapng natively)"
start_servers b 10.1.0.2 fd00:1::2
: >"$WORK/cap.err"
spawn_ns a timeout 120 dumpcap -i va -w "$WORK/single.pcapng" 2>"$WORK/cap.err"
CAP_PID=$LAST_PID
wait_for "$WORK/cap.err" "Capturing on"
sleep 0.5
traffic a 10.1.0.2 fd00:1::2
stop_cap
stop_servers

log "frag4.pcap"
start_servers b 10.1.0.2 fd00:1::2
start_cap a va "$WORK/frag4.pcap"
nsx a ping -n -q -c 1 -s 3000 -M want -W 1 10.1.0.2 >/dev/null
udp_send a 10.1.0.2 4000
stop_cap
log "frag6.pcap"
start_cap a va "$WORK/frag6.pcap"
nsx a ping -6 -n -q -c 1 -s 3000 -W 1 fd00:1::2 >/dev/null
udp_send a fd00:1::2 4000
stop_cap
stop_servers

log "ipv4-options.pcap"
start_cap a va "$WORK/ipv4-options.pcap"
nsx a ping -n -q -c 1 -R -W 1 10.1.0.2 >/dev/null
nsx a ping -n -q -c 1 -T tsonly -W 1 10.1.0.2 >/dev/null
nsx a ping -n -q -c 1 -T tsandaddr -W 1 10.1.0.2 >/dev/null
stop_cap

############ 2. loopback inside namespace a (source for the BSD-loopback conversions) ############
log "lo-eth.pcap (Linux lo, Ethernet with zero MACs)"
: >"$WORK/lohttp.err"
spawn_ns a timeout 60 "$PY" -u -m http.server 8081 --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/lohttp.err" 2>&1
LOHTTP=$LAST_PID
wait_for "$WORK/lohttp.err" "Serving HTTP"
start_cap a lo "$WORK/lo-eth.pcap"
nsx a ping -n -q -c 2 -i 0.2 -W 1 127.0.0.1 >/dev/null
nsx a ping -6 -n -q -c 2 -i 0.2 -W 1 ::1 >/dev/null
nsx a curl -sS -m 5 -o /dev/null http://127.0.0.1:8081/index.html
nsx a "$PY" -c 'import socket
for fam, a in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    r = socket.socket(fam, socket.SOCK_DGRAM); r.bind((a, 7777))
    s = socket.socket(fam, socket.SOCK_DGRAM); s.sendto(b"lo-udp", (a, 7777)); r.recv(100)'
stop_cap
kill "$LOHTTP"; wait "$LOHTTP" 2>/dev/null || true

############ 3. 802.1Q and 802.1ad/802.1Q (QinQ) via tcx eBPF vlan push/pop ############
vlan_capture() {  # vlan_capture NS1 NS2 OUT PUSHSPEC... (push order: inner first)
    local n1=$1 n2=$2 out=$3; shift 3
    local ntags=$#
    mkns "$n1"; mkns "$n2"
    veth "$n1" t1 "$n2" t2
    nsx "$n1" "$PY" "$HERE/vlan_bpf.py" t1 egress push "$@" >/dev/null
    nsx "$n1" "$PY" "$HERE/vlan_bpf.py" t1 ingress pop "$ntags" >/dev/null
    nsx "$n2" "$PY" "$HERE/vlan_bpf.py" t2 egress push "$@" >/dev/null
    nsx "$n2" "$PY" "$HERE/vlan_bpf.py" t2 ingress pop "$ntags" >/dev/null
    nsx "$n1" ip addr add 10.2.0.1/24 dev t1; nsx "$n1" ip addr add fd00:2::1/64 dev t1
    nsx "$n2" ip addr add 10.2.0.2/24 dev t2; nsx "$n2" ip addr add fd00:2::2/64 dev t2
    nsx "$n1" ip link set t1 up; nsx "$n2" ip link set t2 up
    sleep 1
    start_servers "$n2" 10.2.0.2 fd00:2::2
    start_cap "$n1" t1 "$WORK/$out"
    traffic "$n1" 10.2.0.2 fd00:2::2
    stop_cap
    stop_servers
}
log "vlan.pcap (802.1Q id 100)"
vlan_capture v1 v2 vlan.pcap 0x8100:100
log "qinq.pcap (802.1ad id 200 outer, 802.1Q id 300 inner)"
vlan_capture q1 q2 qinq.pcap 0x8100:300 0x88a8:200

############ 4. raw IP: TUN pair ############
log "raw-ip.pcap (TUN device, LINKTYPE_RAW)"
mkns t1; mkns t2
: >"$WORK/tun.out"
spawn "$PY" "$HERE/tunpair.py" "$PFX-t1" tun0 "$PFX-t2" tun0 90 >"$WORK/tun.out"
TUNPID=$LAST_PID
wait_for "$WORK/tun.out" ready
nsx t1 ip addr add 10.9.0.1 peer 10.9.0.2 dev tun0; nsx t1 ip addr add fd00:9::1/64 dev tun0
nsx t2 ip addr add 10.9.0.2 peer 10.9.0.1 dev tun0; nsx t2 ip addr add fd00:9::2/64 dev tun0
nsx t1 ip link set tun0 up; nsx t2 ip link set tun0 up
sleep 1
start_servers t2 10.9.0.2 fd00:9::2
start_cap t1 tun0 "$WORK/raw-ip.pcap"
traffic t1 10.9.0.2 fd00:9::2
stop_cap
stop_servers
kill "$TUNPID"; wait "$TUNPID" 2>/dev/null || true

############ 5. IPv6 extension headers ############
log "ipv6-exthdr.pcap (MLD hop-by-hop at link-up, DST/HBH/SRv6 via sticky socket options)"
mkns e1; mkns e2
veth e1 x1 e2 x2
nsx e2 sysctl -qw net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.x2.seg6_enabled=1
nsx e2 ip addr add fd00:e::2/64 dev x2; nsx e2 ip addr add fd00:e::3/64 dev x2
nsx e2 ip addr add 10.3.0.2/24 dev x2
nsx e1 ip addr add fd00:e::1/64 dev x1; nsx e1 ip addr add 10.3.0.1/24 dev x1
nsx e2 ip link set x2 up
start_servers e2 10.3.0.2 fd00:e::2
start_cap e2 x2 "$WORK/ipv6-exthdr.pcap"
nsx e1 ip link set x1 up   # link-up: MLDv2 reports with hop-by-hop router alert
sleep 1.5
nsx e1 "$PY" "$HERE/exthdr_send.py" fd00:e::2 fd00:e::3 8080 >/dev/null
stop_cap
stop_servers

############ 6. derived files ############
log "derived: big-endian, BSD loopback, pcapng, gzip, damaged"
"$PY" "$HERE/swap_endian.py" eth-le-usec.pcap eth-be-usec.pcap
"$PY" "$HERE/swap_endian.py" eth-nsec.pcap eth-be-nsec.pcap
"$PY" "$HERE/convert_null.py" --linktype null --af6 30 lo-eth.pcap null-loopback.pcap
"$PY" "$HERE/convert_null.py" --linktype loop --af6 24 lo-eth.pcap loop.pcap
mergecap -F pcapng -w multi-if.pcapng eth-le-usec.pcap sll2.pcap raw-ip.pcap
editcap -F pcapng eth-nsec.pcap nsec.pcapng
gzip -9 -n -c eth-le-usec.pcap >eth-le-usec.pcap.gz
"$PY" "$HERE/damage.py" "$WORK"

FILES="eth-le-usec.pcap eth-nsec.pcap eth-be-usec.pcap eth-be-nsec.pcap vlan.pcap qinq.pcap
sll.pcap sll2.pcap raw-ip.pcap lo-eth.pcap null-loopback.pcap loop.pcap multi-if.pcapng
single.pcapng nsec.pcapng eth-le-usec.pcap.gz frag4.pcap frag6.pcap ipv4-options.pcap
ipv6-exthdr.pcap truncated.pcap truncated-header.pcap garbage.bin bad-linktype.pcap
zero-len-record.pcap oversized-record.pcap empty.pcap truncated.pcapng"
for f in $FILES; do
    [ -s "$f" ] || [ "$f" = empty.pcap ] || { echo "missing $f" >&2; exit 1; }
    cp -f "$f" "$OUT/$f"
done
chmod 644 $(for f in $FILES; do echo "$OUT/$f"; done)

log "facts -> expected.json, README.md"
DAMAGE_JSON="$WORK/damage.json" "$PY" "$HERE/facts.py" "$OUT" $FILES
log "done"
