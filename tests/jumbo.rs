//! Jumbo frames: a per-port MTU, and frames larger than one 2 KiB buffer (chains) through
//! every path: flooded and unicast, tag pushed, popped or kept, to ports of other MTUs; each
//! leaves byte for byte or is dropped under its reason, for its port alone.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::collections::HashMap;
use std::time::Duration;

use pmdswitch_tests::*;

/// Frame lengths on the wire without FCS: around 1500, around the 2 KiB buffer, jumbo.
const SIZES: [usize; 14] = [
    1514, 1518, 1522, 2040, 2044, 2046, 2048, 2050, 2052, 2056, 2060, 4096, 9018, 9022,
];

/// The test's ports: name, VLAN setup, MTU, tagged on the wire.
const PORTS: [(&str, &str, u32, bool); 5] = [
    ("a", "vlan = 10", 9000, false),
    ("t", "trunks = [10]", 9000, true),
    ("s", "vlan = 10", 1500, false),
    ("m", "vlan = 10", 4000, false),
    ("u", "trunks = [10]", 2000, true),
];

/// The station each port holds statically (unicast goes there): 02:00:00:00:00:5N.
fn station(port: usize) -> [u8; 6] {
    mac(0x50 + port as u8)
}

#[test]
fn frames_of_every_size_leave_whole_or_are_dropped_by_reason() {
    let mut inputs: HashMap<&str, Vec<Vec<u8>>> = HashMap::new();
    // What each port should send out, and the drops to expect.
    let mut want: HashMap<&str, Vec<Vec<u8>>> = HashMap::new();
    let (mut oversize, mut egress_oversize) = (0u64, 0u64);
    let mut tag = 0u16;
    for (i, &(from, _, mtu_in, tagged_in)) in PORTS.iter().enumerate().take(2) {
        for &len in &SIZES {
            let dsts: Vec<([u8; 6], Option<usize>)> = std::iter::once((BROADCAST, None))
                .chain(
                    (0..PORTS.len())
                        .filter(|&j| j != i)
                        .map(|j| (station(j), Some(j))),
                )
                .collect();
            for (dst, only) in dsts {
                tag += 1;
                // The frame as it is in VLAN 10, untagged; on a trunk it carries the tag.
                let plain = frame(
                    dst,
                    mac(1 + i as u8),
                    if tagged_in { len - 4 } else { len },
                    tag,
                );
                let wire = |tagged: bool| {
                    if tagged {
                        tagged_frame(&plain)
                    } else {
                        plain.clone()
                    }
                };
                inputs.entry(from).or_default().push(wire(tagged_in));
                let payload = (plain.len() - 14) as u32;
                if payload > mtu_in {
                    oversize += 1;
                    continue;
                }
                for (j, &(to, _, mtu_out, tagged_out)) in PORTS.iter().enumerate() {
                    if j == i || only.is_some_and(|o| o != j) {
                        continue;
                    }
                    if payload > mtu_out {
                        egress_oversize += 1;
                    } else {
                        want.entry(to).or_default().push(wire(tagged_out));
                    }
                }
            }
        }
    }
    let mut head = String::from("[bridge]\nmtu = 9000\n");
    for (j, (name, _, _, _)) in PORTS.iter().enumerate() {
        let m = station(j);
        head.push_str(&format!(
            "[[fdb]]\nport = \"{name}\"\nvlan = 10\nmac = \"{}\"\n",
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        ));
    }
    let ports: Vec<PcapPort> = PORTS
        .iter()
        .map(|&(name, vlan, mtu, _)| {
            PcapPort::new(
                name,
                &format!("{vlan}\nmtu = {mtu}"),
                inputs.remove(name).unwrap_or_default(),
            )
        })
        .collect();
    let r = run_pcap_config(&head, &ports, 3.0);
    for &(name, _, _, _) in &PORTS {
        assert_frames(
            &format!("out of {name}"),
            r.out(name),
            want.get(name).map_or(&[][..], |v| &v[..]),
        );
    }
    assert_eq!(r.drops("oversize"), oversize, "{}", r.stats["drops"]);
    assert_eq!(
        r.drops("egress_oversize"),
        egress_oversize,
        "{}",
        r.stats["drops"]
    );
    assert_eq!(r.drops("multi_segment"), 0, "{}", r.stats["drops"]);
    assert_no_mbuf_leaked(&r.stats);
}

/// `f` (untagged) with VLAN 10's tag, priority 0, as a trunk carries it.
fn tagged_frame(f: &[u8]) -> Vec<u8> {
    tagged(f, 0, 10)
}

