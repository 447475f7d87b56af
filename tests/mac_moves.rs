//! MAC moves made visible and damped: a source seen on two ports in turn is counted and
//! recorded move by move, and once it flaps faster than the threshold it is held on the port it
//! lived on first, logged once.
//!
//! Every switch here starts through the harness (`run_for`, `eal_args`): EAL arguments
//! `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use pmdswitch_tests::*;

#[test]
fn a_flapping_address_is_held_on_its_first_port_and_logged_once() {
    require_hugepages();
    let dir = tempfile::tempdir().unwrap();
    let x = mac(0x77);
    let other = mac(0x01);
    // p1 starts sending first (its pcap is polled first), then both send x forever: x moves
    // between them every poll round, a loop or a spoofer as far as the switch can tell.
    let p1 = dir.path().join("p1.pcap");
    let p2 = dir.path().join("p2.pcap");
    write_pcap(&p1, &[frame(other, x, 60, 1)]);
    write_pcap(&p2, &[frame(other, x, 60, 2)]);
    let cfg = dir.path().join("switch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
mac_flap_moves = 4
mac_flap_window_secs = 10
mac_flap_hold_secs = 60
[[ports]]
name = "p1"
devargs = "net_pcap0,rx_pcap={},infinite_rx=1"
[[ports]]
name = "p2"
devargs = "net_pcap1,rx_pcap={},infinite_rx=1"
[[ports]]
name = "sink"
devargs = "net_null0,no-rx=1"
"#,
            p1.display(),
            p2.display()
        ),
    )
    .unwrap();
    let done = run_for(&[format!("--config={}", cfg.display())], 2.0);
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats written");
    let fdb = &stats["fdb"];
    assert_eq!(fdb["flap_holds"], 1, "{fdb}");
    let held = fdb["held"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{fdb}");
    assert_eq!(held[0]["mac"], "02:00:00:00:00:77");
    let p1_id = stats["ports"][0]["port_id"].as_u64().unwrap();
    assert_eq!(
        held[0]["port_id"].as_u64().unwrap(),
        p1_id,
        "held on its first port"
    );
    assert_eq!(
        done.output.matches("is flapping between ports").count(),
        1,
        "logged once:\n{}",
        done.output
    );
    let moves = fdb["recent_moves"].as_array().unwrap();
    assert!(
        !moves.is_empty() && moves.len() <= 64,
        "{} moves recorded",
        moves.len()
    );
    assert!(moves
        .iter()
        .all(|m| m["mac"] == "02:00:00:00:00:77" && m["from"] != m["to"]));
    // Held within a control tick or two: a tiny share of the frames moved it.
    let moved = fdb["moved"].as_u64().unwrap();
    let from_x = port_stat(&stats, "p2", "rx_packets");
    assert!(from_x > 100_000, "traffic flowed: {from_x}");
    assert!(
        moved * 100 < from_x,
        "moves stopped once held: {moved} moves, {from_x} frames"
    );
    let moves_in: u64 = ["p1", "p2"]
        .iter()
        .map(|p| port_stat(&stats, p, "mac_moves_in"))
        .sum();
    assert_eq!(
        moves_in, moved,
        "moves are counted on the port they moved to"
    );
    // Held, its frames still flow (the static entry stands; nothing is learned from them).
    assert!(port_stat(&stats, "sink", "tx_packets") > 100_000);
}
