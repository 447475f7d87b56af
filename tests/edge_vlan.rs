//! IEEE 802.1Q VLANs (issue 7): access and trunk ports, tag push, pop and keep at egress,
//! ingress filtering, flooding and learning per VLAN.
//!
//! The frame-exact cases run on net_pcap ports (one worker polls the ports in configuration
//! order, so every port's first burst is switched before the next port's). The namespace cases
//! run hosts on net_tap ports; the trunk side of a tap is written and read with raw packet
//! sockets (`tests/rawsock.py`), since this kernel has no 802.1Q sub-interfaces.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::process::Command;
use std::time::Duration;

use pmdswitch_tests::*;

const ACCESS10: &str = "vlan_mode = \"access\"\nvlan = 10";
const ACCESS20: &str = "vlan_mode = \"access\"\nvlan = 20";

/// A 100-byte frame (long enough that popping a tag leaves no runt).
fn f(dst: [u8; 6], src: [u8; 6], tag: u16) -> Vec<u8> {
    frame(dst, src, 100, tag)
}

#[test]
fn tags_are_pushed_popped_kept_and_filtered_by_port_mode() {
    let (a, c, t, n, l) = (mac(0x0a), mac(0x0c), mac(0x1e), mac(0x2e), mac(0x3e));
    // Into access port a10 (VLAN 10).
    let f1 = f(BROADCAST, a, 1);
    let f2 = f(BROADCAST, a, 2); // arrives priority-tagged (VID 0): VLAN 10
    let f3 = f(BROADCAST, a, 3); // arrives tagged VID 20: dropped
    let f3b = f(BROADCAST, a, 33); // arrives tagged VID 10: dropped too (access takes no tags)
                                   // Into access port a20 (VLAN 20).
    let f4 = f(BROADCAST, c, 4);
    // Into trunk t (VLANs 10, 20, 30; no native VLAN).
    let f5 = f(BROADCAST, t, 5); // VID 10 PCP 3
    let f6 = f(BROADCAST, t, 6); // VID 20 PCP 6
    let f7 = f(BROADCAST, t, 7); // VID 30 PCP 1
    let f8 = f(BROADCAST, t, 8); // VID 40: not carried
    let f9 = f(BROADCAST, t, 9); // untagged: no native VLAN
                                 // Into trunk n (VLANs 10, 30; native 30).
    let f10 = f(BROADCAST, n, 10); // untagged: VLAN 30
    let f11 = f(BROADCAST, n, 11); // VID 20: not carried
                                   // Into the default port (trunk of every VLAN, untagged = VLAN 0).
    let f13 = f(BROADCAST, l, 13); // untagged: VLAN 0, which no other port carries
    let f14 = f(BROADCAST, l, 14); // VID 10 PCP 4

    let ports = [
        PcapPort::new(
            "a10",
            ACCESS10,
            vec![
                f1.clone(),
                tagged(&f2, 0, 0),
                tagged(&f3, 0, 20),
                tagged(&f3b, 0, 10),
            ],
        ),
        PcapPort::new("b10", ACCESS10, vec![]),
        PcapPort::new("a20", ACCESS20, vec![f4.clone()]),
        PcapPort::new(
            "t",
            "vlan_mode = \"trunk\"\ntrunks = [10, 20, 30]",
            vec![
                tagged(&f5, 3, 10),
                tagged(&f6, 6, 20),
                tagged(&f7, 1, 30),
                tagged(&f8, 0, 40),
                f9.clone(),
            ],
        ),
        PcapPort::new(
            "n",
            "vlan_mode = \"trunk\"\ntrunks = [10, 30]\nnative_vlan = 30",
            vec![f10.clone(), tagged(&f11, 0, 20)],
        ),
        PcapPort::new("all", "", vec![f13.clone(), tagged(&f14, 4, 10)]),
    ];
    let r = run_pcap_config("", &ports, 2.0);

    // Access ports: untagged only, their own VLAN only (tags popped).
    assert_frames(
        "b10 (access 10)",
        r.out("b10"),
        &[f1.clone(), f2.clone(), f5.clone(), f14.clone()],
    );
    assert_frames("a10 (access 10)", r.out("a10"), &[f5.clone(), f14.clone()]);
    assert_frames("a20 (access 20)", r.out("a20"), std::slice::from_ref(&f6));
    // Trunk without a native VLAN: every frame tagged with its VLAN, PCP kept.
    assert_frames(
        "t (trunk 10,20,30)",
        r.out("t"),
        &[
            tagged(&f1, 0, 10),
            tagged(&f2, 0, 10),
            tagged(&f4, 0, 20),
            tagged(&f10, 0, 30),
            tagged(&f14, 4, 10),
        ],
    );
    // Trunk with native VLAN 30: VLAN 10 tagged, VLAN 30 untagged, VLAN 20 never.
    assert_frames(
        "n (trunk 10,30 native 30)",
        r.out("n"),
        &[
            tagged(&f1, 0, 10),
            tagged(&f2, 0, 10),
            tagged(&f5, 3, 10),
            f7.clone(),
            tagged(&f14, 4, 10),
        ],
    );
    // The default port carries every VLAN: tagged ones keep their tag and PCP.
    assert_frames(
        "all (default trunk)",
        r.out("all"),
        &[
            tagged(&f1, 0, 10),
            tagged(&f2, 0, 10),
            tagged(&f4, 0, 20),
            tagged(&f5, 3, 10),
            tagged(&f6, 6, 20),
            tagged(&f7, 1, 30),
            tagged(&f10, 0, 30),
        ],
    );

    assert_eq!(
        r.drops("vlan_tag_mismatch"),
        2,
        "drops: {}",
        r.stats["drops"]
    );
    assert_eq!(
        r.drops("ingress_vlan_filter"),
        3,
        "drops: {}",
        r.stats["drops"]
    );
    assert_eq!(port_stat(&r.stats, "a10", "rx_dropped"), 2);
    assert_eq!(port_stat(&r.stats, "t", "rx_dropped"), 2);
    assert_eq!(port_stat(&r.stats, "n", "rx_dropped"), 1);
    // Every frame dropped on the way in is counted under one reason (f13, in VLAN 0 which
    // no other port carries, under one of its own).
    let by_reason: u64 = r.stats["drops"]
        .as_object()
        .expect("drops")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    let rx_dropped: u64 = ["a10", "b10", "a20", "t", "n", "all"]
        .iter()
        .map(|p| port_stat(&r.stats, p, "rx_dropped"))
        .sum();
    assert_eq!(by_reason, 6, "drops: {}", r.stats["drops"]);
    assert_eq!(rx_dropped, by_reason, "drops: {}", r.stats["drops"]);
}

