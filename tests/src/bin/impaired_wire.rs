//! A wire with known faults, for testing the generator: one DPDK port whose received frames go
//! back out of it, except every Nth (dropped), one pair (swapped) and whatever exceeds a rate
//! (dropped by a token bucket, like a device that can forward only so much).
//!
//! impaired_wire --port DEVARGS [--drop-every N] [--swap-at K] [--max-pps R] --secs S
//!               [--idle-exit S] -- EAL...
//!
//! It runs for `--secs`, or ends once nothing arrived for `--idle-exit` seconds after the first
//! frame (the generator is done).
//! Prints `impaired_wire: received=.. forwarded=.. dropped=.. swapped=.. over_rate=.. tx_full=..`
//! on exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{tsc, tsc_hz, Burst, Eal, Mbuf, Mempool, Port, PortConfig, TxBatch};

struct Opts {
    port: String,
    drop_every: u64,
    swap_at: Option<u64>,
    max_pps: Option<f64>,
    secs: f64,
    idle_exit: Option<f64>,
    eal: Vec<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        port: String::new(),
        drop_every: 0,
        swap_at: None,
        max_pps: None,
        secs: 10.0,
        idle_exit: None,
        eal: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--port" => o.port = val(),
            "--drop-every" => o.drop_every = val().parse().expect("--drop-every N"),
            "--swap-at" => o.swap_at = Some(val().parse().expect("--swap-at K")),
            "--max-pps" => o.max_pps = Some(val().parse().expect("--max-pps R")),
            "--secs" => o.secs = val().parse().expect("--secs S"),
            "--idle-exit" => o.idle_exit = Some(val().parse().expect("--idle-exit S")),
            "--" => {
                o.eal = args.collect();
                break;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!o.port.is_empty(), "--port DEVARGS is required");
    o
}

fn main() {
    let o = opts();
    let _eal = Eal::init(&o.eal).expect("EAL");
    let pool = Arc::new(Mempool::new_pktmbuf("wire", 16_383, 256, -1).expect("pool"));
    let mut port = Port::probe(&o.port).expect("probe");
    port.configure(
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rx_scatter: false,
            tx_multi_seg: false,
        },
        Arc::clone(&pool),
    )
    .expect("configure");
    port.start().expect("start");
    let (mut rxq, mut txq) = port.queues(1).expect("queues");
    let (mut rx, mut tx) = (rxq.remove(0), txq.remove(0));
    println!("impaired_wire: ready");

    let hz = tsc_hz() as f64;
    let (mut received, mut forwarded, mut dropped, mut swapped) = (0u64, 0u64, 0u64, 0u64);
    let (mut over_rate, mut tx_full) = (0u64, 0u64);
    // Token bucket refilled at max_pps, 10 ms deep: what arrives in a catch-up after a short
    // stall of this process passes, while a rate above max_pps is cut to it.
    let depth = o.max_pps.map_or(0.0, |r| (r / 100.0).max(64.0));
    let mut tokens = depth;
    let mut last = tsc();
    let mut held: Option<Mbuf> = None;
    let mut burst = Burst::new();
    let mut batch = TxBatch::new();
    let end = Instant::now() + Duration::from_secs_f64(o.secs);
    let mut polls = 0u32;
    let mut last_rx = Instant::now();
    loop {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) {
            let now = Instant::now();
            let idle = o
                .idle_exit
                .is_some_and(|s| received > 0 && now - last_rx > Duration::from_secs_f64(s));
            if now >= end || idle {
                break;
            }
        }
        if rx.rx_burst(&mut burst) == 0 {
            continue;
        }
        if o.idle_exit.is_some() {
            last_rx = Instant::now();
        }
        if let Some(r) = o.max_pps {
            let now = tsc();
            tokens = (tokens + (now - last) as f64 * r / hz).min(depth);
            last = now;
        }
        for m in burst.drain() {
            received += 1;
            if o.drop_every > 0 && received.is_multiple_of(o.drop_every) {
                dropped += 1;
                continue;
            }
            if o.max_pps.is_some() {
                if tokens < 1.0 {
                    over_rate += 1;
                    continue;
                }
                tokens -= 1.0;
            }
            if batch.is_full() {
                // A frame held from the last burst made this one a frame longer.
                forwarded += tx.try_send(&mut batch) as u64;
                tx_full += batch.discard() as u64;
            }
            if o.swap_at == Some(received) {
                // Hold this frame and send it after the next one.
                held = Some(m);
                continue;
            }
            if batch.push(m).is_err() {
                tx_full += 1;
            }
            if let Some(h) = held.take() {
                if batch.push(h).is_err() {
                    tx_full += 1;
                }
                swapped += 1;
            }
        }
        forwarded += tx.try_send(&mut batch) as u64;
        tx_full += batch.discard() as u64;
    }
    drop(held);
    println!(
        "impaired_wire: received={received} forwarded={forwarded} dropped={dropped} swapped={swapped} over_rate={over_rate} tx_full={tx_full}"
    );
    drop(rx);
    drop(tx);
    drop(port);
}
