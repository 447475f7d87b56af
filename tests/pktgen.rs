//! `pmdswitch pktgen` against peers whose behaviour is known: a plain wire (a net_ring port
//! is its own loopback), a wire that drops every 100th frame and swaps one pair, and a device
//! that drops what exceeds a set rate (`impaired_wire`, a DPDK program of this crate on the
//! other side of a vhost-user socket). The generator must report exactly what they did.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmdswitch_tests::*;
use serde_json::Value;

/// Runs pktgen with these arguments and EAL arguments for lcore 0; returns its JSON results
/// and its stdout (the table).
fn pktgen(args: &[&str], json: &Path, extra_eal: &[&str]) -> (Value, String) {
    require_hugepages();
    let mut eal = eal_args_with(&["-l", "0"]);
    eal.extend(extra_eal.iter().map(|s| s.to_string()));
    let out = Command::new(bin())
        .arg("pktgen")
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--")
        .args(&eal)
        .output()
        .expect("run pmdswitch pktgen");
    remove_runtime_dir(&eal);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pktgen failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (v, stdout)
}

/// The impaired wire, serving a vhost-user socket at `sock` on lcore 1.
struct Wire {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    eal: Vec<String>,
}

impl Wire {
    fn start(sock: &Path, faults: &[&str]) -> Wire {
        require_hugepages();
        let eal = eal_args_with(&["-l", "1"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_impaired_wire"))
            .arg("--port")
            .arg(format!("net_vhost0,iface={},queues=1", sock.display()))
            .args(faults)
            .args(["--secs", "120", "--idle-exit", "1.5", "--"])
            .args(&eal)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start impaired_wire");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let w = Wire { child, lines, eal };
        let l = w
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("wire ready");
        assert!(l.contains("ready"), "{l}");
        w
    }

    /// Waits for the wire to see no more traffic and end; returns its counters by name.
    fn finish(mut self) -> std::collections::HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains("received=") => break l,
                Ok(_) => {}
                Err(_) => assert!(Instant::now() < deadline, "the wire never reported"),
            }
        };
        let _ = self.child.wait();
        remove_runtime_dir(&self.eal);
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Through a wire, every frame comes back once and in order, for every size and tagged,
/// at the rate asked, with a latency above zero and far below a second.
#[test]
fn a_plain_wire_returns_every_frame_once_in_order_at_the_rate_asked() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (v, table) = pktgen(
        &[
            "--port",
            "wire=net_ring0",
            "--size",
            "64,1518,9000,imix",
            "--rate",
            "1M",
            "--duration",
            "1",
            "--flows",
            "100",
            "--vlan",
            "10",
            "--pcp",
            "3",
        ],
        &json,
        &[],
    );
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{v}");
    for run in runs {
        let t = &run["trial"];
        let tx = u(t, "tx_frames");
        assert!(
            (950_000..=1_050_000).contains(&tx),
            "1M frames/s for 1 s: {t}"
        );
        assert_eq!(u(t, "rx_frames"), tx, "{t}");
        assert_eq!(u(t, "lost"), 0);
        assert_eq!(u(t, "duplicates"), 0);
        assert_eq!(u(t, "reordered"), 0);
        assert_eq!(u(t, "foreign_frames"), 0);
        // Every port-and-flow learning frame came back too.
        assert_eq!(u(t, "learning_frames_received"), 100, "{t}");
        let l = &t["latency"];
        assert_eq!(u(l, "samples"), tx);
        // Measured, not a floor: the loop from build to receive takes tens of ns at least.
        assert!(u(l, "p50_ns") > 10, "{l}");
        assert!(u(l, "p99_ns") < 100_000_000, "{l}");
        assert!(u(l, "p50_ns") <= u(l, "p99_ns") && u(l, "p99_ns") <= u(l, "max_ns"));
        let sent = t["sent_pps"].as_f64().unwrap();
        assert!((sent - 1e6).abs() < 0.02e6, "sent {sent} frames/s");
        // Pacing rounds down and the last round ends just before the window does.
        assert!(u(t, "unsent") <= tx / 1000, "{t}");
        let mean = run["mean_frame_bytes"].as_f64().unwrap();
        assert_eq!(
            u(&t["streams"][0], "tx_bytes"),
            u(&t["streams"][0], "rx_bytes")
        );
        let per_frame = u(&t["streams"][0], "tx_bytes") as f64 / tx as f64;
        assert!((per_frame - mean).abs() < 1.0, "{per_frame} vs {mean}");
    }
    assert_eq!(runs[3]["size"], "imix");
    assert!(
        table.contains("wire") && table.contains("p99 us"),
        "{table}"
    );
}

