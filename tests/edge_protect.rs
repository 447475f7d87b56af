//! The protections of an edge port (issue 7): source address allow-lists, a limit on learned
//! addresses, BPDU guard, storm control and policing, each checked by what gets through and by
//! the drop counter of its reason.
//!
//! Frame-exact cases run on net_pcap ports (one worker polls the ports in configuration order,
//! so every port's first burst is switched before the next port's). Rates are measured from
//! the timestamps of a tx pcap over the steady part of a run, or with iperf3 between network
//! namespaces on net_tap ports.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::process::{Command, Stdio};
use std::time::Duration;

use pmdswitch_tests::*;

fn f(dst: [u8; 6], src: [u8; 6], tag: u16) -> Vec<u8> {
    frame(dst, src, 60, tag)
}

#[test]
fn a_source_not_allowed_is_dropped_counted_and_not_learned() {
    let (m1, m2, spoof, other) = (mac(1), mac(2), mac(9), mac(0x21));
    let f1 = f(BROADCAST, m1, 1);
    let f2 = f(BROADCAST, spoof, 2);
    let f3 = f(mac(0x20), spoof, 3);
    let f4 = f(BROADCAST, m2, 4);
    let f5 = f(BROADCAST, spoof, 5);
    let f6 = f(spoof, other, 6); // p1 to the spoofed address: unknown, so flooded
    let ports = [
        PcapPort::new(
            "p0",
            "allowed_macs = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]",
            vec![f1.clone(), f2.clone(), f3.clone(), f4.clone(), f5.clone()],
        ),
        PcapPort::new("p1", "", vec![f6.clone()]),
        PcapPort::new("p2", "", vec![]),
    ];
    let r = run_pcap_config("", &ports, 2.0);
    assert_frames("p1", r.out("p1"), &[f1.clone(), f4.clone()]);
    assert_frames("p2", r.out("p2"), &[f1.clone(), f4.clone(), f6.clone()]);
    assert_frames("p0", r.out("p0"), std::slice::from_ref(&f6));
    assert_eq!(
        r.drops("src_mac_not_allowed"),
        3,
        "drops: {}",
        r.stats["drops"]
    );
    assert_eq!(port_stat(&r.stats, "p0", "rx_dropped"), 3);
    assert_eq!(
        r.stats["fdb"]["entries"], 3,
        "m1, m2, other: {}",
        r.stats["fdb"]
    );
}

#[test]
fn the_address_after_max_macs_is_not_learned_and_its_frames_dropped() {
    let (m1, m2, m3, other) = (mac(1), mac(2), mac(3), mac(0x21));
    let f1 = f(BROADCAST, m1, 1);
    let f2 = f(BROADCAST, m2, 2);
    let f3 = f(BROADCAST, m3, 3); // third address on a port of max_macs = 2
    let f4 = f(other, m3, 4);
    let f5 = f(BROADCAST, m1, 5); // a learned one still passes
    let f6 = f(m3, other, 6); // m3 unknown: flooded
    let f7 = f(m1, other, 7); // m1 known on p0
    let ports = [
        PcapPort::new(
            "p0",
            "max_macs = 2",
            vec![f1.clone(), f2.clone(), f3.clone(), f4.clone(), f5.clone()],
        ),
        PcapPort::new("p1", "", vec![f6.clone(), f7.clone()]),
        PcapPort::new("p2", "", vec![]),
    ];
    let r = run_pcap_config("", &ports, 2.0);
    assert_frames("p1", r.out("p1"), &[f1.clone(), f2.clone(), f5.clone()]);
    assert_frames(
        "p2",
        r.out("p2"),
        &[f1.clone(), f2.clone(), f5.clone(), f6.clone()],
    );
    assert_frames("p0", r.out("p0"), &[f6.clone(), f7.clone()]);
    assert_eq!(r.drops("mac_limit"), 2, "drops: {}", r.stats["drops"]);
    assert_eq!(
        r.stats["fdb"]["entries"], 3,
        "m1, m2, other: {}",
        r.stats["fdb"]
    );
}

