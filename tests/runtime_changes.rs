//! Changes while traffic flows: ports added and removed by a configuration reload (SIGHUP),
//! with no frame lost or duplicated on the ports the change does not touch, and a broken file
//! refused with the field named while the switch runs on as before.
//!
//! Every switch here starts through the harness (`Switch`, `eal_args`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pmdswitch_tests::*;

/// Two ports that send each other unicast forever (both addresses static: nothing floods).
fn base_config(dir: &Path) -> String {
    let (a, b) = (mac(0xa), mac(0xb));
    let pa = dir.join("a.pcap");
    let pb = dir.join("b.pcap");
    write_pcap(&pa, &vec![frame(b, a, 60, 1); 64]);
    write_pcap(&pb, &vec![frame(a, b, 60, 2); 64]);
    format!(
        r#"
[[ports]]
name = "a"
devargs = "net_pcap0,rx_pcap={},infinite_rx=1"
[[ports]]
name = "b"
devargs = "net_pcap1,rx_pcap={},infinite_rx=1"
[[fdb]]
port = "a"
mac = "02:00:00:00:00:0a"
[[fdb]]
port = "b"
mac = "02:00:00:00:00:0b"
"#,
        pa.display(),
        pb.display()
    )
}

/// A switch started on [`base_config`] written to `cfg` in `dir`, ready.
struct Running {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    base: String,
    sw: Switch,
}

fn start_on_base_config() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switch.toml");
    let base = base_config(dir.path());
    std::fs::write(&cfg, &base).unwrap();
    let mut sw = Switch::start(&[format!("--config={}", cfg.display())]);
    sw.wait_ready();
    Running { dir, cfg, base, sw }
}

/// A third port, given as config text, with 10 frames to `a` and a pcap to write into.
fn extra_port(dir: &Path, n: u32) -> String {
    let src = dir.join(format!("c{n}.pcap"));
    write_pcap(&src, &vec![frame(mac(0xa), mac(0xc), 60, 3); 10]);
    format!(
        "[[ports]]\nname = \"c\"\ndevargs = \"net_pcap2,rx_pcap={},tx_pcap={}\"\n",
        src.display(),
        dir.join(format!("c{n}-out.pcap")).display()
    )
}

#[test]
fn ports_come_and_go_under_traffic_without_loss_elsewhere() {
    require_hugepages();
    let Running {
        dir,
        cfg,
        base,
        mut sw,
    } = start_on_base_config();
    for round in 0..3u32 {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&cfg, format!("{base}{}", extra_port(dir.path(), round))).unwrap();
        sw.signal(Signal::SIGHUP);
        sw.wait_for_log_count(
            "config: added port c",
            round as usize + 1,
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&cfg, &base).unwrap();
        sw.signal(Signal::SIGHUP);
        sw.wait_for_log_count(
            "config: removed port c",
            round as usize + 1,
            Duration::from_secs(10),
        );
    }
    sw.signal(Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats written");
    let (rx_a, tx_a) = (
        port_stat(&stats, "a", "rx_packets"),
        port_stat(&stats, "a", "tx_packets"),
    );
    let (rx_b, tx_b) = (
        port_stat(&stats, "b", "rx_packets"),
        port_stat(&stats, "b", "tx_packets"),
    );
    assert!(
        rx_a > 1_000_000 && rx_b > 1_000_000,
        "traffic flowed: {stats}"
    );
    // Every frame a sent reached b exactly once, and b's reached a, plus c's 10 per round.
    assert_eq!(tx_b, rx_a, "a -> b: lost or duplicated across the changes");
    assert_eq!(tx_a, rx_b + 30, "b -> a (and c's 3 x 10 frames to a)");
    let drops: u64 = stats["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(drops, 0, "nothing dropped: {}", stats["drops"]);
    for round in 0..3 {
        // Frames from a that c was flooded... none: all unicast. c's own went out to a.
        let out = read_pcap(&dir.path().join(format!("c{round}-out.pcap")));
        assert!(
            out.is_empty(),
            "c got only what was addressed to it: {} frames",
            out.len()
        );
    }
    println!(
        "a->b {rx_a} frames, b->a {rx_b} frames across 6 changes; longest burst {} cycles",
        stats["workers"][0]["cycles_per_burst"]["max"]
    );
}

#[test]
fn a_broken_reload_is_refused_and_changes_nothing() {
    require_hugepages();
    let Running {
        dir,
        cfg,
        base,
        mut sw,
    } = start_on_base_config();
    std::fs::write(
        &cfg,
        format!("{base}{}vlan = 4095\n", extra_port(dir.path(), 0)),
    )
    .unwrap();
    sw.signal(Signal::SIGHUP);
    sw.wait_for_log("configuration not reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    sw.signal(Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    assert!(
        done.output.contains("ports[2]")
            && done.output.contains("vlan")
            && done.output.contains("4095 is out of range"),
        "the error names the port, the field and what is allowed:\n{}",
        done.output
    );
    let stats = done.stats.expect("stats written");
    let names: Vec<&str> = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "the running configuration stands");
    assert_eq!(
        port_stat(&stats, "b", "tx_packets"),
        port_stat(&stats, "a", "rx_packets")
    );
}

