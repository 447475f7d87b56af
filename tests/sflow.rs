//! sFlow v5 export end to end: the switch samples real traffic and sends datagrams to a UDP
//! collector on loopback; the datagrams are read by a parser written here from the
//! specification and by tshark's sFlow dissector.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pmdswitch_tests::sflow::{collector, decode, Decoded};
use pmdswitch_tests::*;

#[test]
fn samples_and_counters_reach_the_collector_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.pcap");
    // 64-byte frames from 64 hosts to an address never learned: flooded to the one other port.
    let frames: Vec<Vec<u8>> = (0..64u8)
        .map(|i| frame([2, 0xee, 0, 0, 0, 1], mac(i), 64, u16::from(i)))
        .collect();
    write_pcap(&src, &frames);
    let (port, stop, h) = collector();
    let cfg = dir.path().join("switch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ports]]\nname = \"src\"\ndevargs = \"net_pcap0,rx_pcap={},infinite_rx=1\"\n\n\
             [[ports]]\nname = \"sink\"\ndevargs = \"net_null0,no-rx=1\"\n\n\
             [sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
             sampling_rate = 4096\npolling_interval = 1\nheader_bytes = 128\n",
            src.display()
        ),
    )
    .unwrap();
    let done = run_for(&["--config".into(), cfg.display().to_string()], 3.0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let datagrams = h.join().unwrap();
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.unwrap();

    let mut d = Decoded::default();
    // For tshark: the first datagrams, and every one that carries counters.
    let mut for_tshark = Vec::new();
    for (i, dg) in datagrams.iter().enumerate() {
        assert!(dg.len() <= 1400, "datagram of {} bytes", dg.len());
        if decode(dg, &mut d) || i < 20 {
            for_tshark.push(dg.clone());
        }
    }
    let sent = stats["sflow"]["datagrams"].as_u64().unwrap();
    assert_eq!(
        d.datagrams.len() as u64,
        sent,
        "every datagram sent arrived"
    );
    assert!(
        d.datagrams.windows(2).all(|w| w[1] == w[0] + 1),
        "datagram sequence numbers count up by one"
    );
    assert!(!d.flows.is_empty());
    for f in &d.flows {
        assert_eq!((f.source, f.input, f.rate), (1, 1, 4096), "{f:?}");
        assert_eq!(
            f.output, 2,
            "flooded to one port: that port's ifIndex: {f:?}"
        );
        assert_eq!(
            (f.frame_length, f.stripped, f.header_len),
            (68, 4, 64),
            "{f:?}"
        );
        assert_eq!(f.src_vlan, 1, "untagged: the default VLAN");
    }
    // Counter samples for both ports (ifIndex 1 and 2), admin and link up, 10G null/pcap links.
    for idx in [1, 2] {
        assert!(
            d.counters
                .iter()
                .any(|c| c.source == idx && c.if_status == 3),
            "counters of ifIndex {idx}: {:?}",
            d.counters
        );
    }

    // Statistics: c samples x rate estimates the frames seen. sFlow's published 95% bound is
    // 196 * sqrt(1/c) percent; the test allows 3.29 sigma (99.9%) so that it does not fail
    // one run in twenty, and prints where the run fell.
    let rx = port_stat(&stats, "src", "rx_packets") as f64;
    let c = d.flows.len() as f64;
    let err = (c * 4096.0 - rx).abs() / rx;
    let bound95 = 1.96 * (1.0 / c).sqrt();
    eprintln!(
        "{c} samples x 4096 vs {rx} frames: error {:.3}% (95% bound {:.3}%)",
        100.0 * err,
        100.0 * bound95
    );
    assert!(
        err <= 3.29 * (1.0 / c).sqrt(),
        "estimate off by {:.3}%",
        100.0 * err
    );
    assert_eq!(port_stat(&stats, "src", "samples_lost"), 0);
    assert_eq!(port_stat(&stats, "src", "samples_taken") as f64, c);
    // The sample pool counts every frame the sampler saw: the last one trails rx by the
    // frames after the last sample.
    let last_pool = f64::from(d.flows.last().unwrap().pool);
    assert!(
        last_pool <= rx && rx - last_pool < 100.0 * 4096.0,
        "pool {last_pool} vs rx {rx}"
    );

    // An independent decoder: tshark reads the first datagrams without complaint.
    if sh_ok("command -v tshark") {
        let file = dir.path().join("sflow.pcap");
        write_udp_pcap(&file, &for_tshark, port);
        let out = std::process::Command::new("tshark")
            .args(["-r"])
            .arg(&file)
            .args(["-d", &format!("udp.port=={port},sflow"), "-V"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "InMon sFlow",
            "Datagram version: 5",
            "1 out of 4096 packets",
            "Header protocol: Ethernet (1)",
            "Frame Length: 68",
            "Extended switch data",
        ] {
            assert!(
                text.contains(want),
                "tshark output lacks {want:?}:\n{}",
                &text[..text.len().min(4000)]
            );
        }
        assert!(
            text.to_lowercase().contains("counters sample"),
            "tshark saw no counters sample"
        );
        assert!(
            !text.to_lowercase().contains("malformed"),
            "tshark: malformed"
        );
    } else {
        panic!("tshark is needed for this test (scripts/setup.sh installs it)");
    }
}

#[test]
fn a_collector_that_is_down_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switch.toml");
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let frames: Vec<Vec<u8>> = (0..500u16)
        .map(|i| frame(BROADCAST, mac(1), 60, i))
        .collect();
    write_pcap(&input, &frames);
    // Nothing listens on the discard port, on either family.
    std::fs::write(
        &cfg,
        format!(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
             [[ports]]\nname = \"b\"\ndevargs = \"net_pcap1,tx_pcap={}\"\n\n\
             [sflow]\ncollectors = [\"127.0.0.1:9\", \"[::1]:9\"]\nagent_address = \"2001:db8::1\"\n\
             sampling_rate = 1\npolling_interval = 1\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    let done = run_for(&["--config".into(), cfg.display().to_string()], 2.0);
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.unwrap();
    assert_eq!(
        read_pcap(&output),
        frames,
        "every frame forwarded, in order"
    );
    assert_eq!(
        port_stat(&stats, "a", "samples_taken"),
        500,
        "1-in-1 samples all"
    );
    assert!(stats["sflow"]["flow_samples"].as_u64().unwrap() >= 500);
}

/// sFlow v5's output field says where each sampled frame went: one port by its ifIndex (a
/// flood that reached one port included), two or more as 0x80000000 | n, a discard as
/// 0x40000000 | reason.
#[test]
fn the_output_field_says_where_each_sampled_frame_went() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, h) = collector();
    // a, b, c in VLAN 10 and d, e in VLAN 20 (ifIndexes 1 to 5); b holds 02:..:02 statically.
    let a_in = dir.path().join("a.pcap");
    let d_in = dir.path().join("d.pcap");
    let mut from_a = Vec::new();
    for i in 0..10u16 {
        from_a.push(frame(BROADCAST, mac(1), 60, i)); // to b and c
        from_a.push(frame(mac(2), mac(1), 60, 100 + i)); // to b alone
        from_a.push(frame(mac(9), [0; 6], 60, 200 + i)); // no station's source: dropped
    }
    write_pcap(&a_in, &from_a);
    write_pcap(
        &d_in,
        &(0..10u16)
            .map(|i| frame(BROADCAST, mac(4), 60, 300 + i)) // to e alone
            .collect::<Vec<_>>(),
    );
    let access = |name: &str, dev: &str, vlan: u16| {
        format!("[[ports]]\nname = \"{name}\"\ndevargs = \"{dev}\"\nvlan = {vlan}\n")
    };
    let cfg = ConfigFile::new(&format!(
        "{}{}{}{}{}[[fdb]]\nport = \"b\"\nvlan = 10\nmac = \"02:00:00:00:00:02\"\n\
         [sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 1\npolling_interval = 0\n",
        access("a", &format!("net_pcap0,rx_pcap={}", a_in.display()), 10),
        access("b", "net_null0,no-rx=1", 10),
        access("c", "net_null1,no-rx=1", 10),
        access("d", &format!("net_pcap1,rx_pcap={}", d_in.display()), 20),
        access("e", "net_null2,no-rx=1", 20),
    ));
    let done = run_for(&cfg.args(), 2.0);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let datagrams = h.join().unwrap();
    assert!(done.status.success(), "{}", done.output);
    let mut d = Decoded::default();
    for dg in &datagrams {
        decode(dg, &mut d);
    }
    let outputs = |input: u32| {
        let mut o: Vec<u32> = d
            .flows
            .iter()
            .filter(|f| f.input == input)
            .map(|f| f.output)
            .collect();
        o.sort_unstable();
        o.dedup();
        o
    };
    assert_eq!(
        outputs(1),
        vec![2, 0x4000_0000 | 263, 0x8000_0002],
        "from a: to b alone, dropped as src_mac_invalid, flooded to b and c"
    );
    assert_eq!(
        outputs(4),
        vec![5],
        "from d: flooded, and it reached e alone"
    );
    assert_eq!(d.flows.len(), 40, "1-in-1: every frame sampled once");
}

