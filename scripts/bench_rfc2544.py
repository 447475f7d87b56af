#!/usr/bin/env python3
"""RFC 2544 through the switch: zero-loss throughput and latency, measured by `pmdswitch pktgen`,
for pmdswitch, Open vSwitch with DPDK and dpdk-testpmd io side by side, on two topologies:

  port to port   pktgen's two ports <-memif-> the switch's two ports (net_memif pairs stand in
                 for a NIC), 1K and 64K flows (MAC pairs) per direction;
  PVP            pktgen -> switch -> vhost-user -> a VM reflecting frames -> vhost-user ->
                 switch -> pktgen (VSPERF's and CSIT's vswitch topology). The switch keeps the
                 two legs apart by VLAN (phy0 and vm0 in VLAN 10, phy1 and vm1 in 20; testpmd
                 pairs ports 0-1 and 2-3), and the VM's two virtio ports pass frames across.

On 2 CPUs the switch's forwarding core has CPU 1 alone and pktgen is the ONE busy poller on
CPU 0: in PVP it also plays the VM (`pktgen --reflect`: the virtio-user pair polled in its own
loop). So a figure may be bound by pktgen rather than by the switch: the table says which
("generator" when pktgen's unpaced trial lost nothing at a rate within 10% of the most it sent
unpaced in that topology and size with any switch; "switch" otherwise), and gives the forwarding core's busy
share and cycles per frame at the zero-loss rate (pmdswitch's pmd/stats-show, OVS's
pmd-stats-show, testpmd's --record-core-cycles), measured in a second pktgen run at that rate.

For each topology, frame size (64, 1518 bytes) and switch: NDR (zero loss) and PDR (0.5% loss)
in Mpps, p50/p99/p99.9 one-way latency at 50% of the NDR, the core's busy % and cycles/frame;
then, in a second table, latency at the same offered load for all three (half the lowest NDR).
The search repeats a failed trial once (--retries, loss verification) and the whole run goes
--rounds times (default 2) alternating the switches; each switch's figure is its best round,
since on a shared VM a stall of either CPU only ever lowers an NDR.
Writes the results as JSON into --out. Run as root after scripts/setup.sh --bench, with the
release binary built (scripts/bench.sh does both).
"""

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# EAL (and eal()) carry --no-pci and --in-memory; every process gets its own --file-prefix.
from bench import BIN, EAL, ROOT, Ovs, eal, remove_runtime_dirs, sh, wait_path  # noqa: E402

TOPOLOGIES = [("port to port", 1024, False), ("port to port", 65536, False), ("PVP", 1024, True)]


def memif(i, tmp, role):
    return f"net_memif{i},role={role},socket={tmp}/m{i}.sock,socket-abstract=no"


def pktgen(tmp, flows, pvp, size, extra, vm_socks=None, rx_queues=1):
    """Runs pktgen (CPU 0) on the memif clients of the switch's two ports; returns its JSON."""
    out = os.path.join(tmp, "pktgen.json")
    args = [BIN, "pktgen", "--quiet", "--link-wait", "30", "--size", str(size), "--flows", str(flows),
            "--json", out, "--rx-queues", str(rx_queues), "--port", "p0=" + memif(0, tmp, "client"), "--port", "p1=" + memif(1, tmp, "client")]
    if pvp:
        for i, s in enumerate(vm_socks):
            args += ["--reflect", f"net_virtio_user{i},path={s},queues=1"]
    args += extra + ["--"] + eal("gen", "0") + ["--single-file-segments"]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pktgen failed: {r.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)