#[test]
fn bpdu_guard_drops_bpdus_and_can_shut_the_port() {
    let bpdu_dst = [0x01, 0x80, 0xc2, 0, 0, 0];
    let (a, b, c) = (mac(0xa), mac(0xb), mac(0xc));
    let f1 = f(BROADCAST, a, 1);
    let f2 = f(bpdu_dst, a, 2);
    let f3 = f(BROADCAST, a, 3);
    let f4 = f(BROADCAST, b, 4);
    let f5 = f(bpdu_dst, b, 5);
    let f6 = f(BROADCAST, b, 6);
    let f7 = f(c, b, 7);
    let f8 = f(bpdu_dst, c, 8);
    let f9 = f(BROADCAST, c, 9);
    let ports = [
        PcapPort::new(
            "guard",
            "bpdu_guard = true",
            vec![f1.clone(), f2, f3.clone()],
        ),
        PcapPort::new(
            "shut",
            "bpdu_guard = true\nbpdu_guard_shutdown = true",
            vec![f4.clone(), f5, f6, f7],
        ),
        PcapPort::new("plain", "", vec![f8, f9.clone()]),
    ];
    let r = run_pcap_config("", &ports, 2.0);
    assert_frames(
        "plain",
        r.out("plain"),
        &[f1.clone(), f3.clone(), f4.clone()],
    );
    assert_frames("guard", r.out("guard"), &[f4.clone(), f9.clone()]);
    let shut = r.out("shut");
    assert!(
        shut.contains(&f1) && shut.contains(&f3),
        "before its BPDU the port worked: {:?}",
        describe(shut)
    );
    let d = &r.stats["drops"];
    assert_eq!(r.drops("bpdu_guard"), 2, "drops: {d}");
    assert_eq!(r.drops("port_disabled"), 2, "drops: {d}");
    assert_eq!(r.drops("reserved_dst"), 1, "the unguarded port's BPDU: {d}");
    assert_eq!(port_stat(&r.stats, "shut", "rx_dropped"), 3);
}

/// Frames per second of those `keep` selects, from a tx pcap's timestamps, over the run's
/// steady part: from 1 s after the first frame to 0.5 s before the last.
fn steady_rate(frames: &[(f64, Vec<u8>)], keep: impl Fn(&[u8]) -> bool) -> (f64, usize) {
    let first = frames.first().expect("frames were sent").0;
    let last = frames.last().expect("frames were sent").0;
    let (from, to) = (first + 1.0, last - 0.5);
    assert!(
        to - from >= 2.0,
        "a run of {:.1} s is too short",
        last - first
    );
    let n = frames
        .iter()
        .filter(|(t, f)| *t >= from && *t < to && keep(f))
        .count();
    (n as f64 / (to - from), n)
}

fn assert_within(what: &str, got: f64, want: f64) {
    eprintln!("{what}: {got:.1} (configured {want})");
    assert!(
        (got - want).abs() <= want * 0.10,
        "{what}: {got:.1}, not within 10% of {want}"
    );
}

