//! Exact frames out of the switch, on net_pcap ports (rx_pcap in, tx_pcap out).
//!
//! One worker polls its ports in configuration order, one burst of up to 32 frames from each
//! in turn, so the order in which frames meet the MAC table is known: a port's first 32 frames
//! are switched before the next port's, and its 33rd only after every other port's first burst.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::collections::HashMap;
use std::path::PathBuf;

use pmdswitch_tests::*;

const BURST: usize = 32;

struct PcapPorts {
    dir: tempfile::TempDir,
    n: usize,
}

impl PcapPorts {
    fn new(inputs: &[Vec<Vec<u8>>]) -> PcapPorts {
        let dir = tempfile::tempdir().unwrap();
        for (i, frames) in inputs.iter().enumerate() {
            write_pcap(&dir.path().join(format!("in{i}.pcap")), frames);
        }
        PcapPorts {
            dir,
            n: inputs.len(),
        }
    }

    fn path(&self, kind: &str, i: usize) -> PathBuf {
        self.dir.path().join(format!("{kind}{i}.pcap"))
    }

    fn args(&self) -> Vec<String> {
        (0..self.n)
            .map(|i| {
                format!(
                    "--port=p{i}=net_pcap{i},rx_pcap={},tx_pcap={}",
                    self.path("in", i).display(),
                    self.path("out", i).display()
                )
            })
            .collect()
    }

    fn outputs(&self) -> Vec<Vec<Vec<u8>>> {
        (0..self.n)
            .map(|i| read_pcap(&self.path("out", i)))
            .collect()
    }
}

fn run(inputs: &[Vec<Vec<u8>>]) -> (Vec<Vec<Vec<u8>>>, Value) {
    let ports = PcapPorts::new(inputs);
    let done = run_for(&ports.args(), 2.0);
    assert!(
        done.status.success(),
        "pmdswitch failed: {}\n{}",
        done.status,
        done.output
    );
    let stats = done.stats.expect("stats file written");
    (ports.outputs(), stats)
}

fn show(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let hex = |b: &[u8]| {
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            format!(
                "{} <- {} tag {:02x}{:02x} len {}",
                hex(&f[0..6]),
                hex(&f[6..12]),
                f[14],
                f[15],
                f.len()
            )
        })
        .collect()
}

fn assert_port(out: &[Vec<Vec<u8>>], port: usize, want: &[&Vec<u8>]) {
    let want: Vec<Vec<u8>> = want.iter().map(|f| (*f).clone()).collect();
    assert_eq!(show(&out[port]), show(&want), "frames out of p{port}");
    assert_eq!(out[port], want, "bytes out of p{port}");
}

#[test]
fn learns_floods_unicasts_and_never_reflects() {
    let (a, b, c) = (mac(0xa), mac(0xb), mac(0xc));
    let mcast = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let f1 = frame(b, a, 60, 1); // unknown unicast: flood
    let f2 = frame(BROADCAST, a, 60, 2);
    let f3 = frame(mcast, a, 100, 3);
    let f4 = frame(a, b, 60, 4); // A known on p0
    let f5 = frame(BROADCAST, b, 64, 5);
    let same: Vec<Vec<u8>> = (0..30).map(|i| frame(b, b, 60, 100 + i)).collect(); // dst on the ingress port
    let f6 = frame(b, c, 60, 6);
    let f7 = frame(a, c, 60, 7);
    let f8 = frame(c, c, 60, 8); // C is on p2 itself: filtered
    let f9 = frame(b, a, 60, 9); // A moves from p0 to p2
    let f10 = frame(a, b, 60, 10); // second burst of p1: A is now on p2
    let f11 = frame(c, b, 60, 11);

    let mut in1 = vec![f4.clone(), f5.clone()];
    in1.extend(same.iter().cloned());
    assert_eq!(in1.len(), BURST);
    in1.extend([f10.clone(), f11.clone()]);
    let inputs = vec![
        vec![f1.clone(), f2.clone(), f3.clone()],
        in1,
        vec![f6.clone(), f7.clone(), f8.clone(), f9.clone()],
    ];
    let (out, stats) = run(&inputs);

    assert_port(&out, 0, &[&f4, &f5, &f7]);
    assert_port(&out, 1, &[&f1, &f2, &f3, &f6, &f9]);
    assert_port(&out, 2, &[&f1, &f2, &f3, &f5, &f10, &f11]);

    assert_eq!(stats["drops"]["same_segment"], 31);
    assert_eq!(stats["fdb"]["learned"], 3);
    assert_eq!(stats["fdb"]["moved"], 1);
    assert_eq!(stats["fdb"]["entries"], 3);
    for (p, rx, tx) in [("p0", 3, 3), ("p1", 34, 5), ("p2", 4, 6)] {
        assert_eq!(port_stat(&stats, p, "rx_packets"), rx, "{p} rx");
        assert_eq!(port_stat(&stats, p, "tx_packets"), tx, "{p} tx");
        assert_eq!(port_stat(&stats, p, "tx_dropped"), 0, "{p} tx_dropped");
    }
    assert_eq!(port_stat(&stats, "p1", "rx_dropped"), 30);
    assert_eq!(port_stat(&stats, "p2", "rx_dropped"), 1);
}