/// The stock ovs-appctl adds a port (with its VLAN), frames then flow through it, and removes
/// it; the two busy ports lose nothing meanwhile.
#[test]
fn ovs_appctl_adds_and_removes_a_port_under_traffic() {
    require_hugepages();
    let Running { dir, sw, .. } = start_on_base_config();
    // c sends 10 frames to a (static on a) and receives what is addressed to it.
    let src = dir.path().join("c.pcap");
    let out = dir.path().join("c-out.pcap");
    write_pcap(&src, &vec![frame(mac(0xa), mac(0xc), 60, 3); 10]);
    let devargs = format!(
        "net_pcap2,rx_pcap={},tx_pcap={}",
        src.display(),
        out.display()
    );
    for round in 0..3 {
        let add = sw.appctl(&["port/add", "c", &devargs, "sampling_rate=0"]);
        assert_eq!(add.code, 0, "{add:?}");
        assert!(add.stdout.contains("added port c"), "{add:?}");
        let shown = sw.appctl(&["port/show", "c"]);
        assert!(shown.stdout.contains("port c"), "{shown:?}");
        std::thread::sleep(Duration::from_millis(300));
        let del = sw.appctl(&["port/del", "c"]);
        assert_eq!(del.code, 0, "round {round}: {del:?}");
    }
    let bad = sw.appctl(&["port/add", "d", "net_null9", "vlan=0"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("vlan") && bad.stderr.contains("0 is out of range"),
        "the error names the field: {bad:?}"
    );
    let missing = sw.appctl(&["port/del", "nope"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    let stats = sw.stop().stats.expect("stats written");
    let names: Vec<&str> = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        port_stat(&stats, "b", "tx_packets"),
        port_stat(&stats, "a", "rx_packets"),
        "a -> b: nothing lost or duplicated"
    );
    assert_eq!(
        port_stat(&stats, "a", "tx_packets"),
        port_stat(&stats, "b", "rx_packets") + 30,
        "b -> a, and the 10 frames c sent in each of its 3 lives"
    );
    println!(
        "longest burst across 6 port changes: {} cycles",
        stats["workers"][0]["cycles_per_burst"]["max"]
    );
}

/// config/reload with a broken file answers with the field and changes nothing.
#[test]
fn config_reload_of_a_broken_file_names_the_field() {
    require_hugepages();
    let Running {
        dir: _dir,
        cfg,
        base,
        sw,
    } = start_on_base_config();
    let before = sw.appctl(&["config/show"]).stdout;
    std::fs::write(
        &cfg,
        base.replace("name = \"b\"", "name = \"b\"\ntrunks = [7, 7]"),
    )
    .unwrap();
    let r = sw.appctl(&["config/reload"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("ports[1]")
            && r.stderr.contains("trunks[1]")
            && r.stderr.contains("listed twice"),
        "{r:?}"
    );
    assert_eq!(
        sw.appctl(&["config/show"]).stdout,
        before,
        "configuration unchanged"
    );
    let t0 = sw.port_counter("b", "tx_packets");
    std::thread::sleep(Duration::from_millis(200));
    assert!(sw.port_counter("b", "tx_packets") > t0, "traffic goes on");
    std::fs::write(
        &cfg,
        base.replace("name = \"b\"", "name = \"b\"\nmax_macs = 7"),
    )
    .unwrap();
    let r = sw.appctl(&["config/reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("changed port b"), "{r:?}");
    sw.stop();
}

/// Where a switch's start ports come from.
#[derive(Debug, Clone, Copy)]
enum StartedFrom {
    Flags,
    File,
    Both,
}

/// Every runtime change (port/add, port/set, port/del, bridge/set, sflow/set, config/reload,
/// SIGHUP) behaves the same for a switch started from `--port` flags only, from a file only,
/// and from both: each answers, each port keeps its sFlow ifIndex across every change, a new
/// port gets the lowest index free and goes after the others.
#[test]
fn runtime_changes_work_alike_from_flags_from_a_file_and_from_both() {
    require_hugepages();
    for from in [StartedFrom::Flags, StartedFrom::File, StartedFrom::Both] {
        let port = |name: &str, n: u32| format!("{name}=net_null{n},no-rx=1");
        let table = |name: &str, n: u32| {
            format!("[[ports]]\nname = \"{name}\"\ndevargs = \"net_null{n},no-rx=1\"\n")
        };
        let (file, flags) = match from {
            StartedFrom::Flags => (String::new(), vec![port("a", 0), port("b", 1)]),
            StartedFrom::File => (format!("{}{}", table("a", 0), table("b", 1)), vec![]),
            StartedFrom::Both => (table("a", 0), vec![port("b", 1)]),
        };
        let cfg = ConfigFile::new(&file);
        let mut args: Vec<String> = flags.iter().map(|f| format!("--port={f}")).collect();
        if !file.is_empty() {
            args.extend(cfg.args());
        }
        let mut sw = Switch::start(&args);
        sw.wait_ready();
        // (name, ifIndex) of every port, in port order.
        let indexes = |sw: &Switch| -> Vec<(String, u64)> {
            sw.ctl_json(&["port/show"])["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["if_index"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        let want = |w: &[(&str, u64)]| -> Vec<(String, u64)> {
            w.iter().map(|(n, i)| (n.to_string(), *i)).collect()
        };
        let ok = |sw: &Switch, args: &[&str]| {
            let r = sw.appctl(args);
            assert_eq!(r.code, 0, "{from:?}: {args:?}: {r:?}");
            r.stdout
        };
        assert_eq!(indexes(&sw), want(&[("a", 1), ("b", 2)]), "{from:?}");
        ok(&sw, &["port/add", "c", "net_null2,no-rx=1"]);
        assert_eq!(
            indexes(&sw),
            want(&[("a", 1), ("b", 2), ("c", 3)]),
            "{from:?}: port/add"
        );
        ok(&sw, &["port/set", "c", "vlan=10"]);
        ok(&sw, &["port/set", "b", "max_macs=8"]);
        assert_eq!(
            indexes(&sw),
            want(&[("a", 1), ("b", 2), ("c", 3)]),
            "{from:?}: port/set"
        );
        ok(&sw, &["port/del", "a"]);
        assert_eq!(
            indexes(&sw),
            want(&[("b", 2), ("c", 3)]),
            "{from:?}: port/del keeps the others' indexes"
        );
        ok(&sw, &["port/add", "d", "net_null3,no-rx=1"]);
        assert_eq!(
            indexes(&sw),
            want(&[("b", 2), ("c", 3), ("d", 1)]),
            "{from:?}: a new port takes the lowest index free"
        );
        let r = sw.appctl(&["port/set", "d", "if_index=2"]);
        assert_eq!(r.code, 2, "{from:?}: a taken index is refused: {r:?}");
        assert!(
            r.stderr.contains("if_index 2") && r.stderr.contains("\"b\""),
            "{from:?}: {r:?}"
        );
        ok(&sw, &["bridge/set", "fdb_aging_secs=60"]);
        ok(
            &sw,
            &[
                "sflow/set",
                "agent_address=192.0.2.1",
                "collectors=[\"127.0.0.1:9\"]",
                "polling_interval=0",
            ],
        );
        assert_eq!(
            indexes(&sw),
            want(&[("b", 2), ("c", 3), ("d", 1)]),
            "{from:?}: bridge/set and sflow/set"
        );
        ok(&sw, &["port/del", "c"]);
        ok(&sw, &["port/del", "d"]);
        ok(&sw, &["port/add", "e", "net_null4,no-rx=1"]);
        assert_eq!(
            indexes(&sw),
            want(&[("b", 2), ("e", 1)]),
            "{from:?}: port/del, port/add"
        );
        // The start's configuration again: e goes, a comes back with the lowest index free.
        let out = ok(&sw, &["config/reload"]);
        assert!(
            out.contains("removed port e") && out.contains("added port a"),
            "{from:?}: {out}"
        );
        assert_eq!(
            indexes(&sw),
            want(&[("a", 1), ("b", 2)]),
            "{from:?}: config/reload"
        );
        ok(&sw, &["port/add", "f", "net_null5,no-rx=1"]);
        sw.signal(nix::sys::signal::Signal::SIGHUP);
        sw.wait_for_log("SIGHUP: configuration reloaded", Duration::from_secs(10));
        assert_eq!(
            indexes(&sw),
            want(&[("a", 1), ("b", 2)]),
            "{from:?}: SIGHUP"
        );
        let shown = ok(&sw, &["config/show"]);
        assert!(shown.contains("if_index = 2"), "{from:?}: {shown}");
        sw.stop();
    }
}