/// The known mix of a switch with VLANs: what each port received and was given to send, by
/// destination kind, and what each VLAN carried, as the counters report it everywhere.
struct CastMix {
    /// Per port: rx unicast, multicast, broadcast, dropped; tx unicast, multicast, broadcast.
    ports: Vec<(&'static str, [u64; 7])>,
    /// Per VLAN: octets, unicast, multicast, broadcast, discards.
    vlans: Vec<(u16, [u64; 5])>,
}

#[test]
fn counters_split_frames_by_destination_per_port_and_per_vlan() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, h) = collector();
    let group = [0x01, 0x00, 0x5e, 0, 0, 1];
    let (ma, mc, md) = (mac(0x0a), mac(0x0c), mac(0x0d));
    // Access port a (VLAN 10): 30 to d, 7 to a group, 5 broadcasts, 4 to a host never seen,
    // 2 runts and 1 for its own segment.
    let mut a_in: Vec<Vec<u8>> = Vec::new();
    a_in.extend((0..30).map(|i| frame(md, ma, 100, i)));
    a_in.extend((0..7).map(|i| frame(group, ma, 80, 100 + i)));
    a_in.extend((0..5).map(|i| frame(BROADCAST, ma, 70, 200 + i)));
    a_in.extend((0..4).map(|i| frame(mac(0x77), ma, 90, 300 + i)));
    a_in.extend((0..2).map(|i| frame(md, ma, 10, 400 + i)));
    a_in.push(frame(mac(0xa1), ma, 64, 500));
    // Trunk b: in VLAN 20, 6 to c and 3 broadcasts; in VLAN 10, 2 to the group.
    let mut b_in: Vec<Vec<u8>> = Vec::new();
    b_in.extend((0..6).map(|i| tagged(&frame(mc, mac(0x0b), 120, 600 + i), 0, 20)));
    b_in.extend((0..3).map(|i| tagged(&frame(BROADCAST, mac(0x0b), 60, 700 + i), 0, 20)));
    b_in.extend((0..2).map(|i| tagged(&frame(group, mac(0x0b), 66, 800 + i), 0, 10)));
    let octets = |frames: &[Vec<u8>]| frames.iter().map(|f| f.len() as u64).sum::<u64>();
    let want = CastMix {
        ports: vec![
            ("a", [34, 7, 5, 3, 0, 2, 0]),
            ("b", [6, 2, 3, 0, 4, 7, 5]),
            ("c", [0, 0, 0, 0, 6, 0, 3]),
            ("d", [0, 0, 0, 0, 34, 9, 5]),
        ],
        vlans: vec![
            (10, [octets(&a_in[..46]) + octets(&b_in[9..]), 34, 9, 5, 1]),
            (20, [octets(&b_in[..9]), 6, 0, 3, 0]),
        ],
    };
    let pcap = |name: &str, frames: &[Vec<u8>]| {
        let p = dir.path().join(name);
        write_pcap(&p, frames);
        p.display().to_string()
    };
    let (a_rx, b_rx, none) = (pcap("a.pcap", &a_in), pcap("b.pcap", &b_in), pcap("e", &[]));
    let out = |name: &str| dir.path().join(name).display().to_string();
    let cfg = ConfigFile::new(&format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 0\npolling_interval = 1\n\n\
         [[fdb]]\nport = \"d\"\nvlan = 10\nmac = \"02:00:00:00:00:0d\"\n\n\
         [[fdb]]\nport = \"c\"\nvlan = 20\nmac = \"02:00:00:00:00:0c\"\n\n\
         [[fdb]]\nport = \"a\"\nvlan = 10\nmac = \"02:00:00:00:00:a1\"\n\n\
         [[ports]]\nname = \"a\"\ndevargs = \"net_pcap0,rx_pcap={a_rx},tx_pcap={}\"\n\
         vlan_mode = \"access\"\nvlan = 10\n\n\
         [[ports]]\nname = \"b\"\ndevargs = \"net_pcap1,rx_pcap={b_rx},tx_pcap={}\"\n\
         vlan_mode = \"trunk\"\ntrunks = [10, 20]\n\n\
         [[ports]]\nname = \"c\"\ndevargs = \"net_pcap2,rx_pcap={none},tx_pcap={}\"\n\
         vlan_mode = \"access\"\nvlan = 20\n\n\
         [[ports]]\nname = \"d\"\ndevargs = \"net_pcap3,rx_pcap={none},tx_pcap={}\"\n\
         vlan_mode = \"access\"\nvlan = 10\n",
        out("a-out"),
        out("b-out"),
        out("c-out"),
        out("d-out"),
    ));
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let mut args = cfg.args();
    args.extend(["--metrics".into(), metrics.clone()]);
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sw.port_counter("a", "rx_packets") < 49 || sw.port_counter("b", "rx_packets") < 11 {
        assert!(
            std::time::Instant::now() < deadline,
            "traffic never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two polls of every port and VLAN after the traffic.
    std::thread::sleep(Duration::from_millis(2500));
    let show = sw.ctl_json(&["port/show"]);
    let (code, text) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    let done = sw.stop();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut d = Decoded::default();
    for dg in h.join().unwrap() {
        decode(&dg, &mut d);
    }
    let stats = done.stats.unwrap();

    const FIELDS: [&str; 7] = [
        "rx_unicast",
        "rx_multicast",
        "rx_broadcast",
        "rx_dropped",
        "tx_unicast",
        "tx_multicast",
        "tx_broadcast",
    ];
    for (name, counts) in &want.ports {
        let shown = show["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *name)
            .unwrap();
        let if_index = shown["if_index"].as_u64().unwrap() as u32;
        for (field, &n) in FIELDS.iter().zip(counts) {
            assert_eq!(port_stat(&stats, name, field), n, "{name} {field} (stats)");
            assert_eq!(shown[field], n, "{name} {field} (port/show)");
            let series = format!("pmdswitch_port_{field}_total{{port=\"{name}\"}}");
            assert_eq!(
                metric_value(&text, &series),
                Some(n as f64),
                "{series} (/metrics)"
            );
        }
        // The last counter sample of the port: the same figures, and its name.
        let c = d
            .counters
            .iter()
            .rfind(|c| c.source == if_index)
            .unwrap_or_else(|| panic!("no counter sample of {name}"));
        assert_eq!(c.name.as_deref(), Some(*name));
        assert_eq!(
            (c.in_cast, c.in_discards),
            (
                [counts[0] as u32, counts[1] as u32, counts[2] as u32],
                counts[3] as u32
            ),
            "{name}: ifIn{{Ucast,Multicast,Broadcast}}Pkts, ifInDiscards"
        );
        assert_eq!(
            (c.out_cast, c.out_discards),
            ([counts[4] as u32, counts[5] as u32, counts[6] as u32], 0),
            "{name}: ifOut{{Ucast,Multicast,Broadcast}}Pkts, ifOutDiscards"
        );
    }
    let vlan_keys: Vec<&String> = stats["vlans"].as_object().unwrap().keys().collect();
    assert_eq!(
        vlan_keys,
        ["10", "20"],
        "only the VLANs that carried frames"
    );
    for (vlan, [octets, ucast, mcast, bcast, discards]) in &want.vlans {
        let v = &stats["vlans"][vlan.to_string()];
        assert_eq!(
            [
                &v["octets"],
                &v["unicast"],
                &v["multicast"],
                &v["broadcast"],
                &v["discards"]
            ],
            [octets, ucast, mcast, bcast, discards],
            "VLAN {vlan} (stats)"
        );
        let series = |m: &str| format!("pmdswitch_vlan_{m}_total{{vlan=\"{vlan}\"}}");
        assert_eq!(metric_value(&text, &series("octets")), Some(*octets as f64));
        assert_eq!(
            metric_value(&text, &series("discards")),
            Some(*discards as f64)
        );
        let s = d
            .vlans
            .iter()
            .rfind(|s| s.vlan == u32::from(*vlan))
            .unwrap_or_else(|| panic!("no counter sample of VLAN {vlan}"));
        assert_eq!(
            (s.octets, s.ucast, s.multicast, s.broadcast, s.discards),
            (
                *octets,
                *ucast as u32,
                *mcast as u32,
                *bcast as u32,
                *discards as u32
            ),
            "VLAN {vlan} (sFlow)"
        );
        assert!(s.sequence >= 2, "polled every interval");
    }
}

/// pmacct's sfacctd, a collector operators run, receives the switch's datagrams: its flow
/// aggregates (by MAC pair, VLAN and ports) count exactly the frames forwarded (sampling
/// 1-in-1), and its counter log holds the ports' and VLANs' counters as the switch reports.
#[test]
fn sfacctd_aggregates_match_what_the_switch_forwarded() {
    assert!(
        sh_ok("command -v sfacctd"),
        "sfacctd is needed for this test (scripts/setup.sh installs pmacct)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flows = dir.path().join("flows.json");
    let counters = dir.path().join("counters.json");
    let conf = dir.path().join("sfacctd.conf");
    // The README's collector configuration, on a test port and files.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("! sfacctd.conf")
        .expect("README shows an sfacctd configuration");
    let end = start + readme[start..].find("```").unwrap();
    let text = readme[start..end]
        .replace("6343", &port.to_string())
        .replace("/var/lib/pmacct/flows.json", &flows.display().to_string())
        .replace(
            "/var/lib/pmacct/counters.json",
            &counters.display().to_string(),
        );
    std::fs::write(
        &conf,
        format!("{text}logfile: {}/sfacctd.log\n", dir.path().display()),
    )
    .unwrap();
    let mut collector = std::process::Command::new("sfacctd")
        .arg("-f")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sh(&format!("ss -Hlun 'sport = :{port}'")).contains(&port.to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "sfacctd never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (ma, mb, mb2, mc) = (mac(0x0a), mac(0x0b), mac(0x1b), mac(0x0c));
    // IPv4: sfacctd accounts no other flow samples.
    let mut a_in: Vec<Vec<u8>> = (0..40).map(|i| ipv4_udp_frame(mb, ma, 100, i)).collect();
    a_in.extend((0..10).map(|i| ipv4_udp_frame(BROADCAST, ma, 100, 100 + i)));
    let b_in: Vec<Vec<u8>> = (0..25)
        .map(|i| tagged(&ipv4_udp_frame(mc, mb2, 100, 200 + i), 0, 20))
        .collect();
    let pcap = |name: &str, frames: &[Vec<u8>]| {
        let p = dir.path().join(name);
        write_pcap(&p, frames);
        p.display().to_string()
    };
    let (a_rx, b_rx, none) = (pcap("a.pcap", &a_in), pcap("b.pcap", &b_in), pcap("e", &[]));
    let cfg = ConfigFile::new(&format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 1\npolling_interval = 1\n\n\
         [[fdb]]\nport = \"b\"\nvlan = 10\nmac = \"02:00:00:00:00:0b\"\n\n\
         [[fdb]]\nport = \"c\"\nvlan = 20\nmac = \"02:00:00:00:00:0c\"\n\n\
         [[ports]]\nname = \"a\"\ndevargs = \"net_pcap0,rx_pcap={a_rx}\"\n\
         vlan_mode = \"access\"\nvlan = 10\n\n\
         [[ports]]\nname = \"b\"\ndevargs = \"net_pcap1,rx_pcap={b_rx},tx_pcap={}\"\n\
         vlan_mode = \"trunk\"\ntrunks = [10, 20]\n\n\
         [[ports]]\nname = \"c\"\ndevargs = \"net_pcap2,rx_pcap={none},tx_pcap={}\"\n\
         vlan_mode = \"access\"\nvlan = 20\n",
        dir.path().join("b-out").display(),
        dir.path().join("c-out").display(),
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sw.port_counter("a", "rx_packets") < 50 || sw.port_counter("b", "rx_packets") < 25 {
        assert!(
            std::time::Instant::now() < deadline,
            "traffic never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let done = sw.stop();
    // The print plugin writes every second; SIGINT makes sfacctd write the last and exit.
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(collector.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = collector.wait().unwrap();
    assert!(status.success(), "sfacctd exited {status}");
    let stats = done.stats.unwrap();
    let idx = |p: &str| u64::from(if_index(&stats, p));

    // Flows: purges append, so a key may be on several lines: summed.
    let mut got = std::collections::BTreeMap::<(String, String, u64, u64, u64), (u64, u64)>::new();
    let log = std::fs::read_to_string(dir.path().join("sfacctd.log")).unwrap_or_default();
    let flow_lines = std::fs::read_to_string(&flows).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; sfacctd's log:\n{log}\nthe switch's:\n{}\n{}",
            flows.display(),
            done.output,
            stats["sflow"]
        )
    });
    for line in flow_lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            v["mac_src"].as_str().unwrap().to_owned(),
            v["mac_dst"].as_str().unwrap().to_owned(),
            v["vlan"].as_u64().unwrap(),
            v["iface_in"].as_u64().unwrap(),
            v["iface_out"].as_u64().unwrap(),
        );
        let e = got.entry(key).or_default();
        e.0 += v["packets"].as_u64().unwrap();
        e.1 += v["bytes"].as_u64().unwrap();
    }
    let m = |x: [u8; 6]| {
        x.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    // The wire had 4 more bytes a frame (the FCS).
    let want = std::collections::BTreeMap::from([
        ((m(ma), m(mb), 10, idx("a"), idx("b")), (40, 40 * 104)),
        // A broadcast flooded to one port: that port is its output.
        (
            (m(ma), m(BROADCAST), 10, idx("a"), idx("b")),
            (10, 10 * 104),
        ),
        ((m(mb2), m(mc), 20, idx("b"), idx("c")), (25, 25 * 108)),
    ]);
    assert_eq!(got, want, "sfacctd's flows");

    // Counters: the last record of each kind per source.
    let mut generic = std::collections::HashMap::new();
    let mut vlans = std::collections::HashMap::new();
    for line in std::fs::read_to_string(&counters).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["sf_cnt_type"].as_str() {
            Some("sflow_cnt_generic") => {
                generic.insert(v["ifIndex"].as_u64().unwrap(), v);
            }
            Some("sflow_cnt_vlan") => {
                vlans.insert(v["vlan"].as_u64().unwrap(), v);
            }
            _ => {}
        }
    }
    for p in ["a", "b", "c"] {
        let g = &generic[&idx(p)];
        for (theirs, ours) in [
            ("ifInUcastPkts", "rx_unicast"),
            ("ifInMulticastPkts", "rx_multicast"),
            ("ifInBroadcastPkts", "rx_broadcast"),
            ("ifOutUcastPkts", "tx_unicast"),
            ("ifOutMulticastPkts", "tx_multicast"),
            ("ifOutBroadcastPkts", "tx_broadcast"),
        ] {
            assert_eq!(g[theirs], port_stat(&stats, p, ours), "{p}: {theirs}");
        }
    }
    assert_eq!(generic[&idx("a")]["ifInUcastPkts"], 40);
    assert_eq!(generic[&idx("a")]["ifInBroadcastPkts"], 10);
    assert_eq!(generic[&idx("c")]["ifOutUcastPkts"], 25);
    for vlan in [10u64, 20] {
        let ours = &stats["vlans"][vlan.to_string()];
        let theirs = &vlans[&vlan];
        for (t, o) in [
            ("octets", "octets"),
            ("ucastPkts", "unicast"),
            ("multicastPkts", "multicast"),
            ("broadcastPkts", "broadcast"),
            ("discards", "discards"),
        ] {
            assert_eq!(theirs[t], ours[o], "VLAN {vlan}: {t}");
        }
    }
    assert_eq!(vlans[&20]["ucastPkts"], 25);
}
