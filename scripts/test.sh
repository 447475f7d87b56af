#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, unit tests and the end-to-end tests
# (which start the real switch on DPDK virtual devices; root and hugepages needed, see
# scripts/setup.sh). Tests that start DPDK run one at a time: --test-threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

# Packages and hugepages first (idempotent, quick when already done).
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/setup.sh
else
    echo "test.sh: not root: skipping scripts/setup.sh; the end-to-end tests need root and hugepages" >&2
fi

if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --release --workspace --all-targets -- -D warnings
fi
cargo build --release -p pmdswitch
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace -- --test-threads=1 2>&1 | tee "$log" || status=$?
# One closing line for the whole run: the sum of every test binary's result.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
