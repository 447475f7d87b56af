//! sFlow dropped-packet notifications (`sflow_drops.txt`, sample format 5) end to end: every
//! drop the switch makes is reported to a collector on loopback with its reason code, ports
//! and header, within the `[sflow] drop_notifications` rate; the rest are counted.
//!
//! Every switch here starts through the harness (`run_pcap_config`, `Switch`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pmdswitch_tests::sflow::{collector, decode, Decoded, DropNote};
use pmdswitch_tests::*;

/// Every datagram a collector got, decoded strictly.
fn decoded(datagrams: &[Vec<u8>]) -> Decoded {
    let mut d = Decoded::default();
    for dg in datagrams {
        assert!(dg.len() <= 1400, "datagram of {} bytes", dg.len());
        decode(dg, &mut d);
    }
    d
}

const SFLOW_HEAD: &str = "agent_address = \"192.0.2.1\"\nsampling_rate = 0\npolling_interval = 0\n";

#[test]
fn every_drop_reason_is_reported_with_its_code_ports_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, h) = collector();
    let src = mac(0xa0);
    let far = mac(0xb0); // never seen: floods
    let f = |dst: [u8; 6], src: [u8; 6], len: usize, tag: u16| frame(dst, src, len, tag);
    // On access port a (VLAN 10), one frame per reason decided there.
    let runt = f(far, src, 10, 0);
    let mut truncated = f(far, src, 12, 0);
    truncated.extend_from_slice(&[0x81, 0x00, 0x00]);
    let oversize = f(far, src, 1600, 2);
    let src_multicast = f(far, [0x03, 0, 0, 0, 0, 1], 64, 3);
    let reserved = f([0x01, 0x80, 0xc2, 0, 0, 0x0e], src, 64, 4);
    let same_segment = f(mac(0xa1), src, 64, 5);
    let tag_mismatch = tagged(&f(far, src, 64, 6), 0, 20);
    let link_down = f(mac(0xd1), src, 64, 7);
    // To ports that drop on the way out: one over its rate, one over its MTU.
    let over_rate: Vec<Vec<u8>> = (0..5).map(|i| f(mac(0xf1), src, 1000, 10 + i)).collect();
    let over_mtu = f(mac(0xf2), src, 1400, 20);
    let mut a_in = vec![
        runt.clone(),
        truncated.clone(),
        oversize.clone(),
        src_multicast.clone(),
        reserved.clone(),
        same_segment.clone(),
        tag_mismatch.clone(),
        link_down.clone(),
        over_mtu.clone(),
    ];
    a_in.extend(over_rate.iter().cloned());
    let vlan_filtered = tagged(&f(far, mac(0xb5), 64, 30), 0, 30);
    let not_allowed = f(far, mac(0xc2), 64, 31);
    let over_limit = f(far, mac(0xe2), 64, 33);
    let bpdu = f([0x01, 0x80, 0xc2, 0, 0, 0], mac(0xb6), 64, 34);
    let disabled = f(far, mac(0xb7), 64, 35);
    let storm: Vec<Vec<u8>> = (0..50)
        .map(|i| f(BROADCAST, mac(0xb8), 64, 40 + i))
        .collect();
    let policed: Vec<Vec<u8>> = (0..10).map(|i| f(far, mac(0xb9), 500, 200 + i)).collect();
    let alone = f(BROADCAST, mac(0xba), 64, 300);

    let vm_socket = dir.path().join("vm.sock");
    let head = format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\n{SFLOW_HEAD}drop_notifications = 10000\n\n\
         [[fdb]]\nport = \"a\"\nvlan = 10\nmac = \"02:00:00:00:00:a1\"\n\n\
         [[fdb]]\nport = \"vm\"\nvlan = 10\nmac = \"02:00:00:00:00:d1\"\n\n\
         [[fdb]]\nport = \"er\"\nvlan = 10\nmac = \"02:00:00:00:00:f1\"\n\n\
         [[fdb]]\nport = \"small\"\nvlan = 10\nmac = \"02:00:00:00:00:f2\"\n\n\
         [[ports]]\nname = \"vm\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n\
         vlan_mode = \"access\"\nvlan = 10\n",
        vm_socket.display()
    );
    let access = "vlan_mode = \"access\"\nvlan = 10";
    let ports = [
        PcapPort::new("a", access, a_in),
        PcapPort::new(
            "t",
            "vlan_mode = \"trunk\"\ntrunks = [10, 20]",
            vec![vlan_filtered.clone()],
        ),
        PcapPort::new(
            "sec",
            &format!("{access}\nallowed_macs = [\"02:00:00:00:00:c1\"]"),
            vec![not_allowed.clone()],
        ),
        PcapPort::new(
            "lim",
            &format!("{access}\nmax_macs = 1"),
            vec![f(far, mac(0xe1), 64, 32), over_limit.clone()],
        ),
        PcapPort::new(
            "g",
            &format!("{access}\nbpdu_guard = true"),
            vec![bpdu.clone()],
        ),
        PcapPort::new(
            "off",
            &format!("{access}\nenabled = false"),
            vec![disabled.clone()],
        ),
        PcapPort::new(
            "st",
            &format!("{access}\nstorm_control = {{ broadcast_pps = 10 }}"),
            storm.clone(),
        ),
        PcapPort::new(
            "pol",
            &format!("{access}\ningress_policing_rate = 8000\ningress_policing_burst = 1000"),
            policed.clone(),
        ),
        PcapPort::new(
            "solo",
            "vlan_mode = \"access\"\nvlan = 99",
            vec![alone.clone()],
        ),
        PcapPort::new(
            "er",
            &format!("{access}\negress_rate = 8000\negress_burst = 1000"),
            vec![],
        ),
        PcapPort::new("small", &format!("{access}\nmtu = 1000"), vec![]),
    ];
    let r = run_pcap_config(&head, &ports, 2.0);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let d = decoded(&h.join().unwrap());
    let idx = |p: &str| if_index(&r.stats, p);

    // Every frame the switch dropped was reported: none held back at this rate.
    let dropped: u64 = r.stats["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        d.drops.len() as u64,
        dropped,
        "one notification per drop: {}",
        r.stats["drops"]
    );
    assert_eq!(r.stats["sflow"]["drop_notifications"], dropped);
    assert_eq!(r.stats["sflow"]["drop_notifications_limited"], 0);
    assert!(d.flows.is_empty(), "sampling is off");
    for n in &d.drops {
        assert_eq!((n.source_class, n.drops, n.stripped), (0, 0, 4), "{n:?}");
        assert_eq!(n.source, n.input, "the ingress port is the source: {n:?}");
        assert_eq!(
            n.header.len(),
            (n.frame_length as usize - 4).min(128),
            "128 header bytes, or the whole frame: {n:?}"
        );
    }
    // The same source numbers its notifications 1, 2, 3...
    for p in ["a", "st", "pol"] {
        let seqs: Vec<u32> = d
            .drops
            .iter()
            .filter(|n| n.source == idx(p))
            .map(|n| n.sequence)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>(), "{p}");
    }

    let find = |what: &str, code: u32, input: &str, output: Option<&str>, frames: &[&Vec<u8>]| {
        let want_out = output.map_or(0, idx);
        let hit = d.drops.iter().find(|n: &&DropNote| {
            n.reason == code
                && n.input == idx(input)
                && n.output == want_out
                && frames.iter().any(|fr| {
                    n.frame_length as usize == fr.len() + 4
                        && n.header[..] == fr[..fr.len().min(128)]
                })
        });
        assert!(
            hit.is_some(),
            "{what}: no notification with reason {code}, input {input}, output {output:?} \
             and the frame's header among:\n{:#?}",
            d.drops
                .iter()
                .map(|n| (n.reason, n.input, n.output, n.frame_length))
                .collect::<Vec<_>>()
        );
    };
    find("runt", 324, "a", None, &[&runt]);
    find("truncated VLAN tag", 309, "a", None, &[&truncated]);
    find("over the MTU", 262, "a", None, &[&oversize]);
    find("multicast source", 263, "a", None, &[&src_multicast]);
    find("reserved destination", 294, "a", None, &[&reserved]);
    find("same segment", 268, "a", Some("a"), &[&same_segment]);
    find("tag on an access port", 264, "a", None, &[&tag_mismatch]);
    find("VM without its guest", 267, "a", None, &[&link_down]);
    find(
        "over the egress rate",
        261,
        "a",
        Some("er"),
        &over_rate.iter().collect::<Vec<_>>(),
    );
    find("over the egress MTU", 262, "a", Some("small"), &[&over_mtu]);
    find("VLAN not on the trunk", 265, "t", None, &[&vlan_filtered]);
    find("source not allowed", 258, "sec", None, &[&not_allowed]);
    find("over max_macs", 258, "lim", None, &[&over_limit]);
    find("BPDU guard", 266, "g", None, &[&bpdu]);
    find("port disabled", 266, "off", None, &[&disabled]);
    find(
        "storm control",
        261,
        "st",
        None,
        &storm.iter().collect::<Vec<_>>(),
    );
    find(
        "ingress policing",
        261,
        "pol",
        None,
        &policed.iter().collect::<Vec<_>>(),
    );
    find("no other port in the VLAN", 267, "solo", None, &[&alone]);
}

