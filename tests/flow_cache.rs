//! The worker's flow cache (issue 3): frames of a conversation the worker has decided before
//! leave by the cached decision, and leave exactly as the full path would send them: pushed,
//! popped, rewritten or kept tags included.
//!
//! Runs on net_pcap ports with static entries for every host, so every frame is a unicast from
//! the first. One worker reads each port's pcap in bursts of 32: a conversation's first burst
//! takes the full path (and fills the cache), its later bursts the cache.
//!
//! Every switch here starts through the harness (`run_pcap_config`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::sync::atomic::Ordering;

use pmdswitch_tests::sflow::{collector, decode, Decoded};
use pmdswitch_tests::*;

const ACCESS10: &str = "vlan_mode = \"access\"\nvlan = 10";
const TRUNK: &str = "vlan_mode = \"trunk\"\ntrunks = [10, 20]";
/// Frames per conversation: seven bursts.
const N: u16 = 200;

fn static_entry(port: &str, vlan: u16, host: u8) -> String {
    format!("[[fdb]]\nport = \"{port}\"\nvlan = {vlan}\nmac = \"02:00:00:00:00:{host:02x}\"\n")
}

#[test]
fn cached_conversations_leave_exactly_as_the_full_path_sends_them() {
    // Hosts: A (access port a, VLAN 10), P (access port p, sends priority-tagged frames),
    // T (trunk t, VLAN 10), U (trunk u, VLAN 20) and W (trunk t, VLAN 20).
    let (a, p, t, u, w) = (mac(0x0a), mac(0x0b), mac(0x1e), mac(0x2e), mac(0x3e));
    let head = [
        static_entry("a", 10, 0x0a),
        static_entry("p", 10, 0x0b),
        static_entry("t", 10, 0x1e),
        static_entry("u", 20, 0x2e),
        static_entry("t", 20, 0x3e),
    ]
    .concat();
    let conv = |dst, src, base: u16| -> Vec<Vec<u8>> {
        (0..N).map(|i| frame(dst, src, 100, base + i)).collect()
    };
    // A -> T: untagged in, a tag pushed (VLAN 10, priority 0).
    let a_to_t = conv(t, a, 0);
    // P -> T: priority-tagged (PCP 5, VID 0) in, the tag rewritten to VLAN 10 with PCP 5.
    let p_to_t = conv(t, p, 1000);
    // T -> A: tagged VLAN 10 PCP 3 in, popped.
    let t_to_a = conv(a, t, 2000);
    // U -> W: tagged VLAN 20 PCP 6 from trunk to trunk, unchanged.
    let u_to_w = conv(w, u, 3000);
    let ports = [
        PcapPort::new("a", ACCESS10, a_to_t.clone()),
        PcapPort::new(
            "p",
            ACCESS10,
            p_to_t.iter().map(|f| tagged(f, 5, 0)).collect(),
        ),
        PcapPort::new(
            "t",
            TRUNK,
            t_to_a.iter().map(|f| tagged(f, 3, 10)).collect(),
        ),
        PcapPort::new(
            "u",
            TRUNK,
            u_to_w.iter().map(|f| tagged(f, 6, 20)).collect(),
        ),
    ];
    let r = run_pcap_config(&head, &ports, 2.0);

    let mut to_t: Vec<Vec<u8>> = a_to_t.iter().map(|f| tagged(f, 0, 10)).collect();
    to_t.extend(p_to_t.iter().map(|f| tagged(f, 5, 10)));
    to_t.extend(u_to_w.iter().map(|f| tagged(f, 6, 20)));
    assert_frames("t (trunk)", r.out("t"), &to_t);
    assert_frames("a (access 10)", r.out("a"), &t_to_a);
    assert_frames("p (access 10)", r.out("p"), &[]);
    assert_frames("u (trunk)", r.out("u"), &[]);
    // Each port's frames reach their port in the order they came.
    let tagged_from = |src: [u8; 6]| -> Vec<Vec<u8>> {
        r.out("t")
            .iter()
            .filter(|f| f[6..12] == src)
            .cloned()
            .collect()
    };
    assert_eq!(
        tagged_from(a),
        a_to_t.iter().map(|f| tagged(f, 0, 10)).collect::<Vec<_>>()
    );
    assert_eq!(
        tagged_from(p),
        p_to_t.iter().map(|f| tagged(f, 5, 10)).collect::<Vec<_>>()
    );
    assert_eq!(
        tagged_from(u),
        u_to_w.iter().map(|f| tagged(f, 6, 20)).collect::<Vec<_>>()
    );
    assert_eq!(r.out("a"), &t_to_a[..]);

    // The cache decided most of them: all but each conversation's first burst, and at most
    // one more burst each if the table's clock ticked during the run.
    let w0 = &r.stats["workers"][0];
    let hits = w0["flow_cache_hits"].as_u64().expect("flow_cache_hits");
    let frames = 4 * u64::from(N);
    assert!(
        hits >= frames - 4 * 64 && hits <= frames - 4,
        "{hits} of {frames} frames by the cache"
    );
    assert_eq!(w0["unicast"].as_u64(), Some(frames));
    assert_eq!(r.stats["fdb"]["learned"].as_u64(), Some(0));
    // Only the frames the cache did not decide read the MAC table: their source and their
    // destination, each found in the first line of its first bucket in a nearly empty table.
    let lookups = w0["fdb_lookups"].as_u64().expect("fdb_lookups");
    assert_eq!(lookups, 2 * (frames - hits), "{w0}");
    assert_eq!(w0["fdb_line_reads"].as_u64(), Some(lookups), "{w0}");
    assert_eq!(w0["fdb_lines_per_lookup"].as_f64(), Some(1.0), "{w0}");
}

