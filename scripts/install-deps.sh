#!/usr/bin/env bash
# Installs what the test suite needs, when it is missing: Debian packages (tshark, wireguard-tools,
# iperf3, nftables, iproute2, ping), PyPI packages (scapy, cryptography, prometheus-client) and cargo tools (cargo-fuzz,
# the nightly toolchain it builds with is expected to be installed by rustup already).
set -euo pipefail

need_apt=()
command -v tshark >/dev/null || need_apt+=(tshark)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v ping >/dev/null || need_apt+=(iputils-ping)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import scapy.layers.ipsec, cryptography, prometheus_client' 2>/dev/null; then
  echo "installing PyPI packages: scapy cryptography prometheus-client"
  python3 -m pip install -q scapy cryptography prometheus-client
fi

if [ "${GATEKIT_SKIP_FUZZ_TOOLS:-}" != 1 ] && ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
