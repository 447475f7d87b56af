#!/usr/bin/env bash
# Benchmarks pmdswitch beside dpdk-testpmd io and OVS-DPDK on the same virtual devices.
#   scripts/bench.sh [ARGS]          bench.py (forwarding rates on net_pcap, VM leg, TCP) with ARGS
#                                    (--runs, --secs, --only pcap|vm|tcp|churn, ...), then, without
#                                    --only, the RFC 2544 run below with its defaults
#   scripts/bench.sh rfc2544 [ARGS]  bench_rfc2544.py alone: zero-loss throughput and latency by
#                                    `pmdswitch pktgen`, port to port and PVP (--sizes, --trial-secs,
#                                    --resolution, --topologies all|p2p|pvp)
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh --bench >/dev/null
cargo build --release -p pmdswitch
if [ "${1:-}" = "rfc2544" ]; then
    shift
    exec /usr/bin/python3 scripts/bench_rfc2544.py "$@"
fi
/usr/bin/python3 scripts/bench.py "$@"
case " $* " in
    *" --only "* | *" --only="*) ;;
    *) exec /usr/bin/python3 scripts/bench_rfc2544.py ;;
esac
