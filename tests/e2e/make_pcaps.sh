#!/usr/bin/env bash
# Build the input.pcap of every tests/e2e case (run as root on Debian 12; needs tcpdump,
# editcap, hydra, nmap, curl, ping, python3). Two kinds of source:
#  - cut from the labelled lab captures (pcaps/sample.pcap, committed; and
#    pcaps/lab/out/rl-4601.pcap, full frames, made with
#    `python3 pcaps/lab/generate.py --seed 4601 --duration 200 --out pcaps/lab/out/rl-4601
#     --attacks all --benign-clients 3 --profile small`);
#  - made here with real tools in two private network namespaces (nse2e-a, nse2e-b; always
#    deleted on exit): an FTP login service + hydra, an nmap ping sweep, curl against
#    python's http.server, UDP datagrams, ping with a payload pattern.
# Then run tests/e2e/make_expected.sh to write expected-events.json with real Suricata.
#   bash tests/e2e/make_pcaps.sh [CASE...]     (default: all)
# CASE is a case folder name, except: `proto-mix` makes the one capture shared by
# content-modifiers, flowbits and bidirectional; `dns-tunnel` also fills thresholds.
set -euo pipefail
cd "$(dirname "$0")"
E2E=$PWD
ROOT=$(cd ../.. && pwd)
SAMPLE=$ROOT/pcaps/sample.pcap
FULL=$ROOT/pcaps/lab/out/rl-4601.pcap
want() { [ -z "$WANT" ] || [[ " $WANT " == *" $1 "* ]]; }
WANT="$*"

# cut FROM OUT START_EPOCH END_EPOCH FILTER [MAXPKTS]: time slice, then a BPF filter
cut() {
  local from=$1 out=$2 start=$3 end=$4 filter=$5 max=${6:-0} tmp
  tmp=$(mktemp --suffix=.pcap)
  editcap -F pcap -A "$start" -B "$end" "$from" "$tmp"
  if [ "$max" -gt 0 ]; then
    tcpdump -r "$tmp" -w "$out" -c "$max" "$filter" 2>/dev/null
  else
    tcpdump -r "$tmp" -w "$out" "$filter" 2>/dev/null
  fi
  rm -f "$tmp"
}
# slot LABELS NAME -> "start end" epoch seconds of a labelled attack
slot() { awk -F, -v n="$2" '$1==n {printf "%d %d\n", $7, $8+1}' "$1"; }

if want scan-syn; then read -r s e < <(slot "${SAMPLE%.pcap}.labels.csv" scan-syn)
  cut "$SAMPLE" scan-syn/input.pcap "$s" "$e" "host 10.77.0.66" 1800; fi
if want scan-fin-null-xmas; then
  L=${FULL%.pcap}.labels.csv; parts=()
  for n in scan-fin scan-null scan-xmas; do read -r s e < <(slot "$L" $n)
    cut "$FULL" "/tmp/nse2e-$n.pcap" "$s" "$e" "tcp and host 10.77.0.66" 120
    parts+=("/tmp/nse2e-$n.pcap"); done
  mergecap -F pcap -w scan-fin-null-xmas/input.pcap "${parts[@]}"; rm -f "${parts[@]}"; fi
if want scan-udp; then read -r s e < <(slot "${FULL%.pcap}.labels.csv" scan-udp)
  cut "$FULL" scan-udp/input.pcap "$s" "$e" "host 10.77.0.66"; fi
if want flood-syn; then read -r s e < <(slot "${SAMPLE%.pcap}.labels.csv" flood-syn)
  cut "$SAMPLE" flood-syn/input.pcap "$s" "$e" "host 10.77.0.66" 2000; fi
if want flood-udp-icmp; then
  L=${FULL%.pcap}.labels.csv
  read -r s e < <(slot "$L" flood-udp)
  cut "$FULL" /tmp/nse2e-fu.pcap "$s" "$e" "udp and src 10.77.0.66" 305
  read -r s e < <(slot "$L" flood-icmp)
  cut "$FULL" /tmp/nse2e-fi.pcap "$s" "$e" "icmp and src 10.77.0.66" 105
  mergecap -F pcap -w flood-udp-icmp/input.pcap /tmp/nse2e-fu.pcap /tmp/nse2e-fi.pcap
  rm -f /tmp/nse2e-fu.pcap /tmp/nse2e-fi.pcap; fi
if want brute-ssh; then read -r s e < <(slot "${SAMPLE%.pcap}.labels.csv" brute-ssh)
  cut "$SAMPLE" brute-ssh/input.pcap "$s" "$e" "host 10.77.0.66 and port 22"; fi
if want brute-http; then read -r s e < <(slot "${FULL%.pcap}.labels.csv" brute-http)
  cut "$FULL" brute-http/input.pcap "$s" "$e" "host 10.77.0.66 and port 80" 450; fi
if want dns-tunnel; then read -r s e < <(slot "${SAMPLE%.pcap}.labels.csv" dns-tunnel)
  cut "$SAMPLE" dns-tunnel/input.pcap "$s" "$e" "udp port 53" 400
  mkdir -p thresholds; cp dns-tunnel/input.pcap thresholds/input.pcap; fi
