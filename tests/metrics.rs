//! Prometheus metrics against the real binary: `promtool check metrics` accepts /metrics, and a
//! real Prometheus server (Debian's prometheus package) scrapes it.
//!
//! Every switch here starts through the harness (`Switch`, `eal_args`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmdswitch_tests::*;

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

fn require(tool: &str) {
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} not found: install Debian's prometheus package (scripts/setup.sh does)"
    );
}

/// A switch forwarding an endless stream from `src` to `sink`, with /metrics on a free port.
fn switch_with_metrics(dir: &std::path::Path) -> (Switch, String) {
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let mut args = endless_source_and_sink(dir);
    args.push(format!("--metrics={addr}"));
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    (sw, addr)
}

/// /metrics passes promtool's checks, has HELP and TYPE for every family, counters that rise,
/// the series the issue asks for; other paths are 404.
#[test]
fn promtool_accepts_metrics() {
    require(PROMTOOL);
    let dir = tempfile::tempdir().unwrap();
    let (sw, addr) = switch_with_metrics(dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = http_get(&addr, "/metrics").expect("scrape");
    assert_eq!(code, 200, "{body}");
    let mut check = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for series in [
        "pmdswitch_port_rx_packets_total{port=\"src\"}",
        "pmdswitch_port_rx_bytes_total{port=\"src\"}",
        "pmdswitch_port_rx_dropped_total{port=\"src\"}",
        "pmdswitch_port_tx_packets_total{port=\"sink\"}",
        "pmdswitch_port_tx_dropped_total{port=\"sink\"}",
        "pmdswitch_drops_total{reason=\"runt\"}",
        "pmdswitch_worker_packets_total{lcore=\"1\"}",
        "pmdswitch_worker_cycles_per_packet{lcore=\"1\"}",
        "pmdswitch_worker_busy_ratio{lcore=\"1\"}",
        "pmdswitch_worker_fdb_lookups_total{lcore=\"1\"}",
        "pmdswitch_worker_fdb_line_reads_total{lcore=\"1\"}",
        "pmdswitch_fdb_entries",
        "pmdswitch_fdb_learned_total",
        "pmdswitch_fdb_moved_total",
        "pmdswitch_fdb_aged_total",
        "pmdswitch_fdb_full_total",
        "pmdswitch_sflow_samples_taken_total",
        "pmdswitch_sflow_flow_samples_sent_total",
        "pmdswitch_sflow_samples_lost_total",
        "pmdswitch_mempool_in_use",
    ] {
        assert!(
            metric_value(&body, series).is_some(),
            "no {series} in\n{body}"
        );
    }
    assert_eq!(
        metric_value(&body, "pmdswitch_fdb_entries"),
        Some(1.0),
        "{body}"
    );
    let busy = metric_value(&body, "pmdswitch_worker_busy_ratio{lcore=\"1\"}").unwrap();
    assert!((0.0..=1.0).contains(&busy), "{busy}");
    let rx = metric_value(&body, "pmdswitch_port_rx_packets_total{port=\"src\"}").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, again) = http_get(&addr, "/metrics").expect("scrape");
    let rx2 = metric_value(&again, "pmdswitch_port_rx_packets_total{port=\"src\"}").unwrap();
    assert!(rx2 > rx, "{rx} -> {rx2}");
    assert_eq!(http_get(&addr, "/").expect("GET /").0, 404);
    assert_eq!(http_get(&addr, "/metricsx").expect("GET").0, 404);
    drop(sw);
}

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus server scrapes the switch every second: its query API reports `up` 1
/// for the target and the sink's tx counter as a number that grows.
#[test]
fn prometheus_scrapes_the_switch() {
    require(PROMETHEUS);
    let dir = tempfile::tempdir().unwrap();
    let (sw, addr) = switch_with_metrics(dir.path());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pmdswitch\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_tcp_port());
    let prom = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prom = Reaped(prom);
    let query = |q: &str| -> Option<f64> {
        let (code, body) = http_get(&web, &format!("/api/v1/query?query={q}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        if let Some(v) = query("up%7Bjob%3D%22pmdswitch%22%7D") {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never reported the target"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(up, 1.0, "up");
    let series = "pmdswitch_port_tx_packets_total%7Bport%3D%22sink%22%7D";
    let first = loop {
        if let Some(v) = query(series) {
            break v;
        }
        assert!(Instant::now() < deadline, "no sink counter in Prometheus");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(first > 0.0, "{first}");
    let later = loop {
        std::thread::sleep(Duration::from_millis(500));
        let v = query(series).expect("series stays");
        if v > first {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the counter never grew past {first}"
        );
    };
    assert!(later > first);
    drop(sw);
}
