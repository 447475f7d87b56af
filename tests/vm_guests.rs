//! Real Linux guests under QEMU on VM ports, one per socket mode, and a host in a network
//! namespace behind a tap port: every pair pings, 5 MB of TCP cross between a guest and the
//! host and between the guests byte for byte, each guest is in the MAC table on its port, a
//! guest killed and started again forwards again, and so do both after the switch restarts
//! under them. Every check moves frames: a guest NIC shows carrier even when nothing passes.
//!
//! Every switch here starts through the harness (`Switch`, `eal_args`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::path::Path;
use std::time::{Duration, Instant};

use pmdswitch_tests::guest::{Guest, GuestSpec, QemuSocket};
use pmdswitch_tests::*;

const G1_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x99, 0x00, 0x11];
const G2_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x99, 0x00, 0x12];
const BOOT: Duration = Duration::from_secs(60);
const CMD: Duration = Duration::from_secs(60);

/// The switch: vm1 makes its socket (QEMU connects), vm2 connects to QEMU's, and a tap.
fn config(dir: &Path, tap: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[[ports]]\nname = \"vm1\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n\
         [[ports]]\nname = \"vm2\"\nvhost_user = {{ path = \"{}\", mode = \"client\" }}\n\
         [[ports]]\nname = \"host\"\ndevargs = \"net_tap0,iface={tap}\"\n",
        dir.join("vm1.sock").display(),
        dir.join("vm2.sock").display(),
    ))
}

/// The namespace host on the switch's tap, 10.99.0.1.
fn host_on(tap: &str, name: &str) -> Netns {
    wait_for_iface(tap, Duration::from_secs(10));
    let ns = Netns::new(name).without_ipv6();
    ns.adopt(tap, "10.99.0.1/24");
    ns
}

