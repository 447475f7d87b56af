//! VEB and VEPA (issue 7, IEEE 802.1Qbg) against a real adjacent switch: the uplink tap is a
//! port of a Linux bridge in a namespace of its own, reflecting frames back out of the port they
//! came in on when `hairpin` is on. Three VMs live in namespaces on net_tap ports.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::process::Command;
use std::time::Duration;

use pmdswitch_tests::*;

/// The switch, three VMs and the adjacent bridge.
struct Edge {
    sw: Option<Switch>,
    vms: Vec<Netns>,
    vm_ifs: Vec<String>,
    bridge: Netns,
    uplink: String,
    _config: ConfigFile,
}

impl Edge {
    /// Starts the switch in `mode` ("veb" or "vepa") with VMs vm1..vm3 (10.99.0.1-3) and an
    /// uplink enslaved to a Linux bridge with hairpin on or off.
    fn start(mode: &str, hairpin: bool) -> Edge {
        Self::start_with(mode, hairpin, ["", "", ""], "")
    }

    /// The same, with extra config lines for each VM's port and for the uplink.
    fn start_with(mode: &str, hairpin: bool, vm_config: [&str; 3], uplink_config: &str) -> Edge {
        let id = std::process::id() % 100_000;
        let vm_ifs: Vec<String> = (1..=3).map(|i| format!("pea{id}v{i}")).collect();
        let uplink = format!("pea{id}up");
        let mut toml = format!("[bridge]\nmode = \"{mode}\"\n\n");
        for (i, ifname) in vm_ifs.iter().enumerate() {
            toml.push_str(&format!(
                "[[ports]]\nname = \"vm{}\"\ndevargs = \"net_tap{i},iface={ifname}\"\n{}\n\n",
                i + 1,
                vm_config[i]
            ));
        }
        toml.push_str(&format!(
            "[[ports]]\nname = \"uplink\"\ndevargs = \"net_tap3,iface={uplink}\"\nrole = \"uplink\"\n{uplink_config}\n"
        ));
        let config = ConfigFile::new(&toml);
        let mut sw = Switch::start(&config.args());
        sw.wait_ready();
        let vms = hosts_on_taps(&vm_ifs, &format!("pmdsw{id}vm"));
        wait_for_iface(&uplink, Duration::from_secs(10));
        let bridge = Netns::new(&format!("pmdsw{id}br")).without_ipv6();
        sh(&format!("ip link set {uplink} netns {}", bridge.name));
        for cmd in [
            "ip link add br0 type bridge stp_state 0".to_owned(),
            format!("ip link set {uplink} master br0"),
            "ip link set br0 up".to_owned(),
            format!("ip link set {uplink} up"),
            format!(
                "bridge link set dev {uplink} hairpin {}",
                if hairpin { "on" } else { "off" }
            ),
        ] {
            sh(&bridge.exec(&cmd));
        }
        Edge {
            sw: Some(sw),
            vms,
            vm_ifs,
            bridge,
            uplink,
            _config: config,
        }
    }