/// A million chained frames (5000 bytes: three buffers each) from a VM flooded to three ports,
/// every one of them sampled by sFlow: every buffer is freed exactly once, and the pool is
/// back where it started.
#[test]
fn a_million_chained_frames_flooded_with_sflow_leak_no_mbuf() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let cfg = ConfigFile::new(&format!(
        "[bridge]\nmtu = 9000\n\
         [[ports]]\nname = \"vm\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n\
         [[ports]]\nname = \"n0\"\ndevargs = \"net_null0,no-rx=1\"\n\
         [[ports]]\nname = \"n1\"\ndevargs = \"net_null1,no-rx=1\"\n\
         [[ports]]\nname = \"n2\"\ndevargs = \"net_null2,no-rx=1\"\n\
         [sflow]\ncollectors = [\"127.0.0.1:9\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 1\npolling_interval = 0\n",
        sock.display()
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let mut t = Testpmd::start(
        &[format!(
            "net_virtio_user0,path={},queues=1,mac=02:00:00:00:00:01",
            sock.display()
        )],
        &[
            "--forward-mode=txonly",
            "--txpkts=2048,2048,904",
            "--eth-peer=0,02:00:00:00:00:77",
            "--no-lsc-interrupt",
        ],
    );
    sw.wait_for_log("port vm: guest connected", Duration::from_secs(10));
    t.cmd("start");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sw.port_counter("vm", "rx_packets") < 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} frames after 60 s",
            sw.port_counter("vm", "rx_packets")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.quit();
    std::thread::sleep(Duration::from_millis(200));
    let done = sw.stop();
    let stats = done.stats.unwrap();
    let rx = port_stat(&stats, "vm", "rx_packets");
    assert!(rx >= 1_000_000, "{stats}");
    assert_eq!(
        port_stat(&stats, "vm", "rx_bytes"),
        rx * 5000,
        "every frame whole"
    );
    for sink in ["n0", "n1", "n2"] {
        assert_eq!(port_stat(&stats, sink, "tx_packets"), rx, "{sink}: {stats}");
    }
    assert_eq!(
        port_stat(&stats, "vm", "samples_taken"),
        rx,
        "1-in-1: every frame sampled"
    );
    assert_no_mbuf_leaked(&stats);
}

/// An MTU a port's driver cannot take is refused with the port, its driver and the driver's
/// limit: at start (the switch does not start) and at runtime (the switch runs on as it was);
/// one it can take is applied at runtime.
#[test]
fn an_mtu_the_driver_cannot_take_is_refused_naming_port_driver_and_limit() {
    let id = std::process::id() % 100_000;
    let tap = format!("pmtu{id}");
    let dir = tempfile::tempdir().unwrap();
    let bad = ConfigFile::new(&format!(
        "[[ports]]\nname = \"vm\"\ndevargs = \"net_tap0,iface={tap}\"\nmtu = 9000\n"
    ));
    let done = run_for(&bad.args(), 1.0);
    assert_eq!(done.status.code(), Some(1), "{}", done.output);
    assert!(
        done.output.contains("\"vm\"")
            && done.output.contains("net_tap")
            && done.output.contains("mtu 9000")
            && done.output.contains("to 1504"),
        "{}",
        done.output
    );

    let out = dir.path().join("out.pcap");
    let cfg = ConfigFile::new(&format!(
        "[[ports]]\nname = \"vm\"\ndevargs = \"net_tap0,iface={tap}\"\n\
         [[ports]]\nname = \"p\"\ndevargs = \"net_pcap0,tx_pcap={}\"\n",
        out.display()
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let r = sw.appctl(&["port/set", "vm", "mtu=9000"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("\"vm\"") && r.stderr.contains("net_tap") && r.stderr.contains("1504"),
        "{r:?}"
    );
    assert!(
        sw.appctl(&["port/show", "vm"]).stdout.contains("link: up"),
        "the port runs on"
    );
    let r = sw.appctl(&["port/set", "p", "mtu=4000"]);
    assert_eq!(r.code, 0, "{r:?}");
    sw.wait_for_log("mtu 4000 (kept by the switch", Duration::from_secs(10));
    let r = sw.appctl(&["port/set", "vm", "mtu=1400"]);
    assert_eq!(r.code, 0, "{r:?}");
    sw.wait_for_log("mtu 1400 (set on the device", Duration::from_secs(10));
    assert!(sw.appctl(&["config/show"]).stdout.contains("mtu = 4000"));
    sw.stop();
}