/// The reference bridge: IEEE 802.1D learning and forwarding in a few lines, fed in the
/// switch's poll order.
fn model(inputs: &[Vec<Vec<u8>>]) -> (Vec<Vec<Vec<u8>>>, u64) {
    let mut fdb: HashMap<[u8; 6], usize> = HashMap::new();
    let mut out = vec![Vec::new(); inputs.len()];
    let mut next = vec![0usize; inputs.len()];
    let mut moves = 0;
    while next.iter().zip(inputs).any(|(n, i)| *n < i.len()) {
        for (p, frames) in inputs.iter().enumerate() {
            let end = (next[p] + BURST).min(frames.len());
            for f in &frames[next[p]..end] {
                let dst: [u8; 6] = f[0..6].try_into().unwrap();
                let src: [u8; 6] = f[6..12].try_into().unwrap();
                if let Some(old) = fdb.insert(src, p) {
                    moves += u64::from(old != p);
                }
                let egress: Vec<usize> = match (dst[0] & 1 == 1, fdb.get(&dst)) {
                    (false, Some(&q)) if q == p => vec![],
                    (false, Some(&q)) => vec![q],
                    _ => (0..inputs.len()).filter(|&q| q != p).collect(),
                };
                for q in egress {
                    out[q].push(f.clone());
                }
            }
            next[p] = end;
        }
    }
    (out, moves)
}

/// A seeded random mix of unicast, broadcast and multicast among a few hosts that wander
/// between ports, over several bursts per port, checked frame for frame against the model.
#[test]
fn random_traffic_matches_the_reference_bridge() {
    let hosts: Vec<[u8; 6]> = (1..=8).map(mac).collect();
    let mut seed: u64 = 0x005e_ed0f_b41d;
    let mut rnd = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let mut tag = 0u16;
    let inputs: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|_| {
            (0..90)
                .map(|_| {
                    tag += 1;
                    let src = hosts[rnd(hosts.len())];
                    let dst = match rnd(10) {
                        0 => BROADCAST,
                        1 => [0x33, 0x33, 0, 0, 0, 0x16],
                        _ => hosts[rnd(hosts.len())],
                    };
                    frame(dst, src, 60 + rnd(200), tag)
                })
                .collect()
        })
        .collect();
    let (want, moves) = model(&inputs);
    let (out, stats) = run(&inputs);
    for p in 0..inputs.len() {
        assert_eq!(show(&out[p]), show(&want[p]), "frames out of p{p}");
    }
    assert_eq!(stats["fdb"]["moved"], moves);
    let rx: u64 = (0..4)
        .map(|p| port_stat(&stats, &format!("p{p}"), "rx_packets"))
        .sum();
    assert_eq!(rx, 360);
}

#[test]
fn bad_frames_are_counted_not_forwarded() {
    let a = mac(0xa);
    let runt = frame(BROADCAST, a, 10, 0);
    let mut cut_tag = frame(BROADCAST, a, 15, 0);
    cut_tag[12..14].copy_from_slice(&[0x81, 0x00]);
    let oversize = frame(BROADCAST, a, 14 + 1501, 3);
    let max_ok = frame(BROADCAST, a, 14 + 1500, 4);
    let jumbo = frame(BROADCAST, a, 3000, 5); // a chain of 2 KiB mbufs, beyond the MTU
    let mcast_src = frame(BROADCAST, [0x01, 0, 0x5e, 0, 0, 7], 60, 6);
    let bpdu = frame([0x01, 0x80, 0xc2, 0, 0, 0], a, 60, 7);
    let lldp = frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], a, 60, 8);
    let good = frame(BROADCAST, a, 60, 9);
    // No station has the all-zeros address: frames from it are dropped as from a group
    // address (the Linux bridge's rule; Open vSwitch learns it).
    let zero_src = frame(BROADCAST, [0; 6], 60, 10);
    let zero_src_unicast = frame(mac(0xb), [0; 6], 60, 11);
    // From p2, after p0's burst: to the zero address, never learned, so flooded.
    let to_zero = frame([0; 6], mac(0xc), 60, 12);
    let inputs = vec![
        vec![
            runt,
            cut_tag,
            oversize,
            max_ok.clone(),
            jumbo,
            mcast_src,
            bpdu,
            lldp,
            good.clone(),
            zero_src,
            zero_src_unicast,
        ],
        vec![],
        vec![to_zero.clone()],
    ];
    let (out, stats) = run(&inputs);
    assert_port(&out, 1, &[&max_ok, &good, &to_zero]);
    assert_port(&out, 2, &[&max_ok, &good]);
    assert_port(&out, 0, &[&to_zero]);
    let d = &stats["drops"];
    for (reason, n) in [
        ("runt", 1),
        ("truncated_vlan", 1),
        ("oversize", 2),
        ("multi_segment", 0),
        ("src_mac_invalid", 3),
        ("reserved_dst", 2),
    ] {
        assert_eq!(d[reason], n, "drops.{reason}: {d}");
    }
    assert_eq!(port_stat(&stats, "p0", "rx_packets"), 11);
    assert_eq!(port_stat(&stats, "p0", "rx_dropped"), 9);
    assert_eq!(port_stat(&stats, "p1", "tx_packets"), 3);
    assert_eq!(
        stats["fdb"]["entries"], 2,
        "only the valid unicast sources (a, c) are learned"
    );
}
