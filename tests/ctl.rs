//! The control socket against the real binary: the stock `ovs-appctl` (Debian's
//! openvswitch-common) and `pmdswitch ctl`, the FDB commands, and bad clients.
//!
//! Every switch here starts through the harness (`Switch`, `eal_args`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed; its control
//! socket lives in the switch's temporary directory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pmdswitch_tests::*;

/// Polls `f` every 100 ms until it returns Some, for at most `timeout`.
fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fdb/show` rows as (port, vlan, mac, age).
fn fdb_rows(text: &str) -> Vec<(String, String, String, String)> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(" port  VLAN  MAC                Age"),
        "{text}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{l:?}");
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

fn mac_str(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// Frames from a to b on p0 and from b to a on p1: `ovs-appctl fdb/show` (with and without
/// the bridge name) lists both addresses on the ports they came from, in OVS's layout, and
/// `pmdswitch ctl --json fdb/show` says the same as JSON.
#[test]
fn ovs_appctl_fdb_show_after_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (mac(1), mac(2));
    write_pcap(
        &dir.path().join("in0.pcap"),
        &(0..32).map(|i| frame(b, a, 60, i)).collect::<Vec<_>>(),
    );
    write_pcap(
        &dir.path().join("in1.pcap"),
        &(0..32).map(|i| frame(a, b, 60, i)).collect::<Vec<_>>(),
    );
    let args: Vec<String> = (0..2)
        .map(|i| {
            let d = dir.path().display();
            format!("--port=p{i}=net_pcap{i},rx_pcap={d}/in{i}.pcap,tx_pcap={d}/out{i}.pcap")
        })
        .collect();
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let rows = eventually(Duration::from_secs(10), "two learned addresses", || {
        let out = sw.appctl(&["fdb/show"]);
        assert_eq!(out.code, 0, "{out:?}");
        let rows = fdb_rows(&out.stdout);
        (rows.len() == 2).then_some(rows)
    });
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("p0", "0"));
    assert_eq!(rows[0].2, mac_str(1));
    assert_eq!((rows[1].0.as_str(), rows[1].2.clone()), ("p1", mac_str(2)));
    for r in &rows {
        let age: u32 = r.3.parse().expect("a dynamic entry's age is a number");
        assert!(age < 300, "{r:?}");
    }
    let with_bridge = sw.appctl(&["fdb/show", "br0"]);
    assert_eq!(fdb_rows(&with_bridge.stdout), rows, "{with_bridge:?}");

    let v = sw.ctl_json(&["fdb/show"]);
    assert_eq!(v["bridge"], "br0");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{v}");
    assert_eq!(
        (entries[0]["port"].as_str(), entries[0]["mac"].as_str()),
        (Some("p0"), Some(mac_str(1).as_str()))
    );
    // Every command answers JSON with format=json, through ovs-appctl too.
    for cmd in [
        "list-commands",
        "version",
        "fdb/stats-show",
        "port/show",
        "pmd/stats-show",
        "pmd/rxq-show",
        "sflow/show",
        "config/show",
        "coverage/show",
    ] {
        let out = sw.appctl(&[cmd, "format=json"]);
        assert_eq!(out.code, 0, "{cmd}: {out:?}");
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{cmd}: {e}: {}", out.stdout));
        assert!(v.is_object(), "{cmd}: {v}");
    }
    let stats = sw.ctl_json(&["fdb/stats-show"]);
    assert_eq!(stats["entries"], 2, "{stats}");
    assert!(stats["learned"].as_u64() >= Some(2), "{stats}");
    let rxq = sw.appctl(&["pmd/rxq-show"]).stdout;
    assert!(
        rxq.starts_with("pmd thread lcore 1:")
            && rxq.contains("port: p0")
            && rxq.contains("port: p1"),
        "{rxq}"
    );
    let version = sw.appctl(&["version"]).stdout;
    assert!(
        version.starts_with("pmdswitch ") && version.contains("DPDK"),
        "{version}"
    );

    // flush: gone from the table.
    let out = sw.appctl(&["fdb/flush", "br0", "p0"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = fdb_rows(&sw.appctl(&["fdb/show"]).stdout);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "p1");

    // exit stops the switch like SIGTERM, and the socket goes away with it.
    let out = sw.appctl(&["exit"]);
    assert_eq!(out.code, 0, "{out:?}");
    let path = sw.ctl_path().to_owned();
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    assert!(!path.exists(), "{} left behind", path.display());
}

/// Unknown commands, wrong arguments and a wrong bridge: exit 2 and a message that says what
/// is allowed, from ovs-appctl and from pmdswitch ctl; a missing socket: exit 1 naming it.
#[test]
fn errors_exit_2_with_the_message() {
    let mut sw = Switch::start(&["--port=a=net_null0,no-rx=1".to_string()]);
    sw.wait_ready();
    let out = sw.appctl(&["no/such-command"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("\"no/such-command\" is not a valid command (use \"list-commands\""),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    for (args, needle) in [
        (
            &["fdb/add", "a", "4096", "02:00:00:00:00:01"][..],
            "0 to 4095",
        ),
        (
            &["fdb/add", "nope", "0", "02:00:00:00:00:01"],
            "no port \"nope\"",
        ),
        (&["fdb/add", "a", "0", "01:00:5e:00:00:01"], "group address"),
        (
            &["fdb/add", "a", "0", "02:00:00:00:01"],
            "not a MAC address",
        ),
        (&["fdb/add", "a"], "takes 3 to 4 argument"),
        (&["fdb/show", "br7"], "this switch's bridge is \"br0\""),
        (&["fdb/del", "0", "02:00:00:00:00:33"], "no entry"),
    ] {
        let out = sw.appctl(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
        let ours = sw.ctl(args);
        assert_eq!(ours.code, 2, "{args:?}: {ours:?}");
        assert!(ours.stderr.contains(needle), "{args:?}: {ours:?}");
    }
    // A client that shuts its sending side after the request is still answered, then closed.
    let mut s = UnixStream::connect(sw.ctl_path()).unwrap();
    s.write_all(br#"{"id":"a","method":"version","params":[]}"#)
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let reply: Value = serde_json::from_slice(&got).expect("a reply");
    assert_eq!(reply["id"], "a");
    assert!(
        reply["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("pmdswitch")),
        "{reply}"
    );
    assert!(reply["error"].is_null() && closed, "{reply}");

    let missing = std::env::temp_dir().join("pmdswitch-no-such.ctl");
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("ctl").arg("--socket").arg(&missing).arg("version");
    let out = CmdOut::of(cmd);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{out:?}"
    );
}

/// An endless stream from a to an unknown c floods to both sinks; `fdb/add s2 0 c` (OVS's form
/// with the bridge name too) makes c static on s2: shown `static`, and from then on the frames
/// go to s2 only. `fdb/del` removes it and flooding resumes.
#[test]
fn fdb_add_makes_a_static_entry_that_traffic_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (mac(1), mac(9));
    let src = dir.path().join("src.pcap");
    write_pcap(
        &src,
        &(0..64).map(|i| frame(c, a, 60, i)).collect::<Vec<_>>(),
    );
    let args = vec![
        format!(
            "--port=src=net_pcap0,rx_pcap={},infinite_rx=1",
            src.display()
        ),
        "--port=s1=net_null1,no-rx=1".to_string(),
        "--port=s2=net_null2,no-rx=1".to_string(),
    ];
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let tx = |sw: &Switch| {
        (
            sw.port_counter("s1", "tx_packets"),
            sw.port_counter("s2", "tx_packets"),
        )
    };
    let (s1, s2) = eventually(Duration::from_secs(10), "flooding", || {
        let t = tx(&sw);
        (t.0 > 0 && t.1 > 0).then_some(t)
    });
    let out = sw.appctl(&["fdb/add", "br0", "s2", "0", &mac_str(9)]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = fdb_rows(&sw.appctl(&["fdb/show"]).stdout);
    assert!(
        rows.contains(&("s2".into(), "0".into(), mac_str(9), "static".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("src".into(), "0".into(), mac_str(1), "0".into()))
            || rows.iter().any(|r| r.0 == "src"),
        "{rows:?}"
    );
    // Frames already in tx batches may still reach s1 for a moment; then s1 stands still.
    std::thread::sleep(Duration::from_millis(200));
    let (s1_a, s2_a) = tx(&sw);
    std::thread::sleep(Duration::from_millis(500));
    let (s1_b, s2_b) = tx(&sw);
    assert!(s1_a >= s1 && s2_a > s2, "{s1}->{s1_a}, {s2}->{s2_a}");
    assert_eq!(
        s1_b, s1_a,
        "s1 still receives frames for a static entry on s2"
    );
    assert!(
        s2_b > s2_a + 1000,
        "s2 gets the unicast frames: {s2_a} -> {s2_b}"
    );
    // The static entry survives a flush of learned entries.
    assert_eq!(sw.appctl(&["fdb/flush"]).code, 0);
    let rows = fdb_rows(&sw.appctl(&["fdb/show"]).stdout);
    assert!(
        rows.iter().any(|r| r.0 == "s2" && r.3 == "static"),
        "{rows:?}"
    );

    let out = sw.ctl(&["fdb/del", "s2", "0", &mac_str(9)]);
    assert_eq!(out.code, 0, "{out:?}");
    std::thread::sleep(Duration::from_millis(200));
    let s1_c = sw.port_counter("s1", "tx_packets");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sw.port_counter("s1", "tx_packets") > s1_c + 1000,
        "flooding did not resume"
    );
    sw.stop();
}

/// pmd/stats-clear: the figures shown start over, the counters the stats JSON reads do not.
#[test]
fn pmd_stats_clear_keeps_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let args = endless_source_and_sink(dir.path());
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    std::thread::sleep(Duration::from_millis(500));
    let packets = |sw: &Switch| {
        sw.ctl_json(&["pmd/stats-show"])["pmds"][0]["packets"]
            .as_u64()
            .expect("packets")
    };
    let before = packets(&sw);
    assert!(before > 10_000, "{before}");
    assert_eq!(sw.ctl(&["pmd/stats-clear"]).code, 0);
    let after = packets(&sw);
    assert!(after < before, "cleared: {after} vs {before}");
    let text = sw.appctl(&["pmd/stats-show"]).stdout;
    for needle in [
        "pmd thread lcore 1:",
        "packets received:",
        "idle cycles:",
        "processing cycles:",
        "avg cycles per packet:",
        "cycles per burst: p50",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let rx = sw.port_counter("src", "rx_packets");
    assert!(
        rx >= before,
        "port counters are not cleared: {rx} < {before}"
    );
    sw.stop();
}

/// Reads until the server closes the connection or `timeout` passes; returns what came and
/// whether it closed.
fn read_until_closed(s: &mut UnixStream, timeout: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Garbage on the socket: broken JSON (error reply, then closed), a 10 MB request (refused),
/// a silent client (closed after ~5 s), a client leaving mid-request, random bytes, and 100
/// clients at once. Meanwhile the switch forwards on (its /metrics, served apart, shows the
/// sink's counter rising), and afterwards it answers ovs-appctl as before.
#[test]
fn garbage_and_crowds_on_the_socket_do_not_disturb_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let mut args = endless_source_and_sink(dir.path());
    args.push(format!("--metrics={metrics}"));
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let path = sw.ctl_path().to_owned();
    let sink_tx = || {
        let (code, body) = http_get(&metrics, "/metrics").expect("scrape");
        assert_eq!(code, 200);
        metric_value(&body, "pmdswitch_port_tx_packets_total{port=\"sink\"}").expect("sink series")
            as u64
    };
    let mut last = sink_tx();
    let mut check_forwarding = |what: &str| {
        std::thread::sleep(Duration::from_millis(200));
        let now = sink_tx();
        assert!(
            now > last + 1000,
            "forwarding stalled during {what}: {last} -> {now}"
        );
        last = now;
    };

    // Silent clients, opened first: closed by the switch after about 5 s.
    let mut silent: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let silent_since = Instant::now();

    // Broken JSON: an error reply, then the connection is closed.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"{\"id\":1,\"method\":]").unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let reply: Value = serde_json::from_slice(&got)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&got)));
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("malformed")),
        "{reply}"
    );
    assert!(reply["result"].is_null() && closed, "{reply}");
    check_forwarding("broken JSON");

    // 10 MB request: refused (error reply or closed), never buffered whole.
    let mut s = UnixStream::connect(&path).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut big = b"{\"id\":2,\"method\":\"version\",\"params\":[\"".to_vec();
        big.resize(10 << 20, b'x');
        let _ = w.write_all(&big);
    });
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(closed, "a 10 MB request was not refused");
    if !got.is_empty() {
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("exceeds"), "{text}");
    }
    writer.join().unwrap();
    check_forwarding("a 10 MB request");

    // Mid-request departures and random bytes.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..50 {
        let mut s = UnixStream::connect(&path).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"{\"id\":3,\"method\":\"fdb/sh");
        } else {
            let bytes: Vec<u8> = (0..(i * 37 % 3000 + 1))
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            let _ = s.write_all(&bytes);
        }
        drop(s);
    }
    check_forwarding("random bytes");

    // 100 clients at once, each asking for version: every one gets an answer or is closed,
    // none hangs.
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let Ok(mut s) = UnixStream::connect(&path) else {
                    return false;
                };
                let req = format!("{{\"id\":{i},\"method\":\"version\",\"params\":[]}}");
                if s.write_all(req.as_bytes()).is_err() {
                    return false;
                }
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 512];
                matches!(s.read(&mut buf), Ok(n) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains("pmdswitch"))
            })
        })
        .collect();
    let answered = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|&ok| ok)
        .count();
    assert!(answered >= 1, "none of 100 clients got an answer");
    check_forwarding("100 clients");

    // The silent clients are gone after the idle timeout.
    for s in &mut silent {
        let (_, closed) = read_until_closed(s, Duration::from_secs(8));
        assert!(closed, "a silent client was kept open");
    }
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "closed too early: {waited:?}"
    );
    check_forwarding("silent clients");

    // And a good request afterwards is answered as ever.
    let out = sw.appctl(&["version"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("pmdswitch "), "{out:?}");
    let rows = sw.appctl(&["fdb/show"]).stdout;
    assert!(rows.contains(&mac_str(1)), "{rows}");
    sw.stop();
}

/// A second switch on the socket of a running one is refused with a message naming the path;
/// a stale socket (nobody listening) is replaced.
#[test]
fn socket_in_use_is_refused_and_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sw.ctl");
    // Stale: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let ctl = format!("--ctl={}", path.display());
    let mut sw = Switch::start(&["--port=a=net_null0,no-rx=1".to_string(), ctl.clone()]);
    sw.wait_ready();
    assert_eq!(sw.appctl(&["version"]).code, 0);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let second = run_for(&["--port=b=net_null0,no-rx=1".to_string(), ctl], 1.0);
    assert!(!second.status.success(), "{}", second.output);
    assert!(
        second.output.contains(&path.display().to_string())
            && second.output.contains("another pmdswitch"),
        "{}",
        second.output
    );
    assert_eq!(
        sw.appctl(&["version"]).code,
        0,
        "the first switch lost its socket"
    );
    // A switch that fails on its metrics address leaves no socket behind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = dir.path().join("other.ctl");
    let failed = run_for(
        &[
            "--port=c=net_null0,no-rx=1".to_string(),
            format!("--ctl={}", other.display()),
            format!("--metrics={}", taken.local_addr().unwrap()),
        ],
        1.0,
    );
    assert!(!failed.status.success(), "{}", failed.output);
    assert!(
        failed.output.contains("metrics endpoint"),
        "{}",
        failed.output
    );
    assert!(!other.exists(), "{} left behind", other.display());
    sw.stop();
}