#[test]
fn unicast_and_flooding_stay_in_their_vlan_and_learning_is_per_vlan() {
    // The same station address M in VLAN 10 (on a10) and in VLAN 20 (on a20); X on trunk t
    // in both.
    let (m, x, y, z, u) = (mac(0x4d), mac(0x58), mac(0x59), mac(0x5a), mac(0x55));
    let (c, w) = (mac(0x5b), mac(0x5c));
    let mcast = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let f1 = f(BROADCAST, m, 1); // a10: M in VLAN 10
    let f8 = f(m, z, 8); // b10: to M in VLAN 10
    let f2 = f(BROADCAST, m, 2); // a20: M in VLAN 20 (not a move)
    let f7 = f(m, y, 7); // b20: to M in VLAN 20
    let f3 = f(m, x, 3); // t, VID 10: to M in VLAN 10
    let f4 = f(m, x, 4); // t, VID 20: to M in VLAN 20
    let f5 = f(u, x, 5); // t, VID 10: unknown unicast, flooded in VLAN 10 only
    let f6 = f(mcast, x, 6); // t, VID 20: multicast, flooded in VLAN 20 only
    let f9 = f(x, c, 9); // c10 (access 10): to X, known on t: pushed as VID 10
    let f10 = f(x, w, 10); // n, VID 10 PCP 2: to X on t: kept, PCP too
    let f11 = f(x, w, 11); // n, untagged (native 20): to X on t: pushed as VID 20
    let ports = [
        PcapPort::new("a10", ACCESS10, vec![f1.clone()]),
        PcapPort::new("b10", ACCESS10, vec![f8.clone()]),
        PcapPort::new("a20", ACCESS20, vec![f2.clone()]),
        PcapPort::new("b20", ACCESS20, vec![f7.clone()]),
        PcapPort::new(
            "t",
            "vlan_mode = \"trunk\"\ntrunks = [10, 20]",
            vec![
                tagged(&f3, 0, 10),
                tagged(&f4, 0, 20),
                tagged(&f5, 0, 10),
                tagged(&f6, 0, 20),
            ],
        ),
        PcapPort::new("c10", ACCESS10, vec![f9.clone()]),
        PcapPort::new(
            "n",
            "vlan_mode = \"trunk\"\ntrunks = [10, 20]\nnative_vlan = 20",
            vec![tagged(&f10, 2, 10), f11.clone()],
        ),
    ];
    let r = run_pcap_config("", &ports, 2.0);
    assert_frames("a10", r.out("a10"), &[f8.clone(), f3.clone(), f5.clone()]);
    assert_frames("b10", r.out("b10"), &[f1.clone(), f5.clone()]);
    assert_frames("c10", r.out("c10"), &[f1.clone(), f5.clone()]);
    assert_frames("a20", r.out("a20"), &[f7.clone(), f4.clone(), f6.clone()]);
    assert_frames("b20", r.out("b20"), &[f2.clone(), f6.clone()]);
    assert_frames(
        "t",
        r.out("t"),
        &[
            tagged(&f1, 0, 10),
            tagged(&f2, 0, 20),
            tagged(&f9, 0, 10),
            tagged(&f10, 2, 10),
            tagged(&f11, 0, 20),
        ],
    );
    assert_frames(
        "n",
        r.out("n"),
        &[
            tagged(&f1, 0, 10),
            f2.clone(),
            tagged(&f5, 0, 10),
            f6.clone(),
        ],
    );
    let fdb = &r.stats["fdb"];
    assert_eq!(fdb["moved"], 0, "M in VLAN 20 is not M in VLAN 10: {fdb}");
    // M@10, M@20, Z@10, Y@20, X@10, X@20, C@10, W@10, W@20.
    assert_eq!(fdb["entries"], 9, "{fdb}");
}

