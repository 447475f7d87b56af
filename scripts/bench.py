#!/usr/bin/env python3
"""pmdswitch beside its peers, on this machine's DPDK virtual devices (no NIC, --no-pci).

Two measurements, each run for pmdswitch and for dpdk-testpmd --forward-mode=io (the ceiling
of one forwarding core) on identical devices:

  pcap   single-core Mpps, 64-byte frames, two net_pcap infinite_rx=1 ports, 1,024 MAC pairs
         (2,048 MACs) whose frames cross between the ports: steady state, all unicast.
  tcp    iperf3 TCP throughput between two network namespaces on two net_tap ports.

Each figure is the median of --runs alternating runs. Prints one table; --json writes it too.
Run as root after scripts/setup.sh, with the release binary built (scripts/bench.sh does both).
"""

import argparse
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PMDSWITCH_BIN", os.path.join(ROOT, "target", "release", "pmdswitch"))
EAL = ["-l", "0,1", "--no-pci", "--in-memory", "--log-level", "pmd.net.tap:error"]


def eal(prefix):
    return EAL + ["--file-prefix", f"bench-{prefix}-{os.getpid()}"]


def mac(side, i):
    return bytes([0x02, side, 0, 0, (i >> 8) & 0xFF, i & 0xFF])


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)))
            f.write(fr)


def make_pcaps(tmp, pairs, size=60):
    """Port 0 sends from A_i to B_i, port 1 from B_i to A_i: 2 x pairs MACs, all unicast."""
    paths = []
    for side in (0, 1):
        frames = []
        for i in range(pairs):
            fr = mac(1 - side, i) + mac(side, i) + b"\x08\x00" + bytes(size)
            frames.append(fr[:size])
        p = os.path.join(tmp, f"port{side}.pcap")
        write_pcap(p, frames)
        paths.append(p)
    return paths


def pmdswitch_pcap_mpps(pcaps, secs):
    """Steady-state rate from the switch's periodic log lines (last full interval)."""
    args = [BIN, "run", "--duration", str(secs), "--stats-interval", "1"]
    for i, p in enumerate(pcaps):
        args.append(f"--port=p{i}=net_pcap{i},rx_pcap={p},infinite_rx=1")
    with tempfile.NamedTemporaryFile(suffix=".json") as st:
        args += ["--stats-json", st.name, "--"] + eal("sw")
        out = subprocess.run(args, capture_output=True, text=True, timeout=secs + 60)
        if out.returncode != 0:
            sys.exit(f"pmdswitch failed:\n{out.stderr}")
        rates = [float(m) for m in re.findall(r"\| ([0-9.]+) kpps", out.stderr)]
        stats = json.load(open(st.name))
    cpp = stats["workers"][0]["cycles_per_packet"]
    return rates[-1] / 1e3, cpp


