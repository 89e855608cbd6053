#!/usr/bin/env bash
# Two sites in network namespaces, joined by gatekit gateways over native ESP:
#
#   gk-ha 10.1.0.10 ── gk-gwa (gatekit, lan0 TUN) ══ 192.0.2.0/24 ══ gk-gwb (gatekit) ── gk-hb 10.2.0.10
#
#   scripts/netns-site-to-site.sh up      build, create the namespaces, start both gateways
#   scripts/netns-site-to-site.sh bench   iperf3, one TCP stream: through the ESP tunnel, and
#                                         over a bare veth pair in the same run (the baseline)
#   scripts/netns-site-to-site.sh down    stop the gateways, delete the namespaces
#
# ENCAP=udp puts the tunnel in UDP (NAT-T, RFC 3948, port 4500) instead of native ESP, which
# lets the gateways send and receive whole bursts as UDP GSO/GRO super-packets.
#
# CC=cubic|bbr|reno picks the TCP congestion control of both iperf3 runs (default: the hosts'
# own); the bench prints it with each run's mean RTT and retransmissions.
#
# Needs root, iproute2 and iperf3. Traffic stays inside the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GATEKIT_BIN:-target/release/gatekit-gateway}
RUN=/tmp/gatekit-netns
NS="gk-ha gk-hb gk-gwa gk-gwb gk-ba gk-bb"

up() {
  [ -x "$BIN" ] || cargo build --release -p gatekit-gateway --bin gatekit-gateway
  down 2>/dev/null || true
  mkdir -p $RUN
  for n in $NS; do ip netns add $n; ip -n $n link set lo up; done
  ip link add h0 netns gk-ha type veth peer name g0 netns gk-gwa
  ip link add h0 netns gk-hb type veth peer name g0 netns gk-gwb
  ip -n gk-ha addr add 10.1.0.10/24 dev h0; ip -n gk-ha link set h0 up mtu 1400
  ip -n gk-hb addr add 10.2.0.10/24 dev h0; ip -n gk-hb link set h0 up mtu 1400
  ip -n gk-ha route add default via 10.1.0.1; ip -n gk-hb route add default via 10.2.0.1
  ip -n gk-gwa addr add 10.1.0.1/24 dev g0; ip -n gk-gwa link set g0 up mtu 1400
  ip -n gk-gwb addr add 10.2.0.1/24 dev g0; ip -n gk-gwb link set g0 up mtu 1400
  ip link add u0 netns gk-gwa type veth peer name u0 netns gk-gwb
  ip -n gk-gwa addr add 192.0.2.1/24 dev u0; ip -n gk-gwa link set u0 up
  ip -n gk-gwb addr add 192.0.2.2/24 dev u0; ip -n gk-gwb link set u0 up
  for n in gk-gwa gk-gwb; do ip netns exec $n sysctl -qw net.ipv4.ip_forward=1; done
  local encap=${ENCAP:-native}
  for s in a b; do
    sed "s/^encap = \"native\"/encap = \"$encap\"/" examples/configs/site-$s.toml > $RUN/site-$s.toml
  done
  ip netns exec gk-gwa "$BIN" -c $RUN/site-a.toml > $RUN/gwa.log 2>&1 & echo $! > $RUN/gwa.pid
  ip netns exec gk-gwb "$BIN" -c $RUN/site-b.toml > $RUN/gwb.log 2>&1 & echo $! > $RUN/gwb.pid
  for n in gk-gwa gk-gwb; do
    for _ in $(seq 100); do ip -n $n link show dev lan0 up 2>/dev/null | grep -q lan0 && break; sleep 0.05; done
  done
  ip -n gk-gwa route add 10.2.0.0/24 dev lan0
  ip -n gk-gwb route add 10.1.0.0/24 dev lan0
  # The baseline: a bare veth pair with the same MTU.
  ip link add b0 netns gk-ba type veth peer name b0 netns gk-bb
  ip -n gk-ba addr add 10.9.0.1/24 dev b0; ip -n gk-ba link set b0 up mtu 1400
  ip -n gk-bb addr add 10.9.0.2/24 dev b0; ip -n gk-bb link set b0 up mtu 1400
  ip netns exec gk-ha ping -c 3 -i 0.2 10.2.0.10
  echo "up: try 'ip netns exec gk-ha ping 10.2.0.10', logs in $RUN"
}

