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