class PmdSwitch:
    name = "pmdswitch"
    rx_queues = 1

    def __init__(self, tmp, pvp, flows):
        self.tmp = tmp
        cfg = os.path.join(tmp, "sw.toml")
        with open(cfg, "w") as f:
            f.write(f"[bridge]\nfdb_capacity = {max(65536, 4 * flows)}\n")
            vlans = [10, 20]
            for i in range(2):
                f.write(f'[[ports]]\nname = "phy{i}"\ndevargs = "{memif(i, tmp, "server")}"\n')
                if pvp:
                    f.write(f'vlan_mode = "access"\nvlan = {vlans[i]}\n')
            if pvp:
                for i in range(2):
                    f.write(f'[[ports]]\nname = "vm{i}"\nvhost_user = {{ path = "{tmp}/vm{i}.sock", mode = "server" }}\n'
                            f'vlan_mode = "access"\nvlan = {vlans[i]}\n')
        self.ctl = os.path.join(tmp, "ctl.sock")
        self.p = subprocess.Popen([BIN, "run", "--config", cfg, "--ctl", self.ctl, "--stats-interval", "0", "--"]
                                  + eal("swrfc"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_path(self.ctl)
        self.vm_socks = [f"{tmp}/vm{i}.sock" for i in range(2)]

    def clear(self):
        sh(f"{BIN} ctl --socket {self.ctl} pmd/stats-clear")

    def core(self):
        st = json.loads(sh(f"{BIN} ctl --socket {self.ctl} --json pmd/stats-show").stdout)["pmds"][0]
        busy, idle, pkts = st["busy_cycles"], st["idle_cycles"], st["packets"]
        return {"busy_percent": 100.0 * busy / max(1, busy + idle),
                "cycles_per_frame": busy / pkts if pkts else None, "frames": pkts}

    def stop(self):
        if self.p is None:
            return
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Testpmd:
    """testpmd io, the ceiling of one forwarding core: ports paired 0-1 (and 2-3 in PVP)."""
    name = "testpmd io"
    rx_queues = 1

    def __init__(self, tmp, pvp, flows):
        args = ["stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@0,1@1"] + EAL
        args += ["--file-prefix", f"bench-tprfc-{os.getpid()}"]
        self.vm_socks = [f"{tmp}/vm{i}.sock" for i in range(2)]
        for i in range(2):
            args += ["--vdev", memif(i, tmp, "server")]
            if pvp:
                args += ["--vdev", f"net_vhost{i},iface={self.vm_socks[i]},queues=1"]
        args += ["--", "-i", "--forward-mode=io", "--record-core-cycles", "--no-lsc-interrupt", "--no-flush-rx"]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        self.out = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_path(f"{tmp}/m1.sock")
        if pvp:
            wait_path(self.vm_socks[1])
        self.cmd("start")
        self.t0 = time.time()

    def _read(self):
        for line in self.p.stdout:
            self.out.append(line)

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def clear(self):
        self.cmd("stop")
        time.sleep(0.3)
        # Its figures count from "start": the window begins there, and the output after the
        # stop's report belongs to it.
        self.mark = len(self.out)
        self.cmd("start")
        self.t0 = time.time()

    def core(self):
        self.cmd("stop")
        secs = time.time() - self.t0
        time.sleep(1)
        text = "".join(self.out[self.mark:])
        m = re.findall(r"CPU cycles/packet=([0-9.]+) \((?:busy|total) cycles=(\d+) / total \S+ packets=(\d+)\) at (\d+) MHz", text)
        self.cmd("start")
        if not m:
            return {"busy_percent": None, "cycles_per_frame": None, "frames": None}
        cpp, busy, pkts, mhz = m[-1]
        return {"busy_percent": 100.0 * int(busy) / (secs * int(mhz) * 1e6),
                "cycles_per_frame": float(cpp), "frames": int(pkts)}

    def stop(self):
        if self.p is None:
            return
        try:
            self.cmd("stop")
            self.cmd("quit")
            self.p.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


class OvsDpdk:
    name = "OVS-DPDK"
    # OVS transmits on a memif port's queue 1 (queue 0 is its main thread's): pktgen polls two.
    rx_queues = 2

    def __init__(self, tmp, pvp, flows, ovs):
        self.ovs = ovs
        ovs.start()
        sh("ovs-vsctl --if-exists del-br br0")
        sh("ovs-vsctl add-br br0 -- set bridge br0 datapath_type=netdev "
           f"other-config:mac-table-size={max(8192, 4 * flows)}")
        vlans = [10, 20]
        for i in range(2):
            tag = f" tag={vlans[i]}" if pvp else ""
            sh(f"ovs-vsctl add-port br0 phy{i}{tag} -- set Interface phy{i} type=dpdk "
               f"options:dpdk-devargs={memif(i, tmp, 'server')}")
        self.vm_socks = []
        if pvp:
            for i in range(2):
                sh(f"ovs-vsctl add-port br0 vhu{i} tag={vlans[i]} -- set Interface vhu{i} type=dpdkvhostuser")
                self.vm_socks.append(f"/var/run/openvswitch/vhu{i}")
            for s in self.vm_socks:
                wait_path(s)
        wait_path(f"{tmp}/m1.sock")

    def clear(self):
        sh("ovs-appctl dpif-netdev/pmd-stats-clear")

    def core(self):
        out = sh("ovs-appctl dpif-netdev/pmd-stats-show").stdout
        pkts = sum(int(x) for x in re.findall(r"packets received: (\d+)", out))
        cpp = re.findall(r"avg processing cycles per packet: ([0-9.]+)", out)
        busy = re.findall(r"processing cycles: \d+ \(([0-9.]+)%\)", out)
        return {"busy_percent": float(busy[0]) if busy else None,
                "cycles_per_frame": float(cpp[0]) if cpp else None, "frames": pkts}

    def stop(self):
        sh("ovs-vsctl --if-exists del-br br0", check=False)
        self.ovs.stop()


@contextlib.contextmanager
def running(sw_cls, tmp, pvp, flows, ovs):
    """The switch, up for the block and stopped after it. Built inside the try: a switch that
    fails half-way up is still stopped, never left spinning on CPU 1 under what comes next."""
    sw = sw_cls.__new__(sw_cls)
    sw.p = None
    try:
        if sw_cls is OvsDpdk:
            sw.__init__(tmp, pvp, flows, ovs)
        else:
            sw.__init__(tmp, pvp, flows)
        yield sw
    finally:
        sw.stop()
        remove_runtime_dirs()


def measure(sw_cls, tmp, pvp, flows, size, a, ovs):
    with running(sw_cls, tmp, pvp, flows, ovs) as sw:
        res = pktgen(tmp, flows, pvp, size,
                     ["--rfc2544", "--trial-secs", str(a.trial_secs), "--resolution", str(a.resolution),
                      "--latency-loads", "50", "--learn-rate", "500k", "--trial-retries", str(a.retries)], sw.vm_socks, sw.rx_queues)
        r = res["rfc2544"][0]
        ndr = r["ndr"]["pps"]
        core = {"busy_percent": None, "cycles_per_frame": None, "frames": None}
        if ndr > 0:
            # The core at the zero-loss rate: a second run at that rate, its middle measured.
            secs = a.core_secs + 3
            box = {}
            t = threading.Thread(target=lambda: box.setdefault("r", pktgen(
                tmp, flows, pvp, size, ["--rate", str(int(ndr)), "--duration", str(secs)], sw.vm_socks,
                sw.rx_queues)))
            t.start()
            try:
                time.sleep(3.0)  # pktgen's EAL, links and learning frames
                sw.clear()
                time.sleep(a.core_secs - 1)
                core = sw.core()
            finally:
                t.join()
            core["lost_at_ndr_rerun"] = box.get("r", {}).get("runs", [{}])[0].get("trial", {}).get("lost")
        lat = r["latency"][0]["trial"]["latency"] if r["latency"] else {}
        return {"ndr_mpps": ndr / 1e6, "pdr_mpps": r["pdr"]["pps"] / 1e6,
                "generator_bound": r["ndr"]["generator_bound"], "generator_mpps": r["generator_pps"] / 1e6,
                "unpaced_lost": r["search_trials"][0]["lost"],
                "unpaced_pushback": r["search_trials"][0]["pushback_ratio"],
                "p50_us": lat.get("p50_ns", 0) / 1e3, "p99_us": lat.get("p99_ns", 0) / 1e3,
                "p99_9_us": lat.get("p99_9_ns", 0) / 1e3, "trials": len(r["search_trials"]), **core}


def latency_at(sw_cls, tmp, pvp, flows, size, pps, a, ovs):
    """p50/p99/p99.9 (us) of a fixed-rate run at `pps` through the switch: the same offered load
    for every switch of a setup."""
    with running(sw_cls, tmp, pvp, flows, ovs) as sw:
        t = pktgen(tmp, flows, pvp, size, ["--rate", str(int(pps)), "--duration", str(a.trial_secs * 3)],
                   sw.vm_socks, sw.rx_queues)["runs"][0]["trial"]
        lat = t["latency"]
        return {"same_load_mpps": pps / 1e6, "same_load_lost": t["lost"], "same_p50_us": lat["p50_ns"] / 1e3,
                "same_p99_us": lat["p99_ns"] / 1e3, "same_p99_9_us": lat["p99_9_ns"] / 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,1518", help="frame sizes, bytes")
    ap.add_argument("--trial-secs", type=float, default=1.0, help="seconds per search trial")
    ap.add_argument("--resolution", type=float, default=2.0, help="search resolution, percent")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds over the switches; each switch's best NDR is its figure")
    ap.add_argument("--retries", type=int, default=1,
                    help="a failed search trial is run again this many times (loss verification)")
    ap.add_argument("--core-secs", type=float, default=4.0, help="seconds of the core measurement at the NDR")
    ap.add_argument("--topologies", default="all", help="all, p2p or pvp")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"), help="where rfc2544.json goes")
    ap.add_argument("--table-from", metavar="JSON", help="print the table of an earlier run's rfc2544.json")
    a = ap.parse_args()
    if a.table_from:
        with open(a.table_from) as fh:
            saved = json.load(fh)
        rows = saved["best"] if isinstance(saved, dict) else saved
        for k, v in (saved.get("settings", {}) if isinstance(saved, dict) else {}).items():
            setattr(a, k, v)
        print_table(rows, a)
        return
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not built: cargo build --release -p pmdswitch")
    os.makedirs(a.out, exist_ok=True)
    ovs = Ovs()
    switches = [PmdSwitch, OvsDpdk, Testpmd] if ovs.ok else [PmdSwitch, Testpmd]
    if not ovs.ok:
        print("  (OVS-DPDK not installed: scripts/setup.sh --bench installs it)", file=sys.stderr)
    topos = [t for t in TOPOLOGIES if a.topologies == "all" or (t[2] == (a.topologies == "pvp"))]
    runs = []
    for rnd in range(a.rounds):
        for topo, flows, pvp in topos:
            for size in [int(s) for s in a.sizes.split(",")]:
                for cls in switches:
                    with tempfile.TemporaryDirectory() as tmp:
                        try:
                            m = measure(cls, tmp, pvp, flows, size, a, ovs)
                        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                            print(f"  {topo} {flows} {size} {cls.name}: failed: {e}", file=sys.stderr)
                            m = None
                    runs.append({"round": rnd + 1, "topology": topo, "flows": flows, "size": size,
                                 "switch": cls.name, **(m or {})})
                    if m:
                        print(f"  round {rnd + 1}: {topo} {flows} flows {size} B {cls.name}: NDR "
                              f"{m['ndr_mpps']:.3f} Mpps{' (generator)' if m['generator_bound'] else ''}, "
                              f"p99 {m['p99_us']:.1f} us", file=sys.stderr)
    # Each switch's figure is its best round (a stall of this shared machine only ever lowers
    # an NDR); every round is in the JSON.
    rows = []
    for r in runs:
        key = (r["topology"], r["flows"], r["size"], r["switch"])
        same = [x for x in runs if (x["topology"], x["flows"], x["size"], x["switch"]) == key]
        if r is max(same, key=lambda x: x.get("ndr_mpps", -1.0)):
            rows.append({**r, "rounds": [x.get("ndr_mpps") for x in same]})
    # Latency at the same offered load for every switch of a setup: half the lowest NDR of them.
    for topo, flows, pvp in topos:
        for size in [int(s) for s in a.sizes.split(",")]:
            setup = [r for r in rows if (r["topology"], r["flows"], r["size"]) == (topo, flows, size)]
            ndrs = [r["ndr_mpps"] for r in setup if r.get("ndr_mpps")]
            if not ndrs:
                continue
            pps = min(ndrs) * 1e6 / 2
            for r in setup:
                cls = next(c for c in switches if c.name == r["switch"])
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        r.update(latency_at(cls, tmp, pvp, flows, size, pps, a, ovs))
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        print(f"  {topo} {flows} {size} {cls.name}: same-load run failed: {e}", file=sys.stderr)
    with open(os.path.join(a.out, "rfc2544.json"), "w") as f:
        json.dump({"settings": vars(a), "best": rows, "runs": runs}, f, indent=2)
    print_table(rows, a)


def print_table(rows, a):
    order = {t: i for i, t in enumerate(["port to port", "PVP"])}
    sw_order = {"pmdswitch": 0, "OVS-DPDK": 1, "testpmd io": 2}
    rows = sorted(rows, key=lambda r: (order.get(r["topology"], 9), r["flows"], r["size"],
                                       sw_order.get(r["switch"], 9)))

    # What pktgen showed it can send, unpaced, in each topology and size (with any switch).
    gen_max = {}
    for r in rows:
        k = (r["topology"], r["size"])
        gen_max[k] = max(gen_max.get(k, 0.0), r.get("generator_mpps") or 0.0)

    def bound(r):
        # An unpaced trial that lost nothing ran at the slower of pktgen and the switch (a
        # virtual port refuses what its peer does not take). It was pktgen when that rate is
        # near the most pktgen sent unpaced here with any switch; otherwise the switch held it.
        unpaced_ok = r["unpaced_lost"] == 0 if "unpaced_lost" in r else \
            abs(r["ndr_mpps"] - r["generator_mpps"]) < 1e-9
        near_max = r["generator_mpps"] >= 0.9 * gen_max[(r["topology"], r["size"])]
        return "generator" if unpaced_ok and near_max else "switch"

    def f(v, spec):
        return "-" if v is None else format(v, spec)
    print(f"\nRFC 2544 through the switch (pmdswitch pktgen; trials {a.trial_secs:g} s, resolution {a.resolution:g}%,"
          f" {a.retries} retry; best of {a.rounds} alternating rounds; latency at 50% of NDR;"
          " core = the forwarding core at the NDR)")
    head = (f"{'topology':<13} {'flows':>6} {'size':>5} {'switch':<11} {'NDR Mpps':>9} {'bound':<9} {'gen Mpps':>8} "
            f"{'PDR Mpps':>9} {'p50 us':>7} {'p99 us':>8} {'p99.9 us':>9} {'busy%':>6} {'cyc/frame':>9} {'vs OVS':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "ndr_mpps" not in r:
            print(f"{r['topology']:<13} {r['flows']:>6} {r['size']:>5} {r['switch']:<11} (failed)")
            continue
        ovs_row = next((o for o in rows if o["switch"] == "OVS-DPDK" and o["topology"] == r["topology"]
                        and o["flows"] == r["flows"] and o["size"] == r["size"]), None)
        ratio = (r["ndr_mpps"] / ovs_row["ndr_mpps"]) if (ovs_row and ovs_row.get("ndr_mpps")) else None
        print(f"{r['topology']:<13} {r['flows']:>6} {r['size']:>5} {r['switch']:<11} {r['ndr_mpps']:>9.3f} "
              f"{bound(r):<9} {r['generator_mpps']:>8.2f} {r['pdr_mpps']:>9.3f} {r['p50_us']:>7.1f} "
              f"{r['p99_us']:>8.1f} {r['p99_9_us']:>9.1f} {f(r.get('busy_percent'), '.0f'):>6} "
              f"{f(r.get('cycles_per_frame'), '.0f'):>9} {f(ratio, '.2f'):>7}")
    if not any("same_p99_us" in r for r in rows):
        return
    print("\nLatency at the same offered load for every switch of a setup (half the lowest NDR among them)")
    head = (f"{'topology':<13} {'flows':>6} {'size':>5} {'switch':<11} {'load Mpps':>9} {'lost':>8} "
            f"{'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "same_p99_us" not in r:
            continue
        print(f"{r['topology']:<13} {r['flows']:>6} {r['size']:>5} {r['switch']:<11} {r['same_load_mpps']:>9.3f} "
              f"{r['same_load_lost']:>8} {r['same_p50_us']:>8.1f} {r['same_p99_us']:>8.1f} {r['same_p99_9_us']:>9.1f}")

if __name__ == "__main__":
    main()