# CPU seconds a process has used (user + system), to 10 ms: /proc/PID/stat, fields 14 and 15.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Busy and total jiffies of the whole machine (every CPU): the first line of /proc/stat.
machine_cpu() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

bench() {
  local secs=${BENCH_SECONDS:-10}
  # Both runs use one congestion control: CC, or the hosts' default (which the kernel's
  # net.ipv4.tcp_congestion_control gives each new namespace).
  local cc=${CC:-$(ip netns exec gk-ha sysctl -n net.ipv4.tcp_congestion_control)}
  # Received rate, bytes and seconds, then the sender's mean RTT (us) and retransmissions.
  local summary='import json,sys
e = json.load(sys.stdin)["end"]
r, s = e["sum_received"], e["streams"][0]["sender"]
print(r["bits_per_second"], r["bytes"], r["seconds"], s.get("mean_rtt", 0), e["sum_sent"].get("retransmits", 0))'
  ip netns exec gk-hb iperf3 -s -D -1 -p 5201
  ip netns exec gk-bb iperf3 -s -D -1 -p 5202
  sleep 0.5
  local a0 b0 m0; a0=$(cpu_of "$(cat $RUN/gwa.pid)"); b0=$(cpu_of "$(cat $RUN/gwb.pid)"); m0=$(machine_cpu)
  local tun base
  tun=$(ip netns exec gk-ha iperf3 -c 10.2.0.10 -p 5201 -t "$secs" -C "$cc" -J | python3 -c "$summary")
  local a1 b1 m1; a1=$(cpu_of "$(cat $RUN/gwa.pid)"); b1=$(cpu_of "$(cat $RUN/gwb.pid)"); m1=$(machine_cpu)
  base=$(ip netns exec gk-ba iperf3 -c 10.9.0.2 -p 5202 -t "$secs" -C "$cc" -J | python3 -c "$summary")
  python3 - "$tun" "$base" "$a0" "$a1" "$b0" "$b1" "$m0" "$m1" "$(nproc)" "$(grep -h '^encap' $RUN/site-a.toml | cut -d'"' -f2)" "$cc" <<'PY'
import sys
bps, nbytes, secs, rtt, retr = map(float, sys.argv[1].split())
base, _, _, base_rtt, base_retr = map(float, sys.argv[2].split())
ca = float(sys.argv[4]) - float(sys.argv[3])
cb = float(sys.argv[6]) - float(sys.argv[5])
(busy0, all0), (busy1, all1) = (map(float, sys.argv[k].split()) for k in (7, 8))
cores = int(sys.argv[9])
gb = nbytes / 1e9
print(f"gatekit ESP tunnel ({sys.argv[10]}), 1 TCP stream: {bps/1e9:.2f} Gbit/s ({gb:.2f} GB in {secs:.1f} s)")
print(f"bare veth baseline, 1 TCP stream: {base/1e9:.2f} Gbit/s")
print(f"TCP congestion control {sys.argv[11]}: sender's mean RTT {rtt/1000:.2f} ms through the tunnel,"
      f" {base_rtt/1000:.2f} ms bare; retransmitted segments {retr:.0f} and {base_retr:.0f}")
print(f"ratio: {bps/base:.3f} of the bare path")
print(f"gateway CPU during the tunnel run: gw-a {100*ca/secs:.0f}%, gw-b {100*cb/secs:.0f}% of one core;"
      f" {ca/gb:.2f} and {cb/gb:.2f} CPU-seconds per GB moved")
busy = (busy1 - busy0) / (all1 - all0) if all1 > all0 else 0.0
print(f"whole machine during the tunnel run: {100*busy:.0f}% of {cores} CPUs busy"
      f" (everything running, not only the tunnel)")
PY
}

down() {
  for g in gwa gwb; do
    [ -f $RUN/$g.pid ] && kill -TERM "$(cat $RUN/$g.pid)" 2>/dev/null || true
  done
  sleep 0.3
  for n in $NS; do ip netns del $n 2>/dev/null || true; done
  rm -f $RUN/*.pid
}

case "${1:-}" in
  up) up ;;
  bench) bench ;;
  down) down ;;
  *) echo "usage: $0 up|bench|down" >&2; exit 2 ;;
esac
