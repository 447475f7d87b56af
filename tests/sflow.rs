//! sFlow v5 export end to end: the switch samples real traffic and sends datagrams to a UDP
//! collector on loopback; the datagrams are read by a parser written here from the
//! specification and by tshark's sFlow dissector.
//!
//! Every switch here starts through the harness (`Switch`, `run_for`, `eal_args`): EAL
//! arguments `--no-pci --in-memory --file-prefix <unique>`, so no PCI device is ever probed.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pmdswitch_tests::*;

/// Reads XDR words.
struct Xdr<'a> {
    b: &'a [u8],
    off: usize,
}

impl Xdr<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.b[self.off..self.off + 4].try_into().unwrap());
        self.off += 4;
        v
    }
    fn skip(&mut self, n: usize) {
        self.off += n;
    }
}

#[derive(Debug, Default)]
struct Decoded {
    datagrams: Vec<u32>,
    flows: Vec<Flow>,
    counters: Vec<(u32, u32, u64)>, // source index, ifStatus, ifSpeed
}

#[derive(Debug)]
struct Flow {
    source: u32,
    rate: u32,
    pool: u32,
    input: u32,
    output: u32,
    frame_length: u32,
    stripped: u32,
    header_len: u32,
    src_vlan: u32,
}

/// Parses a datagram strictly: every length must add up, as sflowtool checks. Returns whether
/// it held a counters sample.
fn decode(d: &[u8], out: &mut Decoded) -> bool {
    let counters_before = out.counters.len();
    let mut x = Xdr { b: d, off: 0 };
    assert_eq!(x.u32(), 5, "version");
    assert_eq!(x.u32(), 1, "agent address type IPv4");
    assert_eq!(&d[8..12], &[192, 0, 2, 1], "agent address");
    x.skip(4);
    assert_eq!(x.u32(), 0, "sub-agent id");
    out.datagrams.push(x.u32());
    let _uptime = x.u32();
    let n = x.u32();
    for _ in 0..n {
        let format = x.u32();
        let len = x.u32() as usize;
        let end = x.off + len;
        match format {
            1 => {
                let _seq = x.u32();
                let source = x.u32();
                let (rate, pool, _drops, input, output) =
                    (x.u32(), x.u32(), x.u32(), x.u32(), x.u32());
                assert_eq!(x.u32(), 2, "two flow records");
                assert_eq!(x.u32(), 1, "raw packet header first");
                let rlen = x.u32() as usize;
                let rend = x.off + rlen;
                assert_eq!(x.u32(), 1, "header protocol: Ethernet");
                let (frame_length, stripped, header_len) = (x.u32(), x.u32(), x.u32());
                assert_eq!(
                    rlen,
                    16 + (header_len as usize).div_ceil(4) * 4,
                    "raw header record length"
                );
                x.off = rend;
                assert_eq!(x.u32(), 1001, "extended switch second");
                assert_eq!(x.u32(), 16);
                let src_vlan = x.u32();
                x.skip(12);
                out.flows.push(Flow {
                    source,
                    rate,
                    pool,
                    input,
                    output,
                    frame_length,
                    stripped,
                    header_len,
                    src_vlan,
                });
            }
            2 => {
                let _seq = x.u32();
                let source = x.u32();
                assert_eq!(x.u32(), 2, "two counter records");
                assert_eq!((x.u32(), x.u32()), (1, 88), "generic interface counters");
                let if_index = x.u32();
                assert_eq!(if_index, source);
                assert_eq!(x.u32(), 6, "ifType ethernetCsmacd");
                let speed = (u64::from(x.u32()) << 32) | u64::from(x.u32());
                let _dir = x.u32();
                let status = x.u32();
                x.skip(88 - 24);
                assert_eq!((x.u32(), x.u32()), (2, 52), "ethernet counters");
                x.skip(52);
                out.counters.push((source, status, speed));
            }
            other => panic!("unexpected sample format {other}"),
        }
        assert_eq!(x.off, end, "sample length adds up (format {format})");
    }
    assert_eq!(x.off, d.len(), "datagram length adds up");
    out.counters.len() > counters_before
}

/// A collector on loopback: every datagram received until told to stop.
fn collector() -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(16 << 20)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !s2.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    (port, stop, h)
}