#[test]
fn a_move_within_a_burst_turns_the_decisions_cached_for_the_frames_after_it() {
    // X lives on port a. Y, on port c, talks to X: c's first burst (32 frames) takes the full
    // path and fills the cache. In c's second burst X turns up on c itself: Y's frames after
    // that are for a host on their own segment and are dropped, not sent to X's old port.
    let (x, y) = (mac(0x0a), mac(0x0c));
    let mut from_c: Vec<Vec<u8>> = (0..33).map(|i| frame(x, y, 100, i)).collect();
    from_c.push(frame(y, x, 100, 100)); // X moves to c (and Y is on c: same segment)
    from_c.extend((0..5).map(|i| frame(x, y, 100, 200 + i)));
    let ports = [
        PcapPort::new("a", ACCESS10, vec![frame(BROADCAST, x, 100, 1)]),
        PcapPort::new("b", ACCESS10, vec![]),
        PcapPort::new("c", ACCESS10, from_c.clone()),
    ];
    // Sampled 1-in-1: the frames the cache had decided before the move are sampled once, as
    // the full path then decides them.
    let (port, stop, h) = collector();
    let head = format!(
        "[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 1\npolling_interval = 0\n"
    );
    let r = run_pcap_config(&head, &ports, 2.0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        describe(r.out("a")),
        describe(&from_c[..33]),
        "Y's frames before the move only, in order"
    );
    assert_frames("b", r.out("b"), &[frame(BROADCAST, x, 100, 1)]);
    assert_eq!(r.drops("same_segment"), 6);
    assert_eq!(r.stats["fdb"]["moved"].as_u64(), Some(1));
    // Every frame counted once in its VLAN: 33 to X and a broadcast forwarded, 6 dropped.
    let v = &r.stats["vlans"]["10"];
    assert_eq!(
        [&v["octets"], &v["unicast"], &v["broadcast"], &v["discards"]],
        [3400, 33, 1, 6].map(serde_json::Value::from).each_ref(),
        "VLAN 10: {v}"
    );
    let mut d = Decoded::default();
    for dg in &h.join().unwrap() {
        decode(dg, &mut d);
    }
    let c = if_index(&r.stats, "c");
    let from_c_samples: Vec<u32> = d
        .flows
        .iter()
        .filter(|f| f.input == c)
        .map(|f| f.output)
        .collect();
    assert_eq!(from_c_samples.len(), from_c.len(), "one sample per frame");
    let dropped = from_c_samples
        .iter()
        .filter(|&&o| o == 0x4000_0000 | 268)
        .count();
    assert_eq!(dropped, 6, "port_loopback_filter: {from_c_samples:x?}");
}

/// sFlow samples the frames the cache decides without sending them down the full path: at
/// 1-in-1 every frame of a cached conversation is sampled once, reported as the full path
/// reports it (egress port, VLAN, priority, header, pool), and still leaves by the cache.
#[test]
fn sampled_frames_keep_the_cached_path_and_are_reported_as_the_full_path_would() {
    let (a, t) = (mac(0x0a), mac(0x1e));
    let (port, stop, h) = collector();
    let head = format!(
        "{}{}[sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 1\npolling_interval = 0\n",
        static_entry("a", 10, 0x0a),
        static_entry("t", 10, 0x1e),
    );
    // T -> A: tagged VLAN 10 PCP 5 in on the trunk, popped on the access port.
    let t_to_a: Vec<Vec<u8>> = (0..N).map(|i| frame(a, t, 100, i)).collect();
    let ports = [
        PcapPort::new("a", ACCESS10, vec![]),
        PcapPort::new(
            "t",
            TRUNK,
            t_to_a.iter().map(|f| tagged(f, 5, 10)).collect(),
        ),
    ];
    let r = run_pcap_config(&head, &ports, 2.0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut d = Decoded::default();
    for dg in &h.join().unwrap() {
        decode(dg, &mut d);
    }
    assert_frames("a (access 10)", r.out("a"), &t_to_a);
    let w0 = &r.stats["workers"][0];
    let hits = w0["flow_cache_hits"].as_u64().expect("flow_cache_hits");
    assert!(
        hits >= u64::from(N) - 64,
        "{hits} of {N} frames by the cache: sampling sent them down the full path"
    );
    let index = |name: &str| if_index(&r.stats, name);
    let flows: Vec<_> = d.flows.iter().filter(|f| f.input == index("t")).collect();
    assert_eq!(
        flows.len(),
        usize::from(N),
        "1-in-1: every frame sampled once"
    );
    for f in &flows {
        assert_eq!(f.output, index("a"), "{f:?}");
        assert_eq!(
            (f.src_vlan, f.src_priority, f.dst),
            (10, 5, (10, 5)),
            "{f:?}"
        );
        // 104 bytes on the wire with the FCS sFlow counts.
        assert_eq!((f.frame_length, f.stripped), (108, 4), "{f:?}");
    }
    let mut pools: Vec<u32> = flows.iter().map(|f| f.pool).collect();
    pools.sort_unstable();
    assert_eq!(
        pools,
        (1..=u32::from(N)).collect::<Vec<_>>(),
        "one sample per frame seen"
    );
    // Each sample's header is its frame, in the order the frames came.
    let mut by_pool: Vec<_> = flows.iter().map(|f| (f.pool, &f.header)).collect();
    by_pool.sort_unstable();
    for ((_, header), sent) in by_pool.iter().zip(&t_to_a) {
        assert_eq!(**header, tagged(sent, 5, 10));
    }
}
