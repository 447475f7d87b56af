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
        PcapPort::new("a", "", vec![frame(BROADCAST, x, 100, 1)]),
        PcapPort::new("b", "", vec![]),
        PcapPort::new("c", "", from_c.clone()),
    ];
    let r = run_pcap_config("", &ports, 2.0);
    assert_eq!(
        describe(r.out("a")),
        describe(&from_c[..33]),
        "Y's frames before the move only, in order"
    );
    assert_frames("b", r.out("b"), &[frame(BROADCAST, x, 100, 1)]);
    assert_eq!(r.drops("same_segment"), 6);
    assert_eq!(r.stats["fdb"]["moved"].as_u64(), Some(1));
}
