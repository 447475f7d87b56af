//! Start, signals, exit status, stats file, and mbuf accounting across a run.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::time::Duration;

use nix::sys::signal::Signal;
use pmdswitch_tests::*;

/// Sends `sig` and asserts what an operator relies on: exit status 0 within 5 seconds.
fn stop_cleanly(sw: Switch, sig: Signal) -> Finished {
    sw.signal(sig);
    let (done, took) = sw.wait(Duration::from_secs(30));
    assert!(
        done.status.success(),
        "exit status {}\n{}",
        done.status,
        done.output
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop on {sig}"
    );
    done
}

fn tap_name(tag: &str) -> String {
    format!("pst{}{tag}", std::process::id() % 100_000)
}

/// Traffic on three kinds of port (an endless pcap source, a null sink, a tap), then SIGTERM:
/// the switch exits 0 within seconds, writes its stats, and every mbuf it took from the pool
/// is back (in use at stop == in use at start; none after the ports close).
#[test]
fn sigterm_stops_cleanly_and_leaks_no_mbufs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.pcap");
    let (a, b) = (mac(1), mac(2));
    let mut frames = Vec::new();
    for i in 0..64u16 {
        frames.push(frame(BROADCAST, a, 60, i)); // flooded: shared mbufs, one per egress port
        frames.push(frame(b, a, 128, i)); // unknown unicast: flooded too
        frames.push(frame(a, b, 60, i)); // b learned on the source port, a too: same segment
    }
    write_pcap(&src, &frames);
    let tap = tap_name("l");
    let args = vec![
        format!(
            "--port=src=net_pcap0,rx_pcap={},infinite_rx=1",
            src.display()
        ),
        "--port=sink=net_null0,no-rx=1".to_string(),
        format!("--port=tap=net_tap0,iface={tap}"),
    ];
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let done = stop_cleanly(sw, Signal::SIGTERM);
    let stats = done.stats.expect("stats written on SIGTERM");
    let w = &stats["workers"][0];
    assert!(
        w["packets"].as_u64().unwrap() > 10_000,
        "traffic flowed: {w}"
    );
    assert!(w["flood_copies"].as_u64().unwrap() > 0);
    let m = &stats["mempool"];
    assert!(
        m["in_use_at_start"].as_u64().unwrap() >= 192,
        "the pcap's frames are preloaded: {m}"
    );
    assert_eq!(
        m["in_use_at_stop"], m["in_use_at_start"],
        "mbufs leaked while forwarding: {m}"
    );
    assert_eq!(
        m["in_use_after_close"], 0,
        "mbufs held after the ports closed: {m}"
    );
    // Every received frame is accounted for: switched, or dropped for a reason.
    let rx: u64 = ["src", "sink", "tap"]
        .iter()
        .map(|p| port_stat(&stats, p, "rx_packets"))
        .sum();
    assert_eq!(rx, w["packets"].as_u64().unwrap());
    let unicast = w["unicast"].as_u64().unwrap();
    let flooded = w["flooded"].as_u64().unwrap();
    let dropped: u64 = stats["drops"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "tx_full")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        rx,
        unicast + flooded + dropped,
        "rx = unicast + flooded + drops"
    );
    // No host lives behind the sink, so it gets exactly one copy of every flooded frame.
    assert_eq!(
        port_stat(&stats, "sink", "tx_packets") + port_stat(&stats, "sink", "tx_dropped"),
        flooded
    );
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut sw = Switch::start(&[
        "--port=a=net_null0,no-rx=1".to_string(),
        "--port=b=net_null1,no-rx=1".to_string(),
    ]);
    sw.wait_ready();
    let done = stop_cleanly(sw, Signal::SIGINT);
    assert!(done.stats.is_some());
}

#[test]
fn duration_ends_the_run_with_stats() {
    let done = run_for(
        &[
            "--port=a=net_null0".to_string(),
            "--port=b=net_null1".to_string(),
        ],
        1.0,
    );
    assert!(done.status.success(), "{}", done.output);
    let s = done.stats.unwrap();
    let e = s["elapsed_secs"].as_f64().unwrap();
    assert!((1.0..3.0).contains(&e), "elapsed {e}");
    for field in ["rx_packets", "tx_packets", "rx_dropped", "tx_dropped"] {
        assert!(s["ports"][0][field].is_u64(), "ports[].{field}");
    }
    for field in ["lcore", "packets", "cycles_per_packet"] {
        assert!(!s["workers"][0][field].is_null(), "workers[].{field}");
    }
    let q = &s["workers"][0]["cycles_per_burst"];
    let (p50, p99, p999) = (
        q["p50"].as_u64().unwrap(),
        q["p99"].as_u64().unwrap(),
        q["p999"].as_u64().unwrap(),
    );
    assert!(q["count"].as_u64().unwrap() > 0, "bursts were timed: {q}");
    assert!(
        0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= q["max"].as_u64().unwrap(),
        "{q}"
    );
    assert!(s["fdb"]["entries"].is_u64());
    assert!(s["workers"][0]["packets"].as_u64().unwrap() > 0);
}
