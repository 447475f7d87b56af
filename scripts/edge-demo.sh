#!/usr/bin/env bash
# The managed edge, shown on this machine (root; no NIC: --no-pci):
#   scripts/edge-demo.sh vlan   four namespaced VMs on net_tap access ports, two in VLAN 10 and
#                               two in VLAN 20: pings within a VLAN pass, across VLANs they fail.
#   scripts/edge-demo.sh vepa   two VMs behind a VEPA whose uplink tap is a port of a Linux
#                               bridge (the adjacent switch) with hairpin on: the VMs reach each
#                               other only through that bridge; hairpin off, they cannot; after a
#                               reload into VEB mode they can, and their unicast stays local.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
mode=${1:-vlan}
case "$mode" in vlan|vepa) ;; *) echo "usage: $0 vlan|vepa" >&2; exit 2 ;; esac

bash scripts/setup.sh
cargo build --release -p pmdswitch
bin=target/release/pmdswitch

work=$(mktemp -d /tmp/pmdswitch-edge.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    for i in 1 2 3 4; do ip netns del "pmdedge$i" 2>/dev/null || true; done
    ip link del pmdadj0 2>/dev/null || true
    rm -rf "$work" "/var/run/dpdk/pmdedge$$"
}
trap cleanup EXIT

start_switch() {
    "$bin" run --config "$work/edge.toml" --stats-json "$work/stats.json" --stats-interval 0 \
        -- -l 0,1 --no-pci --in-memory --file-prefix "pmdedge$$" --log-level pmd.net.tap:error \
        > "$work/switch.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "forwarding on" "$work/switch.log" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$work/switch.log"; echo "switch did not start"; exit 1
}

vm() { # vm N ADDR: namespace pmdedgeN gets tap pmdedgeN with ADDR
    ip netns del "pmdedge$1" 2>/dev/null || true
    ip netns add "pmdedge$1"
    ip link set "pmdedge$1" netns "pmdedge$1"
    ip -n "pmdedge$1" addr add "$2/24" dev "pmdedge$1"
    ip -n "pmdedge$1" link set "pmdedge$1" up
    ip -n "pmdedge$1" link set lo up
}

ping_expect() { # ping_expect FROM_NS TO_ADDR pass|fail
    if ip netns exec "pmdedge$1" ping -c 2 -i 0.2 -W 1 -q "$2" > /dev/null 2>&1; then got=pass; else got=fail; fi
    printf '  pmdedge%s -> %-12s %s (expected %s)\n' "$1" "$2" "$got" "$3"
    [ "$got" = "$3" ] || failed=1
}

stats() {
    kill -TERM "$pid"; wait "$pid" || true; pid=""
    python3 - "$work/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for p in s["ports"]:
    print(f'  {p["name"]:>6}: rx {p["rx_packets"]:>5}  tx {p["tx_packets"]:>5}  rx_dropped {p["rx_dropped"]}')
print("  drops: " + (", ".join(f"{k} {v}" for k, v in s["drops"].items() if v) or "none"))
PY
}

failed=0
if [ "$mode" = vlan ]; then
    cat > "$work/edge.toml" <<TOML
[[ports]]
name = "vm1"
devargs = "net_tap0,iface=pmdedge1"
vlan = 10
[[ports]]
name = "vm2"
devargs = "net_tap1,iface=pmdedge2"
vlan = 10
[[ports]]
name = "vm3"
devargs = "net_tap2,iface=pmdedge3"
vlan = 20
[[ports]]
name = "vm4"
devargs = "net_tap3,iface=pmdedge4"
vlan = 20
TOML
    echo "== VLANs: vm1, vm2 in VLAN 10; vm3, vm4 in VLAN 20 ($work/edge.toml)"
    start_switch
    vm 1 10.99.0.11; vm 2 10.99.0.12; vm 3 10.99.0.21; vm 4 10.99.0.22
    ping_expect 1 10.99.0.12 pass
    ping_expect 3 10.99.0.22 pass
    ping_expect 1 10.99.0.21 fail
    ping_expect 2 10.99.0.22 fail
    stats
else
    cat > "$work/edge.toml" <<TOML
[bridge]
mode = "vepa"
[[ports]]
name = "uplink"
devargs = "net_tap0,iface=pmdup0"
role = "uplink"
[[ports]]
name = "vm1"
devargs = "net_tap1,iface=pmdedge1"
[[ports]]
name = "vm2"
devargs = "net_tap2,iface=pmdedge2"
TOML
    echo "== VEPA: vm1 and vm2 reach each other only through the adjacent bridge pmdadj0 ($work/edge.toml)"
    start_switch
    ip link add pmdadj0 type bridge
    ip link set pmdup0 master pmdadj0
    ip link set pmdup0 up
    ip link set pmdadj0 up
    bridge link set dev pmdup0 hairpin on
    vm 1 10.99.0.1; vm 2 10.99.0.2
    count() { ip -s link show pmdup0 | awk 'f{print $2; exit} /RX:/{f=1}'; }
    before=$(count)
    echo "-- hairpin on: the bridge reflects their frames back"
    ping_expect 1 10.99.0.2 pass
    echo "  frames the adjacent bridge received from the uplink: $(( $(count) - before ))"
    echo "-- hairpin off: nothing comes back, so the VMs cannot reach each other"
    bridge link set dev pmdup0 hairpin off
    ip -n pmdedge1 neigh flush all; ip -n pmdedge2 neigh flush all
    ping_expect 1 10.99.0.2 fail
    echo "-- reload into VEB mode (SIGHUP): local switching, unicast never crosses the uplink"
    sed -i 's/mode = "vepa"/mode = "veb"/' "$work/edge.toml"
    kill -HUP "$pid"; sleep 0.5
    ip -n pmdedge1 neigh flush all; ip -n pmdedge2 neigh flush all
    ip netns exec pmdedge1 ping -c 1 -W 1 -q 10.99.0.2 > /dev/null 2>&1 || true
    before=$(count)
    ping_expect 1 10.99.0.2 pass
    echo "  frames the adjacent bridge received while they pinged (ARP cached; only flooded multicast may still go there): $(( $(count) - before ))"
    stats
fi
[ "$failed" = 0 ] && echo "== edge demo ($mode) OK" || { echo "== edge demo ($mode) FAILED"; exit 1; }
