//! Every frame that enters a port is accounted for: frames the device itself drops (too large
//! for its receive buffers, no descriptor, no mbuf, send errors) show in `port/show`, the stats
//! JSON, `/metrics` and the sFlow generic counters, and a frame the egress device refuses for
//! its size is counted under a reason of its own, without taking the frames behind it along.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pmdswitch_tests::sflow::{collector, decode, Decoded};
use pmdswitch_tests::*;

/// Frames larger than a tap port's receive buffers never reach the switch: the tap driver
/// counts them as receive errors, and the operator sees them everywhere a port is shown.
#[test]
fn frames_the_device_drops_show_in_port_show_stats_metrics_and_sflow() {
    let id = std::process::id() % 100_000;
    let tap = format!("pacc{id}");
    let dir = tempfile::tempdir().unwrap();
    let (sflow_port, stop, h) = collector();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let cfg = ConfigFile::new(&format!(
        "[[ports]]\nname = \"t\"\ndevargs = \"net_tap0,iface={tap}\"\n\
         [[ports]]\nname = \"sink\"\ndevargs = \"net_pcap0,tx_pcap={}\"\n\
         [sflow]\ncollectors = [\"127.0.0.1:{sflow_port}\"]\nagent_address = \"192.0.2.1\"\n\
         sampling_rate = 0\npolling_interval = 1\n",
        dir.path().join("out.pcap").display()
    ));
    let mut args = cfg.args();
    args.extend(["--metrics".into(), metrics.clone()]);
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    wait_for_iface(&tap, Duration::from_secs(10));
    // The kernel side takes large frames; the switch's buffers hold 2 KiB.
    sh(&format!(
        "sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1; ip link set {tap} mtu 4000 up"
    ));
    let big: Vec<Vec<u8>> = [2100usize, 3000, 3990]
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(BROADCAST, mac(1), len, i as u16))
        .collect();
    raw_send(None, &tap, 30, 0, &big);
    raw_send(None, &tap, 5, 0, &[frame(BROADCAST, mac(1), 100, 99)]);
    std::thread::sleep(Duration::from_millis(2500));

    let show = sw.ctl_json(&["port/show", "t"]);
    let p = &show["ports"][0];
    assert_eq!(p["rx_errors"], 30, "port/show t: {p}");
    assert!(p["rx_packets"].as_u64().unwrap() >= 5, "port/show t: {p}");
    assert_eq!(p["device"]["ierrors"], 30, "{p}");
    let text = sw.appctl(&["port/show", "t"]).stdout;
    assert!(text.contains("rx errors 30"), "{text}");
    let (code, body) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        metric_value(&body, "pmdswitch_port_rx_errors_total{port=\"t\"}"),
        Some(30.0),
        "{body}"
    );
    // A newer counter sample than the frames: ifInErrors holds them.
    std::thread::sleep(Duration::from_millis(1200));
    let done = sw.stop();
    stop.store(true, Ordering::Relaxed);
    let mut d = Decoded::default();
    for dg in h.join().unwrap() {
        decode(&dg, &mut d);
    }
    let last = d
        .counters
        .iter()
        .rev()
        .find(|c| c.source == 1)
        .expect("counter samples of ifIndex 1");
    assert_eq!(last.in_errors, 30, "{last:?}");
    let stats = done.stats.unwrap();
    assert_eq!(port_stat(&stats, "t", "rx_errors"), 30, "{stats}");
}

/// A frame longer than the egress tap's MTU (the bridge's, and the source port's, is larger)
/// is dropped for the tap alone as egress_oversize (sFlow's pkt_too_big), never as tx_full,
/// and every frame behind it in the burst is sent. (The tap driver, given such a frame, would
/// stop there and refuse the rest: `TxQueue::flush` counts that too, as dataplane's
/// dpdk_layer test shows.)
#[test]
fn a_frame_the_egress_device_refuses_for_its_size_is_counted_as_such() {
    let id = std::process::id() % 100_000;
    let tap = format!("pbig{id}");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    // One burst: small frames with 2040-byte ones (within the bridge's MTU of 2026, beyond
    // the tap's 1500) between them.
    let mut frames = Vec::new();
    let mut small = Vec::new();
    for i in 0..24u16 {
        let f = if i % 3 == 1 {
            frame(BROADCAST, mac(1), 2040, i)
        } else {
            let f = frame(BROADCAST, mac(1), 100, i);
            small.push(f.clone());
            f
        };
        frames.push(f);
    }
    write_pcap(&input, &frames);
    let cfg = ConfigFile::new(&format!(
        "[bridge]\nmtu = 2026\n\
         [[ports]]\nname = \"t\"\ndevargs = \"net_tap0,iface={tap}\"\nmtu = 1500\n\
         [[ports]]\nname = \"src\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n",
        input.display()
    ));
    // The pcap port is read as soon as the switch forwards: its first burst must find the
    // tap's kernel side up and captured. A pcap port added at runtime starts reading then.
    let cfg_tap_only = ConfigFile::new(&format!(
        "[bridge]\nmtu = 2026\n[[ports]]\nname = \"t\"\ndevargs = \"net_tap0,iface={tap}\"\nmtu = 1500\n"
    ));
    let mut sw = Switch::start(&cfg_tap_only.args());
    sw.wait_ready();
    wait_for_iface(&tap, Duration::from_secs(10));
    sh(&format!(
        "sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1; ip link set {tap} up"
    ));
    let cap = RawCapture::start(None, &tap, 3.0);
    std::fs::copy(cfg.path(), cfg_tap_only.path()).unwrap();
    let r = sw.appctl(&["config/reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let got = cap.frames();
    let done = sw.stop();
    let stats = done.stats.unwrap();
    assert_frames("t (kernel side)", &got, &small);
    assert_eq!(stats["drops"]["egress_oversize"], 8, "{}", stats["drops"]);
    assert_eq!(stats["drops"]["tx_full"], 0, "{}", stats["drops"]);
    assert_eq!(port_stat(&stats, "t", "tx_packets"), 16, "{stats}");
    assert_eq!(port_stat(&stats, "t", "tx_dropped"), 8, "{stats}");
}