/// Pings `to` from `from` (a guest) once a tenth of a second until one answers; returns how
/// long that took. Panics after `within`.
fn guest_reaches(from: &mut Guest, to: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let (_, rc) = from.run(&format!("ping -c 1 -W 1 {to} >/dev/null"), CMD);
        if rc == 0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{} cannot reach {to} within {within:?}",
            from.spec.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pings `to` from the namespace host until one answers; returns how long that took.
fn host_reaches(ns: &Netns, to: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    while !sh_ok(&ns.exec(&format!("ping -c 1 -W 0.2 {to}"))) {
        assert!(
            t0.elapsed() < within,
            "the host cannot reach {to} within {within:?}"
        );
    }
    t0.elapsed()
}

/// md5 of a file in a guest.
fn guest_md5(g: &mut Guest, path: &str) -> String {
    g.ok(&format!("md5sum {path}"), CMD)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// 5 MB over TCP, each byte for byte: guest 1 to guest 2 and to the host (HTTP from guest 1's
/// busybox httpd, guest 1 at 10.99.0.11), and the host (10.99.0.1, in `ns`) to guest 2 (HTTP
/// from a server in the namespace serving a file in `dir`).
fn tcp_both_ways(g1: &mut Guest, g2: &mut Guest, ns: &Netns, dir: &Path) {
    g1.ok(
        "mkdir -p /www && dd if=/dev/urandom of=/www/data bs=1024 count=5120 2>/dev/null",
        CMD,
    );
    let sum1 = guest_md5(g1, "/www/data");
    g1.spawn("httpd -f -p 8080 -h /www");
    g2.ok(
        "wget -q -O /tmp/from-g1 http://10.99.0.11:8080/data",
        Duration::from_secs(120),
    );
    assert_eq!(guest_md5(g2, "/tmp/from-g1"), sum1, "guest 1 -> guest 2");
    let host_sum = sh(&ns.exec(
        "python3 -c \"import hashlib,urllib.request;print(hashlib.md5(urllib.request.urlopen('http://10.99.0.11:8080/data',timeout=120).read()).hexdigest())\"",
    ));
    assert_eq!(host_sum.trim(), sum1, "guest 1 -> host");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let blob_sum = sh(&format!("md5sum {}", www.join("blob").display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    // `ip netns exec` execs the server itself: killing it kills the server.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-m", "http.server"])
        .args(["8081", "--bind", "10.99.0.1", "--directory"])
        .arg(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    g2.ok(
        "wget -q -O /tmp/from-host http://10.99.0.1:8081/blob",
        Duration::from_secs(120),
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(guest_md5(g2, "/tmp/from-host"), blob_sum, "host -> guest 2");
}

#[test]
fn guests_on_vm_ports_ping_move_tcp_and_survive_restarts() {
    for tool in ["qemu-system-x86_64", "taskset", "ip", "ping", "python3"] {
        assert!(
            sh_ok(&format!("command -v {tool}")),
            "{tool} is needed (scripts/setup.sh installs it)"
        );
    }
    let t_all = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id() % 100_000;
    let tap = format!("pvm{id}");
    let g1_spec = GuestSpec {
        name: "g1".into(),
        socket: dir.path().join("vm1.sock"),
        role: QemuSocket::Client,
        mac: G1_MAC,
        ip: "10.99.0.11/24".into(),
        mtu: None,
        queues: 1,
    };
    let g2_spec = GuestSpec {
        name: "g2".into(),
        socket: dir.path().join("vm2.sock"),
        role: QemuSocket::Server,
        mac: G2_MAC,
        ip: "10.99.0.12/24".into(),
        mtu: None,
        queues: 1,
    };
    // QEMU serving vm2's socket comes first; the switch connects to it.
    let mut g2 = Guest::start(dir.path(), g2_spec.clone());
    g2.wait_for_socket(Duration::from_secs(30));
    let cfg = config(dir.path(), &tap);
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let ns = host_on(&tap, &format!("pmdvm{id}"));
    let mut g1 = Guest::start(dir.path(), g1_spec.clone());
    let boot1 = g1.wait_ready(BOOT);
    let boot2 = g2.wait_ready(BOOT);
    sw.wait_for_log("port vm1: guest connected", Duration::from_secs(30));
    sw.wait_for_log("port vm2: guest connected", Duration::from_secs(30));
    eprintln!(
        "guests booted in {:.1} s and {:.1} s",
        boot1.as_secs_f64(),
        boot2.as_secs_f64()
    );

    // Every pair pings.
    guest_reaches(&mut g1, "10.99.0.12", Duration::from_secs(10));
    guest_reaches(&mut g1, "10.99.0.1", Duration::from_secs(10));
    guest_reaches(&mut g2, "10.99.0.1", Duration::from_secs(10));
    guest_reaches(&mut g2, "10.99.0.11", Duration::from_secs(10));
    host_reaches(&ns, "10.99.0.11", Duration::from_secs(10));
    host_reaches(&ns, "10.99.0.12", Duration::from_secs(10));

    // The MAC table: each guest on its port, the host on the tap.
    let fdb = sw.appctl(&["fdb/show"]).stdout;
    for (port, m) in [("vm1", "52:54:00:99:00:11"), ("vm2", "52:54:00:99:00:12")] {
        assert!(
            fdb.lines().any(|l| l.contains(port) && l.contains(m)),
            "{m} on {port}:\n{fdb}"
        );
    }

    // 5 MB of TCP: guest 1 to guest 2 and to the host, the host to guest 2, byte for byte.
    let t_tcp = Instant::now();
    tcp_both_ways(&mut g1, &mut g2, &ns, dir.path());
    eprintln!("3 x 5 MB of TCP in {:.1} s", t_tcp.elapsed().as_secs_f64());

    // Guest 1 killed, and a new one on the same socket: it forwards again at once.
    g1.kill();
    sw.wait_for_log("port vm1: guest gone", Duration::from_secs(10));
    let fdb = sw.appctl(&["fdb/show"]).stdout;
    assert!(
        !fdb.contains("52:54:00:99:00:11"),
        "the guest's address went with it:\n{fdb}"
    );
    let mut g1 = Guest::start(dir.path(), g1_spec.clone());
    sw.wait_for_log_count("port vm1: guest connected", 2, BOOT);
    let link_up = Instant::now();
    g1.wait_ready(BOOT);
    let guest_back = guest_reaches(&mut g1, "10.99.0.12", Duration::from_secs(10));
    eprintln!(
        "a guest restarted: ready {:.2} s after its link came up, first ping answered {:.2} s later",
        (link_up.elapsed() - guest_back).as_secs_f64(),
        guest_back.as_secs_f64()
    );
    assert!(
        guest_back < Duration::from_secs(1),
        "forwarding again within a second: {guest_back:?}"
    );

    // The switch restarts under both guests: vm2 (client mode) reconnects to QEMU, QEMU
    // reconnects to vm1's new socket, and both forward within 2 s of the switch's start.
    sw.stop();
    sh_ok(&format!("ip netns del {}", ns.name));
    let mut sw = Switch::start(&cfg.args());
    let started = Instant::now();
    sw.wait_ready();
    let ns = host_on(&tap, &format!("pmdvm{id}b"));
    let to_g2 = host_reaches(&ns, "10.99.0.12", Duration::from_secs(10));
    let g2_back = started.elapsed();
    let to_g1 = host_reaches(&ns, "10.99.0.11", Duration::from_secs(10));
    let g1_back = started.elapsed();
    eprintln!(
        "switch restarted: client-mode guest (vm2) forwarding {:.2} s after the switch started ({:.2} s of pings), server-mode guest (vm1) {:.2} s ({:.2} s of pings)",
        g2_back.as_secs_f64(),
        to_g2.as_secs_f64(),
        g1_back.as_secs_f64(),
        to_g1.as_secs_f64()
    );
    assert!(
        g2_back < Duration::from_secs(2),
        "a client-mode port forwards within 2 s of the switch's start: {g2_back:?}"
    );
    guest_reaches(&mut g1, "10.99.0.12", Duration::from_secs(5));
    let done = sw.stop();
    let stats = done.stats.unwrap();
    assert_no_mbuf_leaked(&stats);
    drop((g1, g2));
    sh_ok(&format!("ip netns del {}", ns.name));
    eprintln!("guest test took {:.1} s", t_all.elapsed().as_secs_f64());
}

/// Guests at MTU 9000 on VM ports and a host at MTU 9000 behind net_af_packet on a veth pair
/// (net_tap cannot carry jumbo frames in DPDK 22.11): 8000-byte pings with DF set both ways,
/// and TCP both ways with full-size segments, byte for byte.
#[test]
fn guests_and_a_host_at_mtu_9000_talk_at_full_size() {
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id() % 100_000;
    let (veth_sw, veth_h) = (format!("pjs{id}"), format!("pjh{id}"));
    sh_ok(&format!("ip link del {veth_sw}"));
    sh(&format!(
        "ip link add {veth_sw} mtu 9000 type veth peer name {veth_h} mtu 9000 && ip link set {veth_sw} up"
    ));
    // AF_PACKET gets the kernel's partial checksums and GSO frames unless they are off.
    sh(&format!(
        "ethtool -K {veth_sw} tx off tso off gso off sg off >/dev/null; sysctl -qw net.ipv6.conf.{veth_sw}.disable_ipv6=1"
    ));
    let ns = Netns::new(&format!("pmdjb{id}")).without_ipv6();
    sh(&format!("ip link set {veth_h} netns {}", ns.name));
    sh(&ns.exec(&format!(
        "ethtool -K {veth_h} tx off tso off gso off sg off >/dev/null"
    )));
    sh(&format!(
        "ip -n {} addr add 10.99.0.1/24 dev {veth_h}",
        ns.name
    ));
    sh(&format!("ip -n {} link set {veth_h} up", ns.name));
    let cfg = ConfigFile::new(&format!(
        "[bridge]\nmtu = 9000\n\
         [[ports]]\nname = \"vm1\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n\
         [[ports]]\nname = \"vm2\"\nvhost_user = {{ path = \"{}\", mode = \"server\" }}\n\
         [[ports]]\nname = \"host\"\ndevargs = \"net_af_packet0,iface={veth_sw},framesz=10240,blocksz=20480,framecnt=512\"\n",
        dir.path().join("vm1.sock").display(),
        dir.path().join("vm2.sock").display(),
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let spec = |n: u8, mac: [u8; 6]| GuestSpec {
        name: format!("j{n}"),
        socket: dir.path().join(format!("vm{n}.sock")),
        role: QemuSocket::Client,
        mac,
        ip: format!("10.99.0.1{n}/24"),
        mtu: Some(9000),
        queues: 1,
    };
    let mut g1 = Guest::start(dir.path(), spec(1, G1_MAC));
    let mut g2 = Guest::start(dir.path(), spec(2, G2_MAC));
    g1.wait_ready(BOOT);
    g2.wait_ready(BOOT);
    sw.wait_for_log("port vm2: guest connected", Duration::from_secs(30));
    g1.ok("ip link show eth0 | grep -q 'mtu 9000'", CMD);

    // 8000-byte pings, not fragmented (the host's carry DF; a guest's 8028-byte packet fits
    // its MTU whole), both ways between the guests and between a guest and the host.
    let rx_before = sw.port_counter("vm2", "rx_bytes");
    g1.ok("ping -c 3 -s 8000 -W 2 10.99.0.12", CMD);
    g2.ok("ping -c 3 -s 8000 -W 2 10.99.0.11", CMD);
    g1.ok("ping -c 3 -s 8000 -W 2 10.99.0.1", CMD);
    sh(&ns.exec("ping -c 3 -M do -s 8000 -W 2 10.99.0.12"));
    let show = sw.ctl_json(&["port/show", "vm2"]);
    let (rx_pkts, rx_bytes) = (
        show["ports"][0]["rx_packets"].as_u64().unwrap(),
        show["ports"][0]["rx_bytes"].as_u64().unwrap(),
    );
    assert!(
        rx_bytes - rx_before >= 6 * 8042,
        "guest 2 sent its 8042-byte frames whole: {rx_pkts} frames, {} bytes",
        rx_bytes - rx_before
    );

    // TCP both ways at full size: guest 1 -> guest 2, guest 1 -> host, host -> guest 2.
    tcp_both_ways(&mut g1, &mut g2, &ns, dir.path());
    let done = sw.stop();
    let stats = done.stats.unwrap();
    for reason in ["oversize", "egress_oversize", "multi_segment"] {
        assert_eq!(stats["drops"][reason], 0, "{}", stats["drops"]);
    }
    assert_no_mbuf_leaked(&stats);
    drop((g1, g2));
    sh_ok(&format!("ip netns del {}", ns.name));
    sh_ok(&format!("ip link del {veth_sw}"));
}
