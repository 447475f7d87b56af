#!/usr/bin/env python3
"""Builds the Linux guest the VM-port tests and the README's VM example boot under QEMU.

  scripts/guest-image.py [DIR]      (default /var/cache/pmdswitch/guest; idempotent)

From Debian's own kernel package (downloaded, not installed: installing writes /boot and pulls
initramfs-tools) it keeps only the kernel, uncompressed to its ELF `vmlinux` (QEMU boots that
through PVH in a few seconds under TCG; the compressed bzImage spends most of its time in XZ),
and the virtio-net modules. The initramfs is busybox (package busybox-static) with an /init
that loads virtio-net, configures eth0 from the kernel command line and then runs a
non-interactive shell on the serial port, for a test to drive:

  pmdsw.ip=10.99.0.11/24   address of eth0          pmdsw.mtu=9000   its MTU
  pmdsw.queues=N           `ethtool -L` combined N (a multiqueue NIC)

Every command line the driver writes to the serial port runs in that shell; its output comes
back on the same port.
"""

import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

# busybox insmod has no dependency resolution: Debian's module order for virtio-net.
MODULES = [
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/net/virtio_net.ko",
]

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %(modules)s; do insmod /lib/modules/$m; done
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
for a in $(cat /proc/cmdline); do
    case $a in
        pmdsw.ip=*) ip=${a#pmdsw.ip=} ;;
        pmdsw.mtu=*) mtu=${a#pmdsw.mtu=} ;;
        pmdsw.queues=*) queues=${a#pmdsw.queues=} ;;
    esac
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
[ -n "$mtu" ] && ip link set eth0 mtu "$mtu"
[ -n "$queues" ] && ethtool -L eth0 combined "$queues"
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
stty -F /dev/ttyS0 raw -echo
echo PMDSW-GUEST-READY > /dev/ttyS0
# A shell that ends (a command that exits it) is started again: init never exits.
while true; do sh < /dev/ttyS0 2>&1 | cat > /dev/ttyS0; done
"""


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def kernel_package():
    out = run("apt-cache", "depends", "linux-image-amd64", capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-") and line.split()[1][12].isdigit():
            return line.split()[1]
    sys.exit("guest-image.py: no linux-image package behind linux-image-amd64 (apt-get update?)")


def vmlinux_of(bzimage):
    """The ELF kernel inside a bzImage: its XZ payload, decompressed."""
    at = bzimage.find(b"\xfd7zXZ\x00")
    while at >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[at:])
            if elf[:4] == b"\x7fELF":
                return elf
        except lzma.LZMAError:
            pass
        at = bzimage.find(b"\xfd7zXZ\x00", at + 1)
    sys.exit("guest-image.py: no XZ-compressed ELF kernel in the bzImage")


def newc(entries):
    """A cpio archive in the kernel's newc format of (name, mode, data or link target)."""
    out = io.BytesIO()
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.write(b"070701" + b"".join(b"%08x" % f for f in fields))
        out.write(name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
        ino += 1
    return out.getvalue()


def main():
    dest = sys.argv[1] if len(sys.argv) > 1 else "/var/cache/pmdswitch/guest"
    pkg = kernel_package()
    stamp = os.path.join(dest, "stamp")
    # The kernel package and this script's own content: a changed /init makes a new image.
    want = pkg + " " + hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:16]
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        print(f"guest-image.py: {dest} is ready ({pkg})")
        return
    busybox = shutil.which("busybox")
    ethtool = shutil.which("ethtool")
    static = busybox and subprocess.run(["ldd", busybox], capture_output=True).returncode != 0
    if not static:
        sys.exit("guest-image.py: a static busybox is needed (apt-get install busybox-static)")
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg, cwd=tmp, stdout=subprocess.DEVNULL)
        deb = next(f for f in os.listdir(tmp) if f.endswith(".deb"))
        tar = run("dpkg-deb", "--fsys-tarfile", os.path.join(tmp, deb), capture_output=True).stdout
        files = {}
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            for m in t.getmembers():
                name = m.name.lstrip("./")
                if name.startswith("boot/vmlinuz-") or any(name.endswith("/kernel/" + k) for k in MODULES):
                    files[name] = t.extractfile(m).read()
    bzimage = next(v for k, v in files.items() if k.startswith("boot/vmlinuz-"))
    with open(os.path.join(dest, "vmlinux.tmp"), "wb") as f:
        f.write(vmlinux_of(bzimage))
    files_out = {"bin/busybox": (0o100755, open(busybox, "rb").read())}
    applets = run(busybox, "--list", capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            files_out[f"bin/{a}"] = (0o120777, b"busybox")
    if ethtool:
        # A dynamic binary, with the libraries it needs (libc, libmnl).
        ldd = run("ldd", ethtool, capture_output=True, text=True).stdout.split()
        for lib in [w for w in ldd if w.startswith("/")]:
            files_out[lib.lstrip("/")] = (0o100755, open(lib, "rb").read())
        files_out["sbin/ethtool"] = (0o100755, open(ethtool, "rb").read())
    for k in MODULES:
        data = next(v for n, v in files.items() if n.endswith("/kernel/" + k))
        files_out["lib/modules/" + os.path.basename(k)] = (0o100644, data)
    dirs = {"dev", "proc", "sys", "tmp", "root", "sbin"}
    for path in files_out:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    entries = [(d, 0o40755, b"") for d in sorted(dirs)]
    entries += [(p, m, d) for p, (m, d) in sorted(files_out.items())]
    init = INIT % {"modules": " ".join(os.path.basename(k) for k in MODULES)}
    entries.append(("init", 0o100755, init.encode()))
    with open(os.path.join(dest, "initramfs.cpio.gz.tmp"), "wb") as f:
        f.write(gzip.compress(newc(entries), 6))
    os.replace(os.path.join(dest, "vmlinux.tmp"), os.path.join(dest, "vmlinux"))
    os.replace(os.path.join(dest, "initramfs.cpio.gz.tmp"), os.path.join(dest, "initramfs.cpio.gz"))
    with open(stamp, "w") as f:
        f.write(want + "\n")
    print(f"guest-image.py: {dest}: vmlinux and initramfs.cpio.gz from {pkg}")


if __name__ == "__main__":
    main()
