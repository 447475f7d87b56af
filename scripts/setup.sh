#!/usr/bin/env bash
# Installs what pmdswitch needs on Debian 12 and sets up hugepages. Idempotent; run as root.
#   scripts/setup.sh          build and test dependencies, hugepages
#   scripts/setup.sh --bench  also the benchmark peers (Open vSwitch with DPDK)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages and reserves hugepages)" >&2
    exit 1
fi

pkgs=(
    libdpdk-dev dpdk dpdk-dev   # DPDK 22.11 headers and libraries, its PMDs, dpdk-testpmd
    clang libclang-dev pkg-config build-essential   # bindgen and the C shim
    iproute2 iputils-ping iperf3 procps   # network namespaces, ping, TCP tests
    tcpdump tshark                        # independent decoders for tests
    openvswitch-common prometheus         # ovs-appctl, promtool and a Prometheus server for tests
    python3
)
if [ "${1:-}" = "--bench" ]; then
    pkgs+=(openvswitch-switch-dpdk python3-matplotlib)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture: answer no, without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "setup.sh: cargo is in $HOME/.cargo/bin; add it to PATH"
    else
        echo "setup.sh: installing a Rust toolchain from Debian (rustup is preferred where available)"
        apt-get install -y -qq cargo rustc >/dev/null
    fi
fi

# 2 MiB hugepages: 1024 of them (2 GiB), mounted where DPDK looks.
want=1024
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
    echo "$want" > /proc/sys/vm/nr_hugepages
    have=$(cat /proc/sys/vm/nr_hugepages)
fi
if [ "$have" -lt 256 ]; then
    echo "setup.sh: only $have hugepages could be reserved; DPDK needs at least 256 (512 MiB)" >&2
    exit 1
fi
if ! grep -q " /dev/hugepages hugetlbfs " /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
fi
echo "setup.sh: ready ($have hugepages of 2 MiB, DPDK $(pkg-config --modversion libdpdk))"