/// A wire that drops every 100th frame and swaps one pair: the generator reports exactly the
/// frames the wire did not pass as lost, and the one swapped frame as reordered.
#[test]
fn loss_and_reordering_are_reported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wire.sock");
    let wire = Wire::start(&sock, &["--drop-every", "100", "--swap-at", "1050"]);
    let json = dir.path().join("r.json");
    let port = format!("net_virtio_user0,path={},queues=1", sock.display());
    let (v, _) = pktgen(
        &[
            "--port",
            &port,
            "--no-learn",
            "--rate",
            "300k",
            "--duration",
            "2",
        ],
        &json,
        &["--single-file-segments"],
    );
    let w = wire.finish();
    let t = &v["runs"][0]["trial"];
    let tx = u(t, "tx_frames");
    assert_eq!(w["received"], tx, "the wire saw every frame sent: {w:?}");
    assert_eq!(w["swapped"], 1, "{w:?}");
    assert_eq!(w["dropped"], tx / 100);
    assert_eq!(
        u(t, "lost"),
        w["dropped"] + w["tx_full"],
        "lost = what the wire dropped: {t} {w:?}"
    );
    assert_eq!(u(t, "reordered"), 1, "{t}");
    assert_eq!(u(t, "duplicates"), 0);
    assert_eq!(u(t, "rx_frames"), w["forwarded"]);
}

/// RFC 2544 throughput against a device that forwards at most 1 Mpps and drops the rest:
/// the search ends just under 1 Mpps, the device (not the generator) is the bound, and the
/// latency trial at half of it runs. A failed trial is repeated twice (loss verification):
/// the wire is a process on a shared machine, and a stall of it would read as its limit.
#[test]
fn the_rfc2544_search_converges_on_the_rate_a_device_drops_above() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wire.sock");
    let wire = Wire::start(&sock, &["--max-pps", "1000000"]);
    let json = dir.path().join("r.json");
    let port = format!("net_virtio_user0,path={},queues=1", sock.display());
    let png = dir.path().join("r.png");
    let (v, table) = pktgen(
        &[
            "--port",
            &port,
            "--rfc2544",
            "--trial-secs",
            "0.5",
            "--resolution",
            "1",
            "--trial-retries",
            "2",
            "--latency-loads",
            "50",
            "--flows",
            "16",
            "--png",
            png.to_str().unwrap(),
        ],
        &json,
        &["--single-file-segments"],
    );
    let w = wire.finish();
    let r = &v["rfc2544"][0];
    let ndr = r["ndr"]["pps"].as_f64().unwrap();
    let pdr = r["pdr"]["pps"].as_f64().unwrap();
    let gen = r["generator_pps"].as_f64().unwrap();
    assert!(
        gen > 1.2e6,
        "the generator outruns the device: {gen} ({w:?})"
    );
    assert_eq!(r["ndr"]["generator_bound"], false);
    assert!(
        (0.8e6..=1.03e6).contains(&ndr),
        "NDR {ndr} for a 1 Mpps device\n{table}"
    );
    assert!(pdr >= ndr && pdr <= 1.03e6 / 0.995, "PDR {pdr}\n{table}");
    let trials = r["search_trials"].as_array().unwrap();
    assert!(
        trials.len() <= 21,
        "{} trials: 1 + --max-trials",
        trials.len()
    );
    // Some trial above the device's rate lost frames, and the wire counted them as over rate.
    assert!(trials.iter().any(|t| u(t, "lost") > 0));
    assert!(w["over_rate"] > 0, "{w:?}");
    let lat = &r["latency"][0];
    assert_eq!(lat["load_percent"], 50.0);
    assert!(u(&lat["trial"]["latency"], "samples") > 0);
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