#[test]
fn samples_and_counters_reach_the_collector_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.pcap");
    // 64-byte frames from 64 hosts to an address never learned: flooded to the one other port.
    let frames: Vec<Vec<u8>> = (0..64u8)
        .map(|i| frame([2, 0xee, 0, 0, 0, 1], mac(i), 64, u16::from(i)))
        .collect();
    write_pcap(&src, &frames);
    let (port, stop, h) = collector();
    let cfg = dir.path().join("switch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ports]]\nname = \"src\"\ndevargs = \"net_pcap0,rx_pcap={},infinite_rx=1\"\n\n\
             [[ports]]\nname = \"sink\"\ndevargs = \"net_null0,no-rx=1\"\n\n\
             [sflow]\ncollectors = [\"127.0.0.1:{port}\"]\nagent_address = \"192.0.2.1\"\n\
             sampling_rate = 4096\npolling_interval = 1\nheader_bytes = 128\n",
            src.display()
        ),
    )
    .unwrap();
    let done = run_for(&["--config".into(), cfg.display().to_string()], 3.0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let datagrams = h.join().unwrap();
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.unwrap();

    let mut d = Decoded::default();
    // For tshark: the first datagrams, and every one that carries counters.
    let mut for_tshark = Vec::new();
    for (i, dg) in datagrams.iter().enumerate() {
        assert!(dg.len() <= 1400, "datagram of {} bytes", dg.len());
        if decode(dg, &mut d) || i < 20 {
            for_tshark.push(dg.clone());
        }
    }
    let sent = stats["sflow"]["datagrams"].as_u64().unwrap();
    assert_eq!(
        d.datagrams.len() as u64,
        sent,
        "every datagram sent arrived"
    );
    assert!(
        d.datagrams.windows(2).all(|w| w[1] == w[0] + 1),
        "datagram sequence numbers count up by one"
    );
    assert!(!d.flows.is_empty());
    for f in &d.flows {
        assert_eq!((f.source, f.input, f.rate), (1, 1, 4096), "{f:?}");
        assert_eq!(f.output, 0x8000_0001, "flooded to one port: {f:?}");
        assert_eq!(
            (f.frame_length, f.stripped, f.header_len),
            (68, 4, 64),
            "{f:?}"
        );
        assert_eq!(f.src_vlan, 1, "untagged: the default VLAN");
    }
    // Counter samples for both ports (ifIndex 1 and 2), admin and link up, 10G null/pcap links.
    for idx in [1, 2] {
        assert!(
            d.counters
                .iter()
                .any(|&(s, status, _)| s == idx && status == 3),
            "counters of ifIndex {idx}: {:?}",
            d.counters
        );
    }

    // Statistics: c samples x rate estimates the frames seen. sFlow's published 95% bound is
    // 196 * sqrt(1/c) percent; the test allows 3.29 sigma (99.9%) so that it does not fail
    // one run in twenty, and prints where the run fell.
    let rx = port_stat(&stats, "src", "rx_packets") as f64;
    let c = d.flows.len() as f64;
    let err = (c * 4096.0 - rx).abs() / rx;
    let bound95 = 1.96 * (1.0 / c).sqrt();
    eprintln!(
        "{c} samples x 4096 vs {rx} frames: error {:.3}% (95% bound {:.3}%)",
        100.0 * err,
        100.0 * bound95
    );
    assert!(
        err <= 3.29 * (1.0 / c).sqrt(),
        "estimate off by {:.3}%",
        100.0 * err
    );
    assert_eq!(port_stat(&stats, "src", "samples_lost"), 0);
    assert_eq!(port_stat(&stats, "src", "samples_taken") as f64, c);
    // The sample pool counts every frame the sampler saw: the last one trails rx by the
    // frames after the last sample.
    let last_pool = f64::from(d.flows.last().unwrap().pool);
    assert!(
        last_pool <= rx && rx - last_pool < 100.0 * 4096.0,
        "pool {last_pool} vs rx {rx}"
    );

    // An independent decoder: tshark reads the first datagrams without complaint.
    if sh_ok("command -v tshark") {
        let file = dir.path().join("sflow.pcap");
        write_udp_pcap(&file, &for_tshark, port);
        let out = std::process::Command::new("tshark")
            .args(["-r"])
            .arg(&file)
            .args(["-d", &format!("udp.port=={port},sflow"), "-V"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "InMon sFlow",
            "Datagram version: 5",
            "1 out of 4096 packets",
            "Header protocol: Ethernet (1)",
            "Frame Length: 68",
            "Extended switch data",
        ] {
            assert!(
                text.contains(want),
                "tshark output lacks {want:?}:\n{}",
                &text[..text.len().min(4000)]
            );
        }
        assert!(
            text.to_lowercase().contains("counters sample"),
            "tshark saw no counters sample"
        );
        assert!(
            !text.to_lowercase().contains("malformed"),
            "tshark: malformed"
        );
    } else {
        panic!("tshark is needed for this test (scripts/setup.sh installs it)");
    }
}

#[test]
fn a_collector_that_is_down_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switch.toml");
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let frames: Vec<Vec<u8>> = (0..500u16)
        .map(|i| frame(BROADCAST, mac(1), 60, i))
        .collect();
    write_pcap(&input, &frames);
    // Nothing listens on the discard port, on either family.
    std::fs::write(
        &cfg,
        format!(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
             [[ports]]\nname = \"b\"\ndevargs = \"net_pcap1,tx_pcap={}\"\n\n\
             [sflow]\ncollectors = [\"127.0.0.1:9\", \"[::1]:9\"]\nagent_address = \"2001:db8::1\"\n\
             sampling_rate = 1\npolling_interval = 1\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    let done = run_for(&["--config".into(), cfg.display().to_string()], 2.0);
    assert!(done.status.success(), "{}", done.output);
    let stats = done.stats.unwrap();
    assert_eq!(
        read_pcap(&output),
        frames,
        "every frame forwarded, in order"
    );
    assert_eq!(
        port_stat(&stats, "a", "samples_taken"),
        500,
        "1-in-1 samples all"
    );
    assert!(stats["sflow"]["flow_samples"].as_u64().unwrap() >= 500);
}
