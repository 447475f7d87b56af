#!/usr/bin/env bash
# Two Linux guests under QEMU (TCG: no KVM needed) on two VM ports of pmdswitch,
# one per socket mode, as README's "VM ports" section configures them: they ping each other,
# and the switch shows them in port/show and fdb/show. Root; no NIC is touched (--no-pci).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
cargo build --release -q -p pmdswitch

G=${PMDSWITCH_GUEST_DIR:-/var/cache/pmdswitch/guest}
run=/run/pmdswitch
mkdir -p "$run"
work=$(mktemp -d /tmp/pmdswitch-vm-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    rm -f "$run/vm1.sock" "$run/vm2.sock"
}
trap cleanup EXIT

cat > "$work/switch.toml" <<EOF
[[ports]]
name = "vm1"
vhost_user = { path = "$run/vm1.sock", mode = "server", socket_mode = 0o660 }
[[ports]]
name = "vm2"
vhost_user = { path = "$run/vm2.sock", mode = "client", queues = 2 }
EOF

# A guest as README runs it, its serial console on a socket for this script to type into.
guest() { # NAME IP MAC CHARDEV NETDEV DEVICE-EXTRA APPEND-EXTRA
    taskset -c 0 qemu-system-x86_64 -accel tcg -m 256 -display none -nodefaults -no-user-config \
        -kernel "$G/vmlinux" -initrd "$G/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet pmdsw.ip=$2 $7" \
        -chardev "socket,id=ser0,path=$work/$1.serial,server=on,wait=off,logfile=$work/$1.log" \
        -serial chardev:ser0 \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -chardev "$4" -netdev "$5" \
        -device "virtio-net-pci,netdev=net0,mac=$3,$6romfile=" >"$work/$1.qemu" 2>&1 &
    pids+=($!)
}
# Types a command into a guest's shell and prints what it answered.
in_guest() { # NAME COMMAND
    python3 - "$work/$1.serial" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\necho DEMO-rc=$?\n").encode())
out = b""
while b"DEMO-rc=" not in out or not out.endswith(b"\n"):
    d = s.recv(4096)
    if not d:
        break
    out += d
text = out.decode(errors="replace")
print(text.split("DEMO-rc=")[0], end="")
sys.exit(int(text.split("DEMO-rc=")[1].split()[0]))
EOF
}
wait_for() { # FILE TEXT
    for _ in $(seq 600); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
    echo "vm-demo: no \"$2\" in $1" >&2; cat "$1" >&2; return 1
}

echo "== vm2's QEMU serves its socket (the switch's client mode): it starts first"
guest vm2 10.99.0.12/24 52:54:00:00:00:02 \
    "socket,id=vhu,path=$run/vm2.sock,server=on,wait=off" \
    "vhost-user,id=net0,chardev=vhu,queues=2" "mq=on,vectors=6," "pmdsw.queues=2"
for _ in $(seq 100); do [ -S "$run/vm2.sock" ] && break; sleep 0.1; done

echo "== the switch"
target/release/pmdswitch run --config "$work/switch.toml" --ctl "$work/ctl" --stats-interval 0 \
    -- -l 0,1 --no-pci --in-memory --file-prefix pmdsw-vm-demo >"$work/switch.log" 2>&1 &
pids+=($!)
wait_for "$work/switch.log" "forwarding on"

echo "== vm1's QEMU connects to the switch's socket (the switch's server mode)"
guest vm1 10.99.0.11/24 52:54:00:00:00:01 \
    "socket,id=vhu,path=$run/vm1.sock,reconnect-ms=1000" \
    "vhost-user,id=net0,chardev=vhu" "" ""
wait_for "$work/vm1.log" PMDSW-GUEST-READY
wait_for "$work/vm2.log" PMDSW-GUEST-READY
grep "guest connected" "$work/switch.log" | sed 's/^.*INFO  [a-z:]*\] /  /'

echo "== vm1 pings vm2, vm2 pings vm1"
in_guest vm1 "ping -c 3 -W 2 10.99.0.12"
in_guest vm2 "ping -c 3 -W 2 10.99.0.11"

echo "== ovs-appctl -t $work/ctl port/show vm2"
ovs-appctl -t "$work/ctl" port/show vm2
echo "== ovs-appctl -t $work/ctl fdb/show"
ovs-appctl -t "$work/ctl" fdb/show