/// `f` zero-padded to the Ethernet minimum (60 bytes without FCS), as a NIC's MAC pads it.
fn padded(f: &[u8]) -> Vec<u8> {
    let mut p = f.to_vec();
    if p.len() < 60 {
        p.resize(60, 0);
    }
    p
}

/// Every way a frame gets shorter on the way out pads it back to 60 bytes with zeros, and a
/// frame that came in short leaves at 60 too: a priority tag (PCP 0 and 5) removed on an
/// access port, a VLAN tag popped on an access port and on a trunk's native VLAN, the two
/// differently tagged copies of a flood, the flow cache's rewrite of a known unicast, and the
/// VID 0 tag removed on a VLAN-unaware port.
#[test]
fn frames_leave_at_least_60_bytes_long_whatever_the_tagging_does() {
    let (a, b, t) = (mac(0x0a), mac(0x0b), mac(0x1e));
    let f1 = frame(BROADCAST, a, 56, 1); // in on a10 priority-tagged, PCP 0: 60 bytes
    let f2 = frame(BROADCAST, a, 56, 2); // the same with PCP 5
    let f3 = frame(BROADCAST, a, 42, 3); // an ARP-sized runt, untagged
    let f4 = frame(b, a, 42, 4); // a runt unicast to b (static on b10): as is, but short
    let f5 = frame(BROADCAST, t, 56, 5); // in on t tagged VID 10: 60 bytes, popped for a10/b10
    let f6 = frame(BROADCAST, t, 56, 6); // in on t2 tagged VID 30: popped for t (native) and n30
                                         // In on t tagged VID 10, to b: a known unicast the flow cache takes after the first burst.
    let known: Vec<Vec<u8>> = (0..256u16).map(|i| frame(b, t, 56, 100 + i)).collect();
    let mut from_t = vec![tagged(&f5, 3, 10)];
    from_t.extend(known.iter().map(|k| tagged(k, 2, 10)));
    let ports = [
        PcapPort::new(
            "a10",
            ACCESS10,
            vec![tagged(&f1, 0, 0), tagged(&f2, 5, 0), f3.clone(), f4.clone()],
        ),
        PcapPort::new("b10", ACCESS10, vec![]),
        PcapPort::new(
            "t",
            "vlan_mode = \"trunk\"\ntrunks = [10]\nnative_vlan = 30",
            from_t,
        ),
        PcapPort::new("n30", "vlan_mode = \"access\"\nvlan = 30", vec![]),
        PcapPort::new(
            "t2",
            "vlan_mode = \"trunk\"\ntrunks = [30]",
            vec![tagged(&f6, 0, 30)],
        ),
    ];
    let r = run_pcap_config(
        "[[fdb]]\nport = \"b10\"\nvlan = 10\nmac = \"02:00:00:00:00:0b\"",
        &ports,
        2.0,
    );
    let mut to_b = vec![
        padded(&f1),
        padded(&f2),
        padded(&f3),
        padded(&f4),
        padded(&f5),
    ];
    to_b.extend(known.iter().map(|k| padded(k)));
    assert_frames("b10 (access 10)", r.out("b10"), &to_b);
    assert_frames("a10 (access 10)", r.out("a10"), &[padded(&f5)]);
    assert_frames(
        "t (trunk 10, native 30)",
        r.out("t"),
        &[
            tagged(&f1, 0, 10),
            tagged(&f2, 5, 10),
            padded(&tagged(&f3, 0, 10)),
            padded(&f6),
        ],
    );
    assert_frames("n30 (access 30)", r.out("n30"), &[padded(&f6)]);
    assert_frames("t2 (trunk 30)", r.out("t2"), &[]);
    for (port, frames) in &r.out {
        assert!(
            frames.iter().all(|f| f.len() >= 60),
            "{port} sent a runt: {:?}",
            describe(frames)
        );
    }
    let hits: u64 = r.stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["flow_cache_hits"].as_u64().unwrap())
        .sum();
    assert!(
        hits > 0,
        "the flow cache's rewrite was exercised: {}",
        r.stats["workers"]
    );

    // A VLAN-unaware bridge removes a priority tag (VID 0) on the way out, and forwards a
    // runt, or a short frame tagged with a VLAN, padded.
    let f7 = frame(BROADCAST, a, 56, 7);
    let f8 = frame(BROADCAST, a, 42, 8);
    let f9 = frame(BROADCAST, a, 46, 9);
    let r = run_pcap_config(
        "",
        &[
            PcapPort::new(
                "x",
                "",
                vec![tagged(&f7, 5, 0), f8.clone(), tagged(&f9, 1, 10)],
            ),
            PcapPort::new("y", "", vec![]),
        ],
        2.0,
    );
    assert_frames(
        "y (VLAN-unaware)",
        r.out("y"),
        &[padded(&f7), padded(&f8), padded(&tagged(&f9, 1, 10))],
    );
}

