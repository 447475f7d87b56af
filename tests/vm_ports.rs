//! VM ports (vhost-user) with DPDK virtio-user peers: `dpdk-testpmd` in a second process plays
//! the guest, its virtio-user ports connected to the switch's sockets, for what a real guest
//! cannot do quickly: frame-exact learning and flooding, a guest that enables fewer queues than
//! offered, and a hundred connects and disconnects under traffic.
//!
//! Every DPDK process here starts through the harness (`Switch`, `Testpmd`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::path::Path;
use std::time::{Duration, Instant};

use pmdswitch_tests::*;

/// A `[[ports]]` table of a server-mode VM port with its socket in `dir`.
fn vm_port(dir: &Path, name: &str, queues: u16) -> String {
    format!(
        "[[ports]]\nname = \"{name}\"\nvhost_user = {{ path = \"{}\", mode = \"server\", queues = {queues} }}\n",
        dir.join(format!("{name}.sock")).display()
    )
}

/// A testpmd virtio-user port on `dir`'s socket of VM port `name`, as a guest's NIC.
fn virtio(dir: &Path, n: u32, name: &str, queues: u16, mac: [u8; 6]) -> String {
    format!(
        "net_virtio_user{n},path={},queues={queues},mac={}",
        dir.join(format!("{name}.sock")).display(),
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    )
}

/// MAC table entries as `fdb/show` lists them: (port, MAC).
fn fdb_entries(sw: &Switch) -> Vec<(String, String)> {
    sw.appctl(&["fdb/show"])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_owned(), f[2].to_owned()))
        })
        .collect()
}