#[test]
fn storm_control_holds_each_kind_to_its_rate() {
    // Three senders as fast as the worker polls them (net_pcap infinite_rx), one kind each,
    // into ports limited per kind; a fourth port records what got through, with timestamps.
    let (bc, mc, uu) = (mac(0x71), mac(0x72), mac(0x73));
    let dir = tempfile::tempdir().unwrap();
    let input = |name: &str, fr: Vec<u8>| {
        let p = dir.path().join(name);
        write_pcap(&p, &[fr]);
        p.display().to_string()
    };
    let ib = input("b.pcap", f(BROADCAST, bc, 1));
    let im = input("m.pcap", f([0x01, 0x00, 0x5e, 0, 0, 9], mc, 2));
    let iu = input("u.pcap", f(mac(0x7f), uu, 3)); // 02:..:7f never sends: always unknown
    let empty = dir.path().join("empty.pcap");
    write_pcap(&empty, &[]);
    let out = dir.path().join("out.pcap");
    let limits =
        "storm_control = { broadcast_pps = 2000, multicast_pps = 1000, unknown_unicast_pps = 500 }";
    let toml = format!(
        "[[ports]]\nname = \"b\"\ndevargs = \"net_pcap0,rx_pcap={ib},infinite_rx=1\"\n{limits}\n\n\
         [[ports]]\nname = \"m\"\ndevargs = \"net_pcap1,rx_pcap={im},infinite_rx=1\"\n{limits}\n\n\
         [[ports]]\nname = \"u\"\ndevargs = \"net_pcap2,rx_pcap={iu},infinite_rx=1\"\n{limits}\n\n\
         [[ports]]\nname = \"out\"\ndevargs = \"net_pcap3,rx_pcap={},tx_pcap={}\"\n",
        empty.display(),
        out.display()
    );
    let config = ConfigFile::new(&toml);
    let done = run_for(&config.args(), 5.0);
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats");
    let frames = read_pcap_timed(&out);
    for (name, src, want) in [
        ("broadcast", bc, 2000.0),
        ("multicast", mc, 1000.0),
        ("unknown unicast", uu, 500.0),
    ] {
        let (rate, n) = steady_rate(&frames, |fr| fr[6..12] == src);
        assert_within(&format!("{name} pps ({n} frames)"), rate, want);
    }
    let rx: u64 = ["b", "m", "u"]
        .iter()
        .map(|p| port_stat(&stats, p, "rx_packets"))
        .sum();
    let storm = stats["drops"]["storm_control"].as_u64().unwrap_or(0);
    assert!(
        storm > rx / 2,
        "most of the {rx} frames were storm-dropped, counted: {}",
        stats["drops"]
    );
}

#[test]
fn storm_control_holds_a_vepa_vm_port_to_its_rates_on_the_way_up() {
    // In VEPA a VM's broadcasts go up the uplink instead of out of the local ports, and its
    // broadcast limit holds all the same. Its unicast goes to the uplink alone, known or not:
    // nothing is flooded here, so an unknown-unicast limit holds nothing back (the uplink
    // never learns: every address behind it is "unknown", and limiting those would throttle
    // all of a VM's off-host traffic). The uplink is a tap whose kernel side counts what
    // arrives (no pcap: unlimited, that would be gigabytes).
    let id = std::process::id() % 100_000;
    let uplink = format!("pes{id}up");
    let dir = tempfile::tempdir().unwrap();
    let input = |name: &str, fr: Vec<u8>| {
        let p = dir.path().join(name);
        write_pcap(&p, &[fr]);
        p.display().to_string()
    };
    let ib = input("b.pcap", f(BROADCAST, mac(0x75), 1));
    let iu = input("u.pcap", f(mac(0x7f), mac(0x76), 3)); // 02:..:7f never sends: unknown
    let empty = dir.path().join("empty.pcap");
    write_pcap(&empty, &[]);
    // One VM sends, the other's input is empty. (Never infinite_rx on an empty pcap: DPDK
    // 22.11's net_pcap then allocates a burst of mbufs per poll and never frees them.)
    let sending = |p: &str| format!("{p},infinite_rx=1");
    let idle = empty.display().to_string();
    let toml = |ib: &str, iu: &str| {
        format!(
            "[bridge]\nmode = \"vepa\"\n\n\
             [[ports]]\nname = \"vm1\"\ndevargs = \"net_pcap0,rx_pcap={ib}\"\n\
             storm_control = {{ broadcast_pps = 1000 }}\n\n\
             [[ports]]\nname = \"vm2\"\ndevargs = \"net_pcap1,rx_pcap={iu}\"\n\
             storm_control = {{ unknown_unicast_pps = 500 }}\n\n\
             [[ports]]\nname = \"up\"\ndevargs = \"net_tap0,iface={uplink}\"\nrole = \"uplink\"\n"
        )
    };
    for (kind, config, want) in [
        ("broadcast", toml(&sending(&ib), &idle), 1000.0),
        ("unknown unicast", toml(&idle, &sending(&iu)), 0.0),
    ] {
        let config = ConfigFile::new(&config);
        let mut sw = Switch::start(&config.args());
        sw.wait_ready();
        wait_for_iface(&uplink, Duration::from_secs(10));
        let ns = Netns::new(&format!("pmdsw{id}up")).without_ipv6();
        sh(&format!("ip link set {uplink} netns {}", ns.name));
        sh(&ns.exec(&format!("ip link set {uplink} up")));
        std::thread::sleep(Duration::from_secs(1));
        let (n0, t0) = (
            iface_counter(Some(&ns), &uplink, "rx_packets"),
            std::time::Instant::now(),
        );
        std::thread::sleep(Duration::from_secs(3));
        let (n1, t1) = (
            iface_counter(Some(&ns), &uplink, "rx_packets"),
            std::time::Instant::now(),
        );
        sw.signal(nix::sys::signal::Signal::SIGTERM);
        let (done, _) = sw.wait(Duration::from_secs(30));
        assert!(done.status.success(), "{}", done.output);
        let rate = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
        if want > 0.0 {
            assert_within(&format!("VEPA {kind} pps up the uplink"), rate, want);
        } else {
            let stats = done.stats.expect("stats written");
            assert_eq!(
                stats["drops"]["storm_control"], 0,
                "{kind}: {}",
                stats["drops"]
            );
            assert!(
                rate > 5000.0,
                "VEPA {kind}: {rate:.0} pps up, not held to 500"
            );
        }
        drop(ns);
    }
}

