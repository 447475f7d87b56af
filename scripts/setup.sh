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
    pmacct                                # sfacctd: a real sFlow collector in the tests
    openvswitch-common prometheus         # ovs-appctl, promtool and a Prometheus server for tests
    python3
    busybox-static ethtool                # the VM-port tests' guest (scripts/guest-image.py)
    fonts-dejavu-core                     # the font of pmdswitch pktgen's PNG charts
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

# QEMU for the VM-port tests' guests, from the suite of the qemu-utils already installed: this
# image carries qemu-utils from bookworm-backports, and bookworm's own qemu-system-x86 would
# make apt remove it (--no-remove refuses that). QEMU 10 also needs no workaround for
# vhost-user under TCG, where 7.2 crashes with MSI-X vectors.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    suite=()
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            mirror=$(grep -hs "^URIs:.*debian$" /etc/apt/sources.list.d/*.sources | head -n1 | awk '{print $2}')
            printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "${mirror:-http://deb.debian.org/debian}" > /etc/apt/sources.list.d/bookworm-backports.sources
            apt-get update -qq
        fi
        suite=(-t bookworm-backports)
    fi
    echo "setup.sh: installing qemu-system-x86 ${suite[*]}"
    apt-get install -y -qq --no-install-recommends --no-remove "${suite[@]}" qemu-system-x86 >/dev/null
fi
# The guest: a Debian kernel and a busybox initramfs, built once into a cache.
python3 "$(dirname "$0")/guest-image.py" "${PMDSWITCH_GUEST_DIR:-/var/cache/pmdswitch/guest}"

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