/// Frames cross VM ports exactly as across any other: a guest's source is learned on its
/// port, a known unicast goes to its port alone, unknown unicast and broadcast flood; a port
/// with no guest takes no flood, and when its guest goes, what was learned on it goes too.
#[test]
fn vm_ports_learn_flood_and_forget_frame_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, m1, m2, unknown) = (mac(0x0a), mac(1), mac(2), mac(0x77));
    let p_out = dir.path().join("p-out.pcap");
    let p_in = dir.path().join("p-in.pcap");
    let p_bcast = frame(BROADCAST, a, 60, 1);
    write_pcap(&p_in, std::slice::from_ref(&p_bcast));
    let cfg = ConfigFile::new(&format!(
        "{}{}[[ports]]\nname = \"p\"\ndevargs = \"net_pcap0,rx_pcap={},tx_pcap={}\"\n",
        vm_port(dir.path(), "vm1", 1),
        vm_port(dir.path(), "vm2", 1),
        p_in.display(),
        p_out.display()
    ));
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    // p's broadcast, sent at start, finds both VM ports without a guest: p alone learns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fdb_entries(&sw)
        .iter()
        .any(|(p, m)| p == "p" && m.ends_with(":0a"))
    {
        assert!(Instant::now() < deadline, "{:?}", fdb_entries(&sw));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Guest 2 comes and broadcasts: learned on vm2, flooded to p (vm1 has no guest).
    let g2_in = dir.path().join("g2-in.pcap");
    let g2_out = dir.path().join("g2-out.pcap");
    let g2_bcast = frame(BROADCAST, m2, 60, 2);
    write_pcap(&g2_in, std::slice::from_ref(&g2_bcast));
    let mut t2 = Testpmd::start(
        &[
            virtio(dir.path(), 0, "vm2", 1, m2),
            format!(
                "net_pcap0,rx_pcap={},tx_pcap={}",
                g2_in.display(),
                g2_out.display()
            ),
        ],
        &["--forward-mode=io", "--no-flush-rx", "--no-lsc-interrupt"],
    );
    // Forwarding starts once the switch has the guest: nothing is sent into a void.
    sw.wait_for_log("port vm2: guest connected", Duration::from_secs(10));
    t2.cmd("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fdb_entries(&sw)
        .iter()
        .any(|(p, m)| p == "vm2" && m.ends_with(":02"))
    {
        assert!(Instant::now() < deadline, "{:?}", fdb_entries(&sw));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Guest 1: a broadcast, a unicast to guest 2, one to p's station, one to nobody known.
    let g1_in = dir.path().join("g1-in.pcap");
    let g1_out = dir.path().join("g1-out.pcap");
    let g1_frames = vec![
        frame(BROADCAST, m1, 60, 10),
        frame(m2, m1, 100, 11),
        frame(a, m1, 200, 12),
        frame(unknown, m1, 300, 13),
    ];
    write_pcap(&g1_in, &g1_frames);
    let mut t1 = Testpmd::start(
        &[
            virtio(dir.path(), 0, "vm1", 1, m1),
            format!(
                "net_pcap0,rx_pcap={},tx_pcap={}",
                g1_in.display(),
                g1_out.display()
            ),
        ],
        &["--forward-mode=io", "--no-flush-rx", "--no-lsc-interrupt"],
    );
    sw.wait_for_log("port vm1: guest connected", Duration::from_secs(10));
    t1.cmd("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.port_counter("vm1", "rx_packets") < 4 {
        assert!(Instant::now() < deadline, "guest 1's frames did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fdb = fdb_entries(&sw);
    for (port, m) in [("p", ":0a"), ("vm2", ":02"), ("vm1", ":01")] {
        assert!(
            fdb.iter().any(|(p, x)| p == port && x.ends_with(m)),
            "{port} {m}: {fdb:?}"
        );
    }
    // Guest 1 goes: its address with it (guest 2's stays).
    t1.quit();
    sw.wait_for_log("port vm1: guest gone", Duration::from_secs(10));
    let fdb = fdb_entries(&sw);
    assert!(!fdb.iter().any(|(p, _)| p == "vm1"), "{fdb:?}");
    assert!(fdb.iter().any(|(p, _)| p == "vm2"), "{fdb:?}");
    t2.quit();
    let done = sw.stop();
    let stats = done.stats.unwrap();

    assert_frames("guest 1 received", &read_pcap(&g1_out), &[]);
    assert_frames(
        "guest 2 received",
        &read_pcap(&g2_out),
        &[
            g1_frames[0].clone(),
            g1_frames[1].clone(),
            g1_frames[3].clone(),
        ],
    );
    assert_frames(
        "p received",
        &read_pcap(&p_out),
        &[
            g2_bcast,
            g1_frames[0].clone(),
            g1_frames[2].clone(),
            g1_frames[3].clone(),
        ],
    );
    assert_eq!(stats["drops"]["tx_full"], 0, "{}", stats["drops"]);
    assert_no_mbuf_leaked(&stats);
}

/// A guest offered four queue pairs that runs one (Linux does until `ethtool -L`): whichever
/// worker sends to it sends on the queue it enabled, so no frame is lost.
#[test]
fn a_guest_running_one_of_four_queues_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = mac(1);
    let src = dir.path().join("src.pcap");
    // Fewer frames than the guest's ring holds (1024 descriptors, all given to its rx queue:
    // ethdev's default would be 512): they come in one rush, and a guest that took none of
    // them yet must still find room for all.
    let frames: Vec<Vec<u8>> = (0..600u16).map(|i| frame(g, mac(0x0a), 100, i)).collect();
    write_pcap(&src, &frames);
    // Two workers; the source's queue is polled by the second, whose own tx queue (1) the
    // guest never enables.
    let vm = vm_port(dir.path(), "vm1", 4);
    let cfg_vm_only = ConfigFile::new(&format!(
        "{vm}[[fdb]]\nport = \"vm1\"\nmac = \"02:00:00:00:00:01\"\n"
    ));
    let eal = eal_args_with(&["--lcores", "0@0,1@1,2@1"]);
    let mut sw = Switch::start_with_eal(&cfg_vm_only.args(), eal);
    sw.wait_ready();
    let g_out = dir.path().join("g-out.pcap");
    let mut t = Testpmd::start(
        &[
            virtio(dir.path(), 0, "vm1", 4, g) + ",queue_size=1024",
            format!("net_pcap0,tx_pcap={}", g_out.display()),
        ],
        &[
            "--forward-mode=io",
            "--no-flush-rx",
            "--rxd=1024",
            "--rxq=1",
            "--txq=1",
            "--no-lsc-interrupt",
        ],
    );
    sw.wait_for_log("port vm1: guest connected", Duration::from_secs(10));
    t.cmd("start");
    let show = sw.ctl_json(&["port/show", "vm1"]);
    let v = &show["ports"][0]["vhost"];
    assert_eq!(v["queues"], 4, "{v}");
    assert_eq!(v["tx_enabled"], serde_json::json!([0]), "{v}");
    // Now the source, added at runtime: its frames all go to the guest's one queue.
    std::fs::write(
        cfg_vm_only.path(),
        format!(
            "{vm}[[ports]]\nname = \"src\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n\
             [[fdb]]\nport = \"vm1\"\nmac = \"02:00:00:00:00:01\"\n",
            src.display()
        ),
    )
    .unwrap();
    let r = sw.appctl(&["config/reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rxqs = sw.appctl(&["pmd/rxq-show"]).stdout;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.port_counter("vm1", "tx_packets") < 600 {
        assert!(
            Instant::now() < deadline,
            "{} of 600 sent to the guest: {}\n{rxqs}",
            sw.port_counter("vm1", "tx_packets"),
            sw.ctl_json(&["coverage/show"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    t.quit();
    let done = sw.stop();
    let stats = done.stats.unwrap();
    assert_eq!(read_pcap(&g_out).len(), 600, "the guest got every frame");
    assert_eq!(port_stat(&stats, "vm1", "tx_dropped"), 0, "{stats}");
}

/// A hundred times a guest connects, traffic flows both ways, and the guest is killed: the
/// switch follows every time, and after each the mbuf pool is back where it started.
#[test]
fn a_hundred_connects_and_kills_under_traffic_leak_no_mbuf() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let cfg = ConfigFile::new(&format!(
        "{}{}[[ports]]\nname = \"sink\"\ndevargs = \"net_null0,no-rx=1\"\n",
        vm_port(dir.path(), "vm1", 1),
        vm_port(dir.path(), "vm2", 1),
    ));
    let mut args = cfg.args();
    args.extend(["--metrics".into(), metrics.clone()]);
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let in_use = || {
        let (_, body) = http_get(&metrics, "/metrics").unwrap();
        metric_value(&body, "pmdswitch_mempool_in_use").expect("pmdswitch_mempool_in_use")
    };
    let baseline = in_use();
    let t0 = Instant::now();
    for cycle in 1..=100usize {
        // Each guest sends to an address nobody has: flooded to the other guest and the sink.
        let mut t = Testpmd::start(
            &[
                virtio(dir.path(), 0, "vm1", 1, mac(1)),
                virtio(dir.path(), 1, "vm2", 1, mac(2)),
            ],
            &[
                "--forward-mode=txonly",
                "--eth-peer=0,02:00:00:00:00:77",
                "--eth-peer=1,02:00:00:00:00:77",
                "--no-lsc-interrupt",
            ],
        );
        let before = (
            sw.port_counter("vm1", "rx_packets"),
            sw.port_counter("vm2", "tx_packets"),
        );
        sw.wait_for_log_count("guest connected", 2 * cycle, Duration::from_secs(10));
        t.cmd("start");
        // Frames from one guest, and to the other (until its ring is full: testpmd's
        // txonly mode reads nothing), then the guest dies in the middle of it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sw.port_counter("vm1", "rx_packets") <= before.0
            || sw.port_counter("vm2", "tx_packets") <= before.1
        {
            assert!(Instant::now() < deadline, "cycle {cycle}: no traffic");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(20));
        t.kill();
        sw.wait_for_log_count("guest gone", 2 * cycle, Duration::from_secs(10));
        let now = in_use();
        assert_eq!(
            now, baseline,
            "cycle {cycle}: mbufs in use {now}, {baseline} before"
        );
    }
    eprintln!("100 cycles in {:.1} s", t0.elapsed().as_secs_f64());
    let done = sw.stop();
    let stats = done.stats.unwrap();
    assert!(port_stat(&stats, "vm1", "rx_packets") > 100_000, "{stats}");
    assert!(port_stat(&stats, "vm2", "tx_packets") >= 100, "{stats}");
    assert_eq!(stats["drops"]["link_down"], 0, "{}", stats["drops"]);
}

/// VM ports come and go at runtime with the same keys as in the file; bad values are refused
/// with the port and the field named, and the switch runs on as it was. A server-mode port
/// removes a stale socket left by a killed switch and gives its socket the asked permissions.
#[test]
fn vm_ports_are_added_and_removed_at_runtime_and_bad_ones_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigFile::new("[[ports]]\nname = \"sink\"\ndevargs = \"net_null0,no-rx=1\"\n");
    let mut sw = Switch::start(&cfg.args());
    sw.wait_ready();
    let path = |n: &str| dir.path().join(format!("{n}.sock")).display().to_string();
    let r = sw.appctl(&[
        "port/add",
        "vm1",
        &format!("vhost_user.path={}", path("vm1")),
        "vhost_user.mode=server",
        "vhost_user.queues=2",
        "vhost_user.socket_mode=0o660",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let mode = std::fs::metadata(path("vm1")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket's permissions");
    for (args, field) in [
        (
            vec![
                "port/add",
                "vm2",
                "vhost_user.path=/nonexistent-dir/vm2.sock",
                "vhost_user.mode=server",
            ],
            "vhost_user.path",
        ),
        (
            vec!["port/add", "vm2", "vhost_user.mode=sideways"],
            "vhost_user.path",
        ),
        (
            vec![
                "port/add",
                "vm2",
                "vhost_user={path=\"/tmp/x.sock\", mode=\"sideways\"}",
            ],
            "vhost_user.mode",
        ),
        (
            vec![
                "port/add",
                "vm2",
                "vhost_user={path=\"/tmp/x.sock\", mode=\"client\", queues=99}",
            ],
            "vhost_user.queues",
        ),
    ] {
        let r = sw.appctl(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("\"vm2\"") && r.stderr.contains(field),
            "{args:?}: {r:?}"
        );
    }
    // A stale socket (a switch killed) is removed; a file that is no socket is not.
    drop(std::os::unix::net::UnixListener::bind(path("vm3")).unwrap());
    let r = sw.appctl(&[
        "port/add",
        "vm3",
        &format!("vhost_user={{path=\"{}\", mode=\"server\"}}", path("vm3")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::write(path("vm4"), b"not a socket").unwrap();
    let r = sw.appctl(&[
        "port/add",
        "vm4",
        &format!("vhost_user.path={}", path("vm4")),
        "vhost_user.mode=server",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not a socket"), "{r:?}");
    assert!(dir.path().join("vm4.sock").exists());
    let shown = sw.appctl(&["config/show"]).stdout;
    assert!(
        shown.contains("vhost_user") && shown.contains("vm1.sock"),
        "{shown}"
    );
    // A guest on vm1, then the port goes under it.
    let mut t = Testpmd::start(
        &[virtio(dir.path(), 0, "vm1", 2, mac(1))],
        &["--forward-mode=rxonly", "--no-lsc-interrupt"],
    );
    sw.wait_for_log("port vm1: guest connected", Duration::from_secs(10));
    t.cmd("start");
    let show = sw.ctl_json(&["port/show", "vm1"]);
    assert_eq!(show["ports"][0]["vhost"]["connected"], true, "{show}");
    assert_eq!(show["ports"][0]["vhost"]["queues"], 2, "{show}");
    let r = sw.appctl(&["port/del", "vm1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new(&path("vm1")).exists(), "its socket went with it");
    t.quit();
    let r = sw.appctl(&["port/del", "vm3"]);
    assert_eq!(r.code, 0, "{r:?}");
    let done = sw.stop();
    let stats = done.stats.unwrap();
    assert_no_mbuf_leaked(&stats);
}