#[test]
fn static_fdb_entries_forward_before_learning_and_never_move() {
    let (s, a, b) = (mac(0x5e), mac(0x0a), mac(0x0b));
    let f1 = f(s, a, 1); // p0: to S, which has never sent: the static entry says p1
    let f2 = f(BROADCAST, s, 2); // p0: S shows up on p0 (a spoofer, or a loop)
    let f3 = f(s, b, 3); // p2: to S: still p1
    let head = "[[fdb]]\nport = \"p1\"\nvlan = 10\nmac = \"02:00:00:00:00:5e\"\n";
    let ports = [
        PcapPort::new("p0", ACCESS10, vec![f1.clone(), f2.clone()]),
        PcapPort::new("p1", ACCESS10, vec![]),
        PcapPort::new("p2", ACCESS10, vec![f3.clone()]),
    ];
    let r = run_pcap_config(head, &ports, 2.0);
    let p1 = r.out("p1");
    assert!(
        p1.contains(&f1) && p1.contains(&f3),
        "unicast to S reaches p1: {:?}",
        describe(p1)
    );
    assert!(
        !r.out("p2").contains(&f1),
        "f1 was not flooded: {:?}",
        describe(r.out("p2"))
    );
    assert!(
        !r.out("p0").contains(&f3),
        "S did not move to p0: {:?}",
        describe(r.out("p0"))
    );
}

// ---- Hosts on net_tap ports -------------------------------------------------------------

