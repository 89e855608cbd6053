#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs every test of
# the workspace. Tests that need root (network namespaces, TUN, veth) run for real as root; with
# CI set they fail rather than skip when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
GATEKIT_SKIP_FUZZ_TOOLS=1 scripts/install-deps.sh
# The workspace builds for x86-64-v3 (.cargo/config.toml); a CPU without every v3 feature
# runs the tests built for x86-64-v2 instead of stopping on an illegal instruction.
for f in avx2 bmi1 bmi2 fma movbe f16c abm; do
  if ! grep -qw "$f" /proc/cpuinfo 2>/dev/null; then
    echo "test.sh: the CPU lacks $f: building for x86-64-v2" >&2
    export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=x86-64-v2}"
    break
  fi
done
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