if want benign-mix; then
  # all benign traffic of sample.pcap (no attacker, no iperf3), frames under 700 bytes
  # (drops the bulk-transfer data segments to stay small; flows keep their handshakes)
  tcpdump -r "$SAMPLE" -w benign-mix/input.pcap \
    'not host 10.77.0.66 and not host 10.77.0.67 and not tcp portrange 5201-5203 and less 700' \
    2>/dev/null; fi

# --- traffic made here, in namespaces ---------------------------------------------------
NS_A=nse2e-a NS_B=nse2e-b
cleanup() {
  for p in $(ip netns pids $NS_A 2>/dev/null) $(ip netns pids $NS_B 2>/dev/null); do
    kill "$p" 2>/dev/null || true; done
  ip netns del $NS_A 2>/dev/null || true; ip netns del $NS_B 2>/dev/null || true
}
lab_up() {
  cleanup; trap cleanup EXIT
  ip netns add $NS_A; ip netns add $NS_B
  ip -n $NS_A link add eth0 type veth peer name eth0 netns $NS_B
  ip -n $NS_A addr add 10.79.0.1/24 dev eth0; ip -n $NS_B addr add 10.79.0.2/24 dev eth0
  for ns in $NS_A $NS_B; do
    ip -n $ns link set lo up; ip -n $ns link set eth0 up
    ip netns exec $ns ethtool -K eth0 tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  done
  # a routed /24 behind B that nobody answers for (the ping sweep's targets)
  ip -n $NS_A route add 10.79.1.0/24 via 10.79.0.2
  sleep 1
}
# capture OUT CMD...: tcpdump on A's veth while CMD runs in A
capture() {
  local out=$1; shift
  ip netns exec $NS_A tcpdump -U -s 0 -i eth0 -w "$out" not arp 2>/dev/null & local td=$!
  sleep 1; "$@" || true; sleep 1; kill "$td"; wait "$td" 2>/dev/null || true
}
if want brute-ftp || want icmp-sweep || want proto-mix; then lab_up; fi

if want brute-ftp; then
  # a minimal FTP login service: banner, USER -> 331, PASS -> 530, then close
  ip netns exec $NS_B python3 - <<'PY' &
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"220 e2e FTP service ready\r\n")
        for line in self.rfile:
            cmd = line.split(b" ", 1)[0].strip().upper()
            if cmd == b"USER":
                self.wfile.write(b"331 Please specify the password.\r\n")
            elif cmd == b"PASS":
                self.wfile.write(b"530 Login incorrect.\r\n")
                return
            elif cmd == b"QUIT":
                self.wfile.write(b"221 Goodbye.\r\n")
                return
            else:
                self.wfile.write(b"500 Unknown command.\r\n")
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("10.79.0.2", 21), H).serve_forever()
PY
  sleep 1
  printf '%s\n' 123456 password admin letmein qwerty dragon monkey 111111 sunshine \
    iloveyou princess football welcome shadow master > /tmp/nse2e-words.txt
  capture brute-ftp/input.pcap ip netns exec $NS_A timeout 60 \
    hydra -I -q -t 2 -l admin -P /tmp/nse2e-words.txt ftp://10.79.0.2
  rm -f /tmp/nse2e-words.txt
fi
if want icmp-sweep; then
  capture icmp-sweep/input.pcap ip netns exec $NS_A timeout 60 \
    nmap -n -sn -PE --send-ip --max-retries 0 -T4 10.79.1.1-60
fi
if want proto-mix; then
  mkdir -p /tmp/nse2e-www/admin
  printf 'hello from the e2e web server\n' > /tmp/nse2e-www/index.html
  printf 'secret area\n' > /tmp/nse2e-www/admin/index.html
  ip netns exec $NS_B python3 -m http.server 80 --bind 10.79.0.2 -d /tmp/nse2e-www \
    >/dev/null 2>&1 &
  ip netns exec $NS_B python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.79.0.2", 5353))
while True:
    data, peer = s.recvfrom(2048); s.sendto(b"ECHO " + data, peer)' &
  sleep 1
  mix() {
    local A="ip netns exec $NS_A"
    $A curl -s -o /dev/null -A "Mozilla/5.0 (X11; Linux x86_64) e2e" http://10.79.0.2/
    $A curl -s -o /dev/null -H "X-Token: AbCdEf0123" http://10.79.0.2/admin/index.html
    $A curl -s -o /dev/null -A "sqlmap/1.7" "http://10.79.0.2/missing.php?id=1%20UNION%20SELECT"
    for m in "PING 1" "ping 2" "LOGIN user=alice" "LOGIN user=bob pass=hunter2" \
        "DATA $(printf '\xde\xad\xbe\xef')tail" "BYE"; do
      $A python3 -c 'import socket,sys; s=socket.socket(2,2); s.settimeout(1)
s.sendto(sys.argv[1].encode("utf-8", "surrogateescape"), ("10.79.0.2", 5353))
s.recv(2048)' "$m"; done
    $A ping -c 3 -i 0.2 -p deadbeef 10.79.0.2 >/dev/null
  }
  mkdir -p proto-mix; capture proto-mix/input.pcap mix
  rm -rf /tmp/nse2e-www
  # the same traffic serves the content / flowbits / threshold / bidirectional cases
  for c in content-modifiers flowbits bidirectional; do
    mkdir -p "$c"; cp proto-mix/input.pcap "$c/input.pcap"; done
  rm -rf proto-mix
fi
ls -l "$E2E"/*/input.pcap