    /// `ping -c count` from VM `from` (0-based) to VM `to`: success and the output.
    fn ping(&self, from: usize, to: usize, count: u32) -> (bool, String) {
        let cmd = self.vms[from].exec(&format!("ping -c {count} -i 0.2 -W 1 10.99.0.{}", to + 1));
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let text = format!(
            "{cmd}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Frames the bridge's port received from the switch and sent back to it, so far.
    fn bridge_port_counters(&self) -> (u64, u64) {
        (
            iface_counter(Some(&self.bridge), &self.uplink, "rx_packets"),
            iface_counter(Some(&self.bridge), &self.uplink, "tx_packets"),
        )
    }

    /// The MAC address of VM `i`'s interface.
    fn vm_mac(&self, i: usize) -> [u8; 6] {
        let text = sh(&self.vms[i].exec(&format!("cat /sys/class/net/{}/address", self.vm_ifs[i])));
        let v: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("MAC"))
            .collect();
        v.try_into().expect("six bytes")
    }

    /// Stops the switch and returns its stats.
    fn stop(&mut self) -> Value {
        let sw = self.sw.take().expect("running");
        sw.signal(nix::sys::signal::Signal::SIGTERM);
        let (done, _) = sw.wait(Duration::from_secs(30));
        assert!(done.status.success(), "{}", done.output);
        done.stats.expect("stats")
    }
}

/// Unicast frames between the two addresses, either way.
fn unicast_between(frames: &[Vec<u8>], a: [u8; 6], b: [u8; 6]) -> usize {
    frames
        .iter()
        .filter(|f| (f[0..6] == a && f[6..12] == b) || (f[0..6] == b && f[6..12] == a))
        .count()
}

#[test]
fn vepa_vms_talk_only_through_the_adjacent_bridge() {
    let mut e = Edge::start("vepa", true);
    let (m1, m2) = (e.vm_mac(0), e.vm_mac(1));
    let (rx0, tx0) = e.bridge_port_counters();
    let cap = RawCapture::start(Some(&e.bridge), &e.uplink, 4.0);
    let (ok, text) = e.ping(0, 1, 5);
    let up = cap.frames();
    let (rx1, tx1) = e.bridge_port_counters();
    eprintln!(
        "bridge port {}: rx {} tx {} frames during 5 pings",
        e.uplink,
        rx1 - rx0,
        tx1 - tx0
    );
    assert!(ok && text.contains("5 received"), "{text}");
    assert!(!text.contains("DUP"), "a VM got a frame twice: {text}");
    // 5 requests and 5 replies went up to the bridge and came back: at least 10 each way.
    assert!(
        rx1 - rx0 >= 10 && tx1 - tx0 >= 10,
        "bridge port rx {} tx {}: the pings did not go through the bridge",
        rx1 - rx0,
        tx1 - tx0
    );
    assert!(
        unicast_between(&up, m1, m2) >= 10,
        "echo requests and replies on the uplink: {:?}",
        describe(&up)
    );
    let stats = e.stop();
    assert!(port_stat(&stats, "uplink", "rx_packets") >= 10);
    assert!(port_stat(&stats, "uplink", "tx_packets") >= 10);
}

#[test]
fn vepa_vms_cannot_talk_when_the_bridge_does_not_reflect() {
    let mut e = Edge::start("vepa", false);
    let (m1, m3) = (e.vm_mac(0), e.vm_mac(2));
    let (rx0, _) = e.bridge_port_counters();
    // What vm2's host receives meanwhile. The bridge itself may speak (br0's IGMP report
    // was seen here), so only frames from the other VMs count.
    let cap = RawCapture::start(Some(&e.vms[1]), &e.vm_ifs[1], 3.0);
    let (ok, text) = e.ping(0, 1, 3);
    let (rx1, _) = e.bridge_port_counters();
    let at_vm2 = cap.frames();
    assert!(!ok && text.contains("0 received"), "{text}");
    assert!(
        rx1 > rx0,
        "the VM's frames went up to the bridge (rx {rx0} -> {rx1})"
    );
    let from_vms: Vec<Vec<u8>> = at_vm2
        .into_iter()
        .filter(|f| f[6..12] == m1 || f[6..12] == m3)
        .collect();
    assert!(
        from_vms.is_empty(),
        "frames from vm1/vm3 reached vm2 although the bridge reflects nothing: {:?}",
        describe(&from_vms)
    );
    e.stop();
}

#[test]
fn veb_switches_locally_and_unicast_never_crosses_the_uplink() {
    // A bridge that does not reflect: a VEB next to a hairpin port would be a loop.
    let mut e = Edge::start("veb", false);
    let (m1, m2) = (e.vm_mac(0), e.vm_mac(1));
    let cap = RawCapture::start(Some(&e.bridge), &e.uplink, 3.0);
    let (ok, text) = e.ping(0, 1, 5);
    let up = cap.frames();
    assert!(ok && text.contains("5 received"), "{text}");
    assert_eq!(
        unicast_between(&up, m1, m2),
        0,
        "VM-to-VM unicast on the uplink: {:?}",
        describe(&up)
    );
    let unicast_up = up.iter().filter(|f| f[0] & 1 == 0).count();
    assert_eq!(unicast_up, 0, "unicast on the uplink: {:?}", describe(&up));
    let stats = e.stop();
    assert!(port_stat(&stats, "vm2", "tx_packets") >= 5);
}

#[test]
fn vepa_reflected_floods_reach_every_other_vm_once_and_never_the_sender() {
    let e = Edge::start("vepa", true);
    let src = mac(0x51);
    let kinds = [
        ("broadcast", frame(BROADCAST, src, 100, 0x7001)),
        (
            "multicast",
            frame([0x01, 0x00, 0x5e, 0x00, 0x00, 0x42], src, 100, 0x7002),
        ),
        ("unknown unicast", frame(mac(0x7e), src, 100, 0x7003)),
    ];
    let caps: Vec<RawCapture> = (0..3)
        .map(|i| RawCapture::start(Some(&e.vms[i]), &e.vm_ifs[i], 2.5))
        .collect();
    let up = RawCapture::start(Some(&e.bridge), &e.uplink, 2.5);
    let frames: Vec<Vec<u8>> = kinds.iter().map(|(_, f)| f.clone()).collect();
    raw_send(Some(&e.vms[0]), &e.vm_ifs[0], frames.len(), 0, &frames);
    let got: Vec<Vec<Vec<u8>>> = caps.into_iter().map(RawCapture::frames).collect();
    let up = up.frames();
    for (kind, f) in &kinds {
        let n = |g: &[Vec<u8>]| g.iter().filter(|x| *x == f).count();
        assert_eq!(
            n(&up),
            1,
            "{kind}: went up the uplink once: {:?}",
            describe(&up)
        );
        assert_eq!(n(&got[0]), 0, "{kind}: came back to its sender vm1");
        assert_eq!(n(&got[1]), 1, "{kind}: reached vm2 {} times", n(&got[1]));
        assert_eq!(n(&got[2]), 1, "{kind}: reached vm3 {} times", n(&got[2]));
    }
}

#[test]
fn vepa_with_vlans_reflects_only_within_the_vlan() {
    // vm1 and vm2 in VLAN 10, vm3 in VLAN 20; the uplink a trunk of both. The Linux bridge
    // is VLAN-unaware: it reflects the tagged frames as they are.
    let access = |v: u16| format!("vlan_mode = \"access\"\nvlan = {v}");
    let (a10, a20) = (access(10), access(20));
    let e = Edge::start_with(
        "vepa",
        true,
        [&a10, &a10, &a20],
        "vlan_mode = \"trunk\"\ntrunks = [10, 20]",
    );
    let (ok, text) = e.ping(0, 1, 3);
    assert!(ok && text.contains("3 received"), "same VLAN: {text}");
    assert!(!text.contains("DUP"), "{text}");
    let (ok, text) = e.ping(0, 2, 2);
    assert!(!ok && text.contains("0 received"), "across VLANs: {text}");

    let bc = frame(BROADCAST, mac(0x52), 100, 0x7101);
    let caps: Vec<RawCapture> = (0..3)
        .map(|i| RawCapture::start(Some(&e.vms[i]), &e.vm_ifs[i], 2.0))
        .collect();
    let up = RawCapture::start(Some(&e.bridge), &e.uplink, 2.0);
    raw_send(
        Some(&e.vms[0]),
        &e.vm_ifs[0],
        1,
        0,
        std::slice::from_ref(&bc),
    );
    let got: Vec<Vec<Vec<u8>>> = caps.into_iter().map(RawCapture::frames).collect();
    let up = up.frames();
    let on_uplink: Vec<&Vec<u8>> = up.iter().filter(|f| f[6..12] == bc[6..12]).collect();
    assert_eq!(
        on_uplink,
        vec![&tagged(&bc, 0, 10)],
        "up the uplink once, tagged VID 10: {:?}",
        describe(&up)
    );
    let n = |g: &[Vec<u8>]| g.iter().filter(|x| **x == bc).count();
    assert_eq!(n(&got[0]), 0, "back to its sender vm1");
    assert_eq!(
        n(&got[1]),
        1,
        "vm2 (VLAN 10), untagged, once: {:?}",
        describe(&got[1])
    );
    assert_eq!(
        got[2].iter().filter(|x| x[6..12] == bc[6..12]).count(),
        0,
        "vm3 is in VLAN 20: {:?}",
        describe(&got[2])
    );
}

/// VEPA frame by frame on net_pcap ports: the uplink's input plays the adjacent switch,
/// reflecting some of what the VMs sent.
#[test]
fn vepa_sends_vm_frames_up_and_delivers_reflections_by_the_table() {
    let (a, b, c, ext) = (mac(0xa), mac(0xb), mac(0xc), mac(0xe));
    let g1 = frame(BROADCAST, a, 60, 1); // vm1
    let g2 = frame(b, a, 60, 2); // vm1 -> vm2 (B not known yet)
    let g3 = frame(BROADCAST, b, 60, 3); // vm2
    let g4 = frame(a, b, 60, 4); // vm2 -> vm1 (A known on vm1: still up)
    let g5 = frame(a, c, 60, 5); // vm3 -> vm1
    let g6 = frame(BROADCAST, ext, 60, 6); // a host beyond the uplink
    let g7 = frame(a, ext, 60, 7); // to A: A did not move to the uplink
    let g8 = frame(mac(0x7e), a, 60, 8); // unknown unicast from A, reflected
    let ports = [
        PcapPort::new("vm1", "", vec![g1.clone(), g2.clone()]),
        PcapPort::new("vm2", "", vec![g3.clone(), g4.clone()]),
        PcapPort::new("vm3", "", vec![g5.clone()]),
        PcapPort::new(
            "up",
            "role = \"uplink\"",
            vec![
                g1.clone(),
                g2.clone(),
                g4.clone(),
                g6.clone(),
                g7.clone(),
                g8.clone(),
            ],
        ),
    ];
    let r = run_pcap_config("[bridge]\nmode = \"vepa\"\n", &ports, 2.0);
    assert_frames(
        "up",
        r.out("up"),
        &[g1.clone(), g2.clone(), g3.clone(), g4.clone(), g5.clone()],
    );
    assert_frames("vm1", r.out("vm1"), &[g4.clone(), g6.clone(), g7.clone()]);
    assert_frames(
        "vm2",
        r.out("vm2"),
        &[g1.clone(), g2.clone(), g6.clone(), g8.clone()],
    );
    assert_frames("vm3", r.out("vm3"), &[g1.clone(), g6.clone(), g8.clone()]);
    assert_eq!(r.stats["fdb"]["moved"], 0, "{}", r.stats["fdb"]);
    assert_eq!(
        r.stats["fdb"]["entries"], 3,
        "A, B, C; the uplink learns nothing: {}",
        r.stats["fdb"]
    );
}

#[test]
fn the_mode_changes_at_runtime() {
    let mut e = Edge::start("veb", false);
    let hairpin = |e: &Edge, on: &str| {
        sh(&e
            .bridge
            .exec(&format!("bridge link set dev {} hairpin {on}", e.uplink)));
    };
    let set_mode = |e: &Edge, mode: &str| {
        let out =
            e.sw.as_ref()
                .expect("running")
                .ctl(&["bridge/set", &format!("mode={mode}")]);
        assert_eq!(out.code, 0, "bridge/set mode={mode}: {out:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let (ok, text) = e.ping(0, 1, 3);
    assert!(ok && text.contains("3 received"), "VEB: {text}");

    set_mode(&e, "vepa");
    let (ok, text) = e.ping(0, 1, 3);
    assert!(
        !ok && text.contains("0 received"),
        "VEPA, bridge without hairpin: {text}"
    );
    hairpin(&e, "on");
    let (rx0, _) = e.bridge_port_counters();
    let (ok, text) = e.ping(0, 1, 3);
    let (rx1, _) = e.bridge_port_counters();
    assert!(ok && text.contains("3 received"), "VEPA, hairpin: {text}");
    assert!(rx1 - rx0 >= 6, "through the bridge: rx {rx0} -> {rx1}");

    hairpin(&e, "off");
    set_mode(&e, "veb");
    let (m1, m2) = (e.vm_mac(0), e.vm_mac(1));
    let cap = RawCapture::start(Some(&e.bridge), &e.uplink, 2.5);
    let (ok, text) = e.ping(0, 1, 3);
    let up = cap.frames();
    assert!(ok && text.contains("3 received"), "VEB again: {text}");
    assert_eq!(
        unicast_between(&up, m1, m2),
        0,
        "VEB again: VM unicast on the uplink: {:?}",
        describe(&up)
    );
    e.stop();
}
