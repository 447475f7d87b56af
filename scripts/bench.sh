#!/usr/bin/env bash
# Benchmarks pmdswitch beside dpdk-testpmd io on the same virtual devices (see bench.py).
# Run as root. Arguments go to bench.py (--runs, --secs, --only pcap|tcp, --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh --bench >/dev/null
cargo build --release -p pmdswitch
exec /usr/bin/python3 scripts/bench.py "$@"