fn ping(from: &Netns, to: &str, count: u32) -> (bool, String) {
    let cmd = from.exec(&format!("ping -c {count} -i 0.2 -W 1 {to}"));
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    let text = format!(
        "{cmd}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn hosts_in_two_access_vlans_reach_their_own_vlan_only() {
    let id = std::process::id() % 100_000;
    // h1, h2 in VLAN 10; h3, h4 in VLAN 20; all in one IP subnet, so only the switch keeps
    // the VLANs apart.
    let vlans = [10, 10, 20, 20];
    let ifs: Vec<String> = (1..=4).map(|i| format!("pev{id}h{i}")).collect();
    let mut toml = String::new();
    for (i, ifname) in ifs.iter().enumerate() {
        toml.push_str(&format!(
            "[[ports]]\nname = \"h{}\"\ndevargs = \"net_tap{i},iface={ifname}\"\nvlan_mode = \"access\"\nvlan = {}\n\n",
            i + 1,
            vlans[i]
        ));
    }
    let config = ConfigFile::new(&toml);
    let mut sw = Switch::start(&config.args());
    sw.wait_ready();
    let hosts = hosts_on_taps(&ifs, &format!("pmdsw{id}v"));
    for (from, to) in [(0, 1), (1, 0), (2, 3), (3, 2)] {
        let (ok, text) = ping(&hosts[from], &format!("10.99.0.{}", to + 1), 3);
        assert!(ok && text.contains("3 received"), "same VLAN: {text}");
    }
    for (from, to) in [(0, 2), (0, 3), (1, 2), (3, 1)] {
        let (ok, text) = ping(&hosts[from], &format!("10.99.0.{}", to + 1), 2);
        assert!(!ok && text.contains("0 received"), "across VLANs: {text}");
    }
    sw.signal(nix::sys::signal::Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats");
    // The cross-VLAN ARP requests reached no host of the other VLAN: nothing sent to h3/h4
    // came from h1/h2. Counted coarsely: every frame h3 got is one h4 sent, and vice versa.
    let tx3 = port_stat(&stats, "h3", "tx_packets");
    let rx4 = port_stat(&stats, "h4", "rx_packets");
    assert!(
        tx3 <= rx4,
        "h3 got {tx3} frames, h4 (its only VLAN peer) sent {rx4}: frames crossed VLANs"
    );
    drop(hosts);
}

/// One marked frame a test sends from a kernel interface, to be found again on others.
fn marked(dst: [u8; 6], src: [u8; 6], tag: u16) -> Vec<u8> {
    frame(dst, src, 100, 0x7000 + tag)
}

/// The frames in `got` that are `want_untagged` once any 802.1Q tag is taken out, returned as
/// they were on the wire (tag included): the test's marked frames among the kernel's chatter.
fn find(got: &[Vec<u8>], want_untagged: &[u8]) -> Vec<Vec<u8>> {
    got.iter()
        .filter(|g| {
            let inner: Vec<u8> = if g.len() >= 18 && g[12..14] == [0x81, 0x00] {
                [&g[..12], &g[16..]].concat()
            } else {
                g.to_vec()
            };
            inner == want_untagged
        })
        .cloned()
        .collect()
}

#[test]
fn a_trunk_tap_gets_both_vlans_tagged_and_its_native_vlan_untagged() {
    let id = std::process::id() % 100_000;
    let names = ["a10", "a20", "a30", "a40", "tr"];
    let ifs: Vec<String> = names.iter().map(|n| format!("pet{id}{n}")).collect();
    let modes = [
        "vlan_mode = \"access\"\nvlan = 10".to_owned(),
        "vlan_mode = \"access\"\nvlan = 20".to_owned(),
        "vlan_mode = \"access\"\nvlan = 30".to_owned(),
        "vlan_mode = \"access\"\nvlan = 40".to_owned(),
        "vlan_mode = \"trunk\"\ntrunks = [10, 20, 30]\nnative_vlan = 30".to_owned(),
    ];
    let mut toml = String::new();
    for (i, ((name, ifname), mode)) in names.iter().zip(&ifs).zip(&modes).enumerate() {
        toml.push_str(&format!(
            "[[ports]]\nname = \"{name}\"\ndevargs = \"net_tap{i},iface={ifname}\"\n{mode}\n\n"
        ));
    }
    let config = ConfigFile::new(&toml);
    let mut sw = Switch::start(&config.args());
    sw.wait_ready();
    // Each tap's kernel side in a namespace of its own, up, without IPv6 (quiet).
    let nss: Vec<Netns> = names
        .iter()
        .zip(&ifs)
        .map(|(n, ifname)| {
            wait_for_iface(ifname, Duration::from_secs(10));
            let ns = Netns::new(&format!("pmdsw{id}{n}")).without_ipv6();
            sh(&format!("ip link set {ifname} netns {}", ns.name));
            sh(&ns.exec(&format!("ip link set {ifname} up")));
            ns
        })
        .collect();
    let tr = 4;

    // Access to trunk: one broadcast from each access VLAN.
    let from_access: Vec<Vec<u8>> = (0..4u8)
        .map(|i| marked(BROADCAST, mac(0x60 + i), u16::from(i)))
        .collect();
    let cap = RawCapture::start(Some(&nss[tr]), &ifs[tr], 2.0);
    for i in 0..4 {
        raw_send(Some(&nss[i]), &ifs[i], 1, 0, &[from_access[i].clone()]);
    }
    let got = cap.frames();
    assert_eq!(
        describe(&find(&got, &from_access[0])),
        describe(&[tagged(&from_access[0], 0, 10)]),
        "VLAN 10 reaches the trunk tagged; it got {:?}",
        describe(&got)
    );
    assert_eq!(
        describe(&find(&got, &from_access[1])),
        describe(&[tagged(&from_access[1], 0, 20)]),
        "VLAN 20 reaches the trunk tagged; it got {:?}",
        describe(&got)
    );
    assert_eq!(
        describe(&find(&got, &from_access[2])),
        describe(std::slice::from_ref(&from_access[2])),
        "the native VLAN 30 reaches the trunk untagged; it got {:?}",
        describe(&got)
    );
    assert_eq!(
        describe(&find(&got, &from_access[3])),
        Vec::<String>::new(),
        "VLAN 40 is not on the trunk; it got {:?}",
        describe(&got)
    );

    // Trunk to access: VID 10 PCP 5, VID 20, VID 40 (not carried), untagged (native 30).
    let x = mac(0x6f);
    let t10 = marked(BROADCAST, x, 10);
    let t20 = marked(BROADCAST, x, 20);
    let t40 = marked(BROADCAST, x, 40);
    let t30 = marked(BROADCAST, x, 30);
    let caps: Vec<RawCapture> = (0..4)
        .map(|i| RawCapture::start(Some(&nss[i]), &ifs[i], 2.0))
        .collect();
    raw_send(
        Some(&nss[tr]),
        &ifs[tr],
        4,
        0,
        &[
            tagged(&t10, 5, 10),
            tagged(&t20, 0, 20),
            tagged(&t40, 0, 40),
            t30.clone(),
        ],
    );
    let got: Vec<Vec<Vec<u8>>> = caps.into_iter().map(RawCapture::frames).collect();
    let want = [&t10, &t20, &t30];
    for (i, g) in got.iter().enumerate() {
        for (j, w) in want.iter().enumerate() {
            let n = find(g, w).len();
            let expect = usize::from(i == j);
            assert_eq!(
                n,
                expect,
                "{}: frame of VLAN {} seen {n} times; it got {:?}",
                names[i],
                [10, 20, 30][j],
                describe(g)
            );
        }
        assert_eq!(
            find(g, &t40).len(),
            0,
            "{}: VLAN 40 came in on a trunk that does not carry it",
            names[i]
        );
        for w in find(g, &t10)
            .iter()
            .chain(&find(g, &t20))
            .chain(&find(g, &t30))
        {
            assert_eq!(
                w[12..14],
                [0x88, 0xb5],
                "{}: untagged at the access port",
                names[i]
            );
        }
    }
    sw.signal(nix::sys::signal::Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats");
    assert!(
        stats["drops"]["ingress_vlan_filter"].as_u64().unwrap_or(0) >= 1,
        "VID 40 on the trunk counted: {}",
        stats["drops"]
    );
    drop(nss);
}
