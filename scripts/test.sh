#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs every test of
# the workspace. Tests that need root (network namespaces, TUN, veth) run for real as root; with
# CI set they fail rather than skip when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
GATEKIT_SKIP_FUZZ_TOOLS=1 scripts/install-deps.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
