//! Two workers sharing one MAC table: ports with two rx queues each, spread over the workers,
//! traffic both ways; every frame is delivered exactly once, never back where it came from.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::collections::HashMap;
use std::time::Duration;

use pmdswitch_tests::*;

#[test]
fn two_workers_deliver_every_frame_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // Port 0 carries A_i -> B_i, port 1 B_i -> A_i, each split over two rx queues (two pcaps).
    // With two ports every frame has exactly one place to go, learned or flooded.
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut tag = 0u16;
    for side in 0..2u8 {
        for q in 0..2 {
            let frames: Vec<Vec<u8>> = (0..400u16)
                .map(|i| {
                    tag += 1;
                    let a = [0x02, 0xa0, 0, 0, (i >> 8) as u8, i as u8];
                    let b = [0x02, 0xb0, 0, 0, (i >> 8) as u8, i as u8];
                    let (src, dst) = if side == 0 { (a, b) } else { (b, a) };
                    frame(dst, src, 60 + usize::from(i % 64), tag)
                })
                .collect();
            write_pcap(
                dir.path().join(format!("in{side}{q}.pcap")).as_path(),
                &frames,
            );
            sent[usize::from(side)].extend(frames);
        }
    }
    let args: Vec<String> = (0..2)
        .map(|p| {
            format!(
                "--port=p{p}=net_pcap{p},rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
                path(&format!("in{p}0.pcap")),
                path(&format!("in{p}1.pcap")),
                path(&format!("out{p}0.pcap")),
                path(&format!("out{p}1.pcap"))
            )
        })
        .chain(["--duration=3".to_string()])
        .collect();
    // Lcores 1 and 2 are both workers; they share CPU 1 (the machine has two).
    let sw = Switch::start_with_eal(&args, eal_args_with(&["--lcores", "0@0,1@1,2@1"]));
    let (done, _) = sw.wait(Duration::from_secs(60));
    assert!(done.status.success(), "{}\n{}", done.status, done.output);
    let stats = done.stats.unwrap();

    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "two workers");
    for w in workers {
        assert!(
            w["packets"].as_u64().unwrap() > 0,
            "each worker switched frames: {w}"
        );
    }
    for p in 0..2 {
        let out: Vec<Vec<u8>> = (0..2)
            .flat_map(|q| read_pcap(dir.path().join(format!("out{p}{q}.pcap")).as_path()))
            .collect();
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for f in &out {
            *seen.entry(f.clone()).or_default() += 1;
        }
        let from_other = &sent[1 - p];
        assert_eq!(
            out.len(),
            from_other.len(),
            "p{p} sent every frame of the other port once"
        );
        for f in from_other {
            assert_eq!(seen.get(f), Some(&1), "frame {:02x?} out of p{p}", &f[..16]);
        }
        assert!(
            sent[p].iter().all(|f| !seen.contains_key(f)),
            "a frame went back out of its own port"
        );
    }
    // Both queues of a port carry the same 400 sources: two workers learn them at once.
    assert_eq!(
        stats["fdb"]["entries"], 800,
        "every source learned once in the shared table"
    );
    assert_eq!(stats["fdb"]["moved"], 0);
}