def testpmd_pcap_mpps(pcaps, secs):
    """Steady-state rate: the sum over ports of the last Rx-pps testpmd printed."""
    args = ["dpdk-testpmd"] + eal("tp")
    for i, p in enumerate(pcaps):
        args += ["--vdev", f"net_pcap{i},rx_pcap={p},infinite_rx=1"]
    args += ["--", "--forward-mode=io", "--stats-period", "1"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(secs)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    rx = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", out)]
    if len(rx) < 2 * len(pcaps):
        sys.exit(f"testpmd printed no rates:\n{out[-3000:]}")
    last = rx[-len(pcaps):]
    return sum(last) / 1e6


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def wait_started(ifs, timeout=30):
    """A tap's kernel side comes up (IFF_UP) when its DPDK port starts: then it may move."""
    t0 = time.time()
    for name in ifs:
        flags = f"/sys/class/net/{name}/flags"
        while not (os.path.exists(flags) and int(open(flags).read(), 16) & 1):
            if time.time() - t0 > timeout:
                raise RuntimeError(f"{name} did not come up")
            time.sleep(0.05)
    time.sleep(0.5)


def iperf_between_taps(start_switch, secs):
    """Two namespaces on taps pmdbnc1/2 (10.99.0.1, .2), iperf3 -t secs; returns Gbit/s."""
    ifs = ["pmdbnc1", "pmdbnc2"]
    for i in (1, 2):
        sh(f"ip netns del pmdbn{i}", check=False)
    proc = start_switch(ifs)
    try:
        wait_started(ifs)
        for i, ifn in enumerate(ifs, 1):
            sh(f"ip netns add pmdbn{i}")
            sh(f"ip link set {ifn} netns pmdbn{i}")
            sh(f"ip -n pmdbn{i} addr add 10.99.0.{i}/24 dev {ifn}")
            sh(f"ip -n pmdbn{i} link set {ifn} up")
            sh(f"ip -n pmdbn{i} link set lo up")
        sh("ip netns exec pmdbn1 ping -c 2 -W 2 10.99.0.2")
        server = subprocess.Popen(["ip", "netns", "exec", "pmdbn2", "iperf3", "-s", "-1", "-B", "10.99.0.2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out = sh(f"ip netns exec pmdbn1 timeout {secs + 20} iperf3 -c 10.99.0.2 -t {secs} -J")
        server.wait(timeout=10)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for i in (1, 2):
            sh(f"ip netns del pmdbn{i}", check=False)


def start_pmdswitch_taps(ifs):
    args = [BIN, "run", "--stats-interval", "0"]
    for i, ifn in enumerate(ifs):
        args.append(f"--port=vm{i}=net_tap{i},iface={ifn}")
    return subprocess.Popen(args + ["--"] + eal("swtap"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_testpmd_taps(ifs):
    args = ["dpdk-testpmd"] + eal("tptap")
    for i, ifn in enumerate(ifs):
        args += ["--vdev", f"net_tap{i},iface={ifn}"]
    args += ["--", "--forward-mode=io"]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per figure (median)")
    ap.add_argument("--secs", type=int, default=5, help="seconds per run")
    ap.add_argument("--pairs", type=int, default=1024, help="MAC pairs in the pcap setup")
    ap.add_argument("--only", choices=["pcap", "tcp"], help="run one measurement")
    ap.add_argument("--json", help="write the table as JSON here")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not built: cargo build --release -p pmdswitch")

    rows = []
    if a.only in (None, "pcap"):
        with tempfile.TemporaryDirectory() as tmp:
            pcaps = make_pcaps(tmp, a.pairs)
            sw, tp, cpp = [], [], []
            for r in range(a.runs):
                mpps, c = pmdswitch_pcap_mpps(pcaps, a.secs)
                sw.append(mpps)
                cpp.append(c)
                tp.append(testpmd_pcap_mpps(pcaps, a.secs))
                print(f"  pcap run {r + 1}: pmdswitch {mpps:.2f} Mpps ({c:.0f} cycles/pkt), testpmd io {tp[-1]:.2f} Mpps", file=sys.stderr)
            rows.append({
                "setup": f"2 x net_pcap infinite_rx, {2 * a.pairs} MACs, 64 B",
                "unit": "Mpps",
                "pmdswitch": statistics.median(sw),
                "testpmd_io": statistics.median(tp),
                "pmdswitch_cycles_per_packet": statistics.median(cpp),
            })
    if a.only in (None, "tcp"):
        sw, tp = [], []
        for r in range(a.runs):
            sw.append(iperf_between_taps(start_pmdswitch_taps, a.secs))
            tp.append(iperf_between_taps(start_testpmd_taps, a.secs))
            print(f"  tcp run {r + 1}: pmdswitch {sw[-1]:.2f} Gbit/s, testpmd io {tp[-1]:.2f} Gbit/s", file=sys.stderr)
        rows.append({
            "setup": "iperf3 TCP, 2 namespaces on net_tap",
            "unit": "Gbit/s",
            "pmdswitch": statistics.median(sw),
            "testpmd_io": statistics.median(tp),
        })

    print(f"\n{'setup':<42} {'unit':>7} {'pmdswitch':>10} {'testpmd io':>11} {'ratio':>7}")
    for r in rows:
        ratio = r["pmdswitch"] / r["testpmd_io"] if r["testpmd_io"] else float("nan")
        r["ratio_to_testpmd"] = ratio
        print(f"{r['setup']:<42} {r['unit']:>7} {r['pmdswitch']:>10.2f} {r['testpmd_io']:>11.2f} {ratio:>7.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