#[test]
fn a_storm_of_drops_is_rate_limited_and_the_rest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, h) = collector();
    // 5000 runts at once, then, in a later second, one more.
    let runts: Vec<Vec<u8>> = (0..5000u16).map(|i| frame(mac(1), mac(2), 12, i)).collect();
    let storm = dir.path().join("storm.pcap");
    write_pcap(&storm, &runts);
    let one = dir.path().join("one.pcap");
    write_pcap(&one, &[frame(mac(1), mac(3), 13, 9999)]);
    let cfg = ConfigFile::new(&format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\n{SFLOW_HEAD}drop_notifications = 50\n\n\
         [[ports]]\nname = \"storm\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[ports]]\nname = \"sink\"\ndevargs = \"net_null0,no-rx=1\"\n",
        storm.display()
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.port_counter("storm", "rx_packets") < 5000 {
        assert!(Instant::now() < deadline, "the storm never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new second: the budget is back.
    std::thread::sleep(Duration::from_millis(1100));
    let r = sw.appctl(&[
        "port/add",
        "late",
        &format!("net_pcap1,rx_pcap={}", one.display()),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.port_counter("late", "rx_packets") < 1 {
        assert!(Instant::now() < deadline, "the last runt never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let done = sw.stop();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let d = decoded(&h.join().unwrap());
    let stats = done.stats.unwrap();
    assert_eq!(stats["drops"]["runt"], 5001);

    // The storm came within one second of the switch's and the agent's clocks (it takes
    // well under a millisecond): 50 reported, no more (100 if it straddled a second).
    let storm_idx = if_index(&stats, "storm");
    let stormy: Vec<&DropNote> = d.drops.iter().filter(|n| n.source == storm_idx).collect();
    assert!(
        (50..=100).contains(&stormy.len()),
        "{} notifications of the storm",
        stormy.len()
    );
    let sent = stormy.len() as u32 + 1;
    assert_eq!(stats["sflow"]["drop_notifications"], sent);
    let late: Vec<&DropNote> = d
        .drops
        .iter()
        .filter(|n| n.source == if_index(&stats, "late"))
        .collect();
    assert_eq!(late.len(), 1, "the later drop is reported");
    // It says how many drops went unreported before it: all the storm's but those sent.
    assert_eq!(late[0].drops, 5001 - sent, "{:?}", late[0]);
    assert_eq!((late[0].reason, late[0].frame_length), (324, 17));
    // Along the way the count of the unreported only grows.
    assert!(
        stormy.windows(2).all(|w| w[0].drops <= w[1].drops),
        "drops never goes back"
    );
    assert!(stormy.iter().all(|n| n.drops <= 5000));
}

/// A guest that stops taking frames: its ring fills, the rest are dropped at the VM port's
/// queue (tx_full, sFlow 259 no_buffer_space), reported with the VM port as output.
#[test]
fn a_full_guest_ring_is_reported_as_no_buffer_space() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, h) = collector();
    let guest = mac(0x61);
    let frames: Vec<Vec<u8>> = (0..3000u16)
        .map(|i| frame(guest, mac(0x62), 100, i))
        .collect();
    let src = dir.path().join("src.pcap");
    write_pcap(&src, &frames);
    let sock = dir.path().join("vm.sock");
    let vm = format!(
        "[[ports]]\nname = \"vm\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n",
        sock.display()
    );
    let head = format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\n{SFLOW_HEAD}drop_notifications = 10000\n\n\
         [[fdb]]\nport = \"vm\"\nmac = \"02:00:00:00:00:61\"\n\n{vm}"
    );
    let cfg = ConfigFile::new(&head);
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    // The guest: its queue set up and started, never read (testpmd not forwarding).
    let t = Testpmd::start(
        &[format!(
            "net_virtio_user0,path={},queues=1,mac=02:00:00:00:00:61",
            sock.display()
        )],
        &["--forward-mode=io", "--no-lsc-interrupt"],
    );
    sw.wait_for_log("port vm: guest connected", Duration::from_secs(10));
    std::fs::write(
        cfg.path(),
        format!(
            "{head}[[ports]]\nname = \"src\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n",
            src.display()
        ),
    )
    .unwrap();
    assert_eq!(sw.appctl(&["config/reload"]).code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.port_counter("src", "rx_packets") < 3000 {
        assert!(Instant::now() < deadline, "the source never sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let done = sw.stop();
    t.kill();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let d = decoded(&h.join().unwrap());
    let stats = done.stats.unwrap();
    let full = stats["drops"]["tx_full"].as_u64().unwrap();
    assert!(
        full > 0,
        "the guest's ring held them all: {}",
        stats["drops"]
    );
    let (src_idx, vm_idx) = (if_index(&stats, "src"), if_index(&stats, "vm"));
    let notes: Vec<&DropNote> = d.drops.iter().filter(|n| n.reason == 259).collect();
    // The drop ring holds fewer records than one pcap's worth of refusals; those past it are
    // counted for the next notification (the storm test checks that count).
    assert!(!notes.is_empty(), "no notification of {full} tx_full drops");
    let unreported = notes.iter().map(|n| u64::from(n.drops)).max().unwrap_or(0);
    assert!(
        notes.len() as u64 + unreported <= full,
        "{} + {unreported} > {full}",
        notes.len()
    );
    for n in notes {
        assert_eq!(
            (n.source, n.input, n.output),
            (src_idx, src_idx, vm_idx),
            "{n:?}"
        );
        assert!(frames.iter().any(|f| n.header[..] == f[..]), "{n:?}");
    }
}
