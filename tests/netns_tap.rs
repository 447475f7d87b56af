//! Hosts in network namespaces on net_tap ports: ARP, ping and TCP through the switch.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use pmdswitch_tests::*;

#[test]
fn three_hosts_ping_every_pair_and_run_tcp() {
    for tool in ["ip", "ping", "iperf3"] {
        assert!(
            sh_ok(&format!("command -v {tool}")),
            "{tool} is needed (scripts/setup.sh installs it)"
        );
    }
    let id = std::process::id() % 100_000;
    let ifs: Vec<String> = (1..=3).map(|i| format!("pst{id}h{i}")).collect();
    let args: Vec<String> = ifs
        .iter()
        .enumerate()
        .map(|(i, ifname)| format!("--port=vm{}=net_tap{i},iface={ifname}", i + 1))
        .collect();
    let mut sw = Switch::start(&args);
    sw.wait_ready();
    let hosts: Vec<Netns> = ifs
        .iter()
        .enumerate()
        .map(|(i, ifname)| {
            wait_for_iface(ifname, Duration::from_secs(10));
            let ns = Netns::new(&format!("pmdsw{id}h{}", i + 1));
            ns.adopt(ifname, &format!("10.99.0.{}/24", i + 1));
            ns
        })
        .collect();

    for (i, from) in hosts.iter().enumerate() {
        for j in 0..hosts.len() {
            if i == j {
                continue;
            }
            let cmd = from.exec(&format!("ping -c 3 -i 0.2 -W 2 10.99.0.{}", j + 1));
            let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{cmd}:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("3 received"), "{cmd}:\n{text}");
        }
    }

    // TCP: iperf3 from host 1 to host 2, three seconds.
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(hosts[1].exec("iperf3 -s -1 -B 10.99.0.2"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("sh")
        .arg("-c")
        .arg(hosts[0].exec("timeout 20 iperf3 -c 10.99.0.2 -t 3 -J"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("iperf3 -J output");
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second");
    eprintln!("iperf3 through pmdswitch: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 1e6, "TCP ran at {bps} bit/s");

    sw.signal(Signal::SIGTERM);
    let (done, _) = sw.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.expect("stats");
    assert!(
        stats["fdb"]["learned"].as_u64().unwrap() >= 3,
        "the three hosts were learned: {}",
        stats["fdb"]
    );
    assert!(
        port_stat(&stats, "vm2", "tx_packets") > 1000,
        "TCP segments reached host 2"
    );
    drop(hosts);
}