#[test]
fn storm_control_limits_broadcast_from_a_raw_socket() {
    // A host sends 4000 broadcasts a second for 5 s through a tap limited to 1000 a second.
    let id = std::process::id() % 100_000;
    let ifname = format!("pes{id}h1");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pcap");
    write_pcap(&empty, &[]);
    let out = dir.path().join("out.pcap");
    let config = ConfigFile::new(&format!(
        "[[ports]]\nname = \"h1\"\ndevargs = \"net_tap0,iface={ifname}\"\n\
         storm_control = {{ broadcast_pps = 1000 }}\n\n\
         [[ports]]\nname = \"out\"\ndevargs = \"net_pcap0,rx_pcap={},tx_pcap={}\"\n",
        empty.display(),
        out.display()
    ));
    let mut sw = Switch::start(&config.args());
    sw.wait_ready();
    wait_for_iface(&ifname, Duration::from_secs(10));
    let ns = Netns::new(&format!("pmdsw{id}s")).without_ipv6();
    sh(&format!("ip link set {ifname} netns {}", ns.name));
    sh(&ns.exec(&format!("ip link set {ifname} up")));
    let src = mac(0x74);
    raw_send(Some(&ns), &ifname, 20_000, 4000, &[f(BROADCAST, src, 1)]);
    sw.signal(nix::sys::signal::Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    let frames: Vec<(f64, Vec<u8>)> = read_pcap_timed(&out)
        .into_iter()
        .filter(|(_, fr)| fr[6..12] == src)
        .collect();
    let (rate, n) = steady_rate(&frames, |_| true);
    assert_within(&format!("broadcast pps ({n} frames)"), rate, 1000.0);
    let stats = done.stats.expect("stats");
    assert!(
        stats["drops"]["storm_control"].as_u64().unwrap_or(0) >= 10_000,
        "about 15000 storm-dropped: {}",
        stats["drops"]
    );
}

/// Two hosts on net_tap ports with the given extra config for each; iperf3 TCP from h1 to h2
/// for 5 s; returns the received bits per second and the stats.
fn iperf_through(h1_config: &str, h2_config: &str, client: &str) -> (f64, Value) {
    let id = std::process::id() % 100_000;
    let ifs = [format!("pep{id}h1"), format!("pep{id}h2")];
    let config = ConfigFile::new(&format!(
        "[[ports]]\nname = \"h1\"\ndevargs = \"net_tap0,iface={}\"\n{h1_config}\n\n\
         [[ports]]\nname = \"h2\"\ndevargs = \"net_tap1,iface={}\"\n{h2_config}\n",
        ifs[0], ifs[1]
    ));
    let mut sw = Switch::start(&config.args());
    sw.wait_ready();
    let hosts = hosts_on_taps(&ifs, &format!("pmdsw{id}p"));
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(hosts[1].exec("iperf3 -s -1 -B 10.99.0.2"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("sh")
        .arg("-c")
        .arg(hosts[0].exec(&format!(
            "timeout 25 iperf3 -c 10.99.0.2 -t 6 -O 1 -J {client}"
        )))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("iperf3 -J output");
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second");
    sw.signal(nix::sys::signal::Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    drop(hosts);
    (bps, done.stats.expect("stats"))
}

/// The configured rate, bits per second of whole Ethernet frames (as rte_meter counts them).
const RATE: f64 = 20_000_000.0;
/// The TCP goodput that fills RATE: 1448 payload bytes (with timestamps) per 1514-byte frame.
const TCP_AT_RATE: f64 = RATE * 1448.0 / 1514.0;
/// A burst of 0.4 s at RATE. With 250 kB (0.1 s) TCP through a tap reached only about half
/// the rate here (10.0-10.4 Mbit/s): it loses whole windows to the bucket and backs off.
const BURST: u64 = 1_000_000;
/// iperf3 UDP datagrams of 1400 bytes are 1442-byte frames (UDP 8, IPv4 20, Ethernet 14).
const UDP_FRAME_PER_PAYLOAD: f64 = 1442.0 / 1400.0;

#[test]
fn udp_at_twice_the_rate_is_held_to_the_ingress_and_the_egress_rate() {
    let policed = format!("ingress_policing_rate = {RATE}\ningress_policing_burst = {BURST}");
    let limited = format!("egress_rate = {RATE}\negress_burst = {BURST}");
    for (what, h1, h2, reason) in [
        ("ingress policing", policed.as_str(), "", "ingress_policing"),
        (
            "egress rate limit",
            "",
            limited.as_str(),
            "egress_rate_limit",
        ),
    ] {
        let (bps, stats) = iperf_through(h1, h2, "-u -b 40M -l 1400");
        assert_within(
            &format!("UDP frame bit/s through the {what}"),
            bps * UDP_FRAME_PER_PAYLOAD,
            RATE,
        );
        assert!(
            stats["drops"][reason].as_u64().unwrap_or(0) > 1000,
            "half of 40 Mbit/s for 7 s dropped as {reason}: {}",
            stats["drops"]
        );
    }
}

#[test]
fn tcp_through_a_policed_port_runs_at_the_policing_rate() {
    let (bps, stats) = iperf_through(
        &format!("ingress_policing_rate = {RATE}\ningress_policing_burst = {BURST}"),
        "",
        "",
    );
    assert_within("TCP goodput through ingress policing", bps, TCP_AT_RATE);
    assert!(
        stats["drops"]["ingress_policing"].as_u64().unwrap_or(0) > 0,
        "TCP pushed past the rate and was policed: {}",
        stats["drops"]
    );
}

#[test]
fn tcp_out_of_a_rate_limited_port_runs_at_the_egress_rate() {
    let (bps, stats) = iperf_through(
        "",
        &format!("egress_rate = {RATE}\negress_burst = {BURST}"),
        "",
    );
    assert_within(
        "TCP goodput through the egress rate limit",
        bps,
        TCP_AT_RATE,
    );
    assert!(
        stats["drops"]["egress_rate_limit"].as_u64().unwrap_or(0) > 0,
        "TCP pushed past the rate and was limited: {}",
        stats["drops"]
    );
}
