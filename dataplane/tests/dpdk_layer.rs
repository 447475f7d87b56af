//! The safe DPDK layer against a real EAL (no hugepages needed: --no-huge), in one process:
//! the EAL can be initialised once per process, so this is one test walking through it all.

use dataplane::dpdk::{
    spsc_ring, Burst, Eal, Mbuf, Mempool, Port, PortConfig, TxBatch, BURST_SIZE,
};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
struct Record {
    seq: u64,
    port: u32,
    len: u32,
}

#[test]
fn eal_mempool_ring_and_port_lifecycle() {
    let prefix = format!("pmdsw-dplayer-{}", std::process::id());
    let eal = Eal::init(&[
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        &prefix,
    ])
    .expect("EAL init with --no-huge");
    assert!(
        Eal::init(&["-l", "0"]).is_err(),
        "a second EAL init is refused"
    );
    assert!(eal.worker_lcores().is_empty());

    // Rings: order kept, a full ring takes what fits, bad element sizes refused.
    let (mut tx, mut rx) = spsc_ring::<Record>("test_ring", 64).unwrap();
    let producer = std::thread::spawn(move || {
        let mut seq = 0u64;
        while seq < 10_000 {
            let batch: Vec<Record> = (seq..(seq + 16).min(10_000))
                .map(|s| Record {
                    seq: s,
                    port: (s % 5) as u32,
                    len: 60,
                })
                .collect();
            let n = tx.enqueue_burst(&batch);
            seq += n as u64;
        }
        tx
    });
    let mut got = Vec::new();
    let mut buf = [Record::default(); 32];
    while got.len() < 10_000 {
        let n = rx.dequeue_burst(&mut buf);
        got.extend_from_slice(&buf[..n]);
        // A producer that died (a failed assertion) ends the wait: join reports it.
        if n == 0 && producer.is_finished() && rx.is_empty() {
            break;
        }
    }
    let mut tx = producer.join().unwrap();
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == i as u64 && r.port == (i % 5) as u32));
    let full: Vec<Record> = (0..100)
        .map(|s| Record {
            seq: s,
            ..Default::default()
        })
        .collect();
    assert_eq!(
        tx.enqueue_burst(&full),
        64,
        "a full ring takes what fits, never waits"
    );
    assert_eq!(rx.len(), 64);
    assert!(!tx.push_with(|_| panic!("a full ring calls no fill")));
    assert!(spsc_ring::<[u8; 3]>("bad_ring", 64).is_err());
    #[derive(Clone, Copy, Default)]
    #[repr(align(128))]
    struct Wide {
        _words: [u64; 16],
    }
    assert!(
        spsc_ring::<Wide>("wide_ring", 64).is_err(),
        "slots would be misaligned"
    );

    // Filled in place: a fill sees the slot's previous value (a default at first), writes
    // what it writes, and values come out in order across many wraps of a 2^k - 1 ring.
    let (mut ztx, mut zrx) = spsc_ring::<Record>("test_ring_zc", 15).unwrap();
    let producer = std::thread::spawn(move || {
        let mut seq = 0u64;
        while seq < 10_000 {
            let pushed = ztx.push_with(|r| {
                assert!(
                    r.seq == 0 || r.seq + 16 == seq,
                    "slot {} held {}",
                    seq,
                    r.seq
                );
                r.seq = seq;
                r.port = (seq % 7) as u32;
            });
            seq += u64::from(pushed);
        }
    });
    got.clear();
    while got.len() < 10_000 {
        let n = zrx.dequeue_burst(&mut buf);
        got.extend_from_slice(&buf[..n]);
        if n == 0 && producer.is_finished() && zrx.is_empty() {
            break;
        }
    }
    producer.join().unwrap();
    drop(zrx); // before the EAL goes
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == i as u64 && r.port == (i % 7) as u32));

    // A port from devargs, its queues, and mbuf ownership.
    let pool = Arc::new(Mempool::new_pktmbuf("test_pool", 8191, 0, -1).unwrap());
    assert_eq!(pool.in_use(), 0);
    assert!(Port::probe("net_nosuchdriver0").is_err());
    let mut port = Port::probe("net_null0,size=64").unwrap();
    assert_eq!(port.info().unwrap().driver, "net_null");
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 256,
        tx_desc: 256,
        rx_scatter: false,
        tx_multi_seg: false,
    };
    port.configure(cfg, Arc::clone(&pool)).unwrap();
    port.start().unwrap();
    assert!(port.link().up);
    let (mut rxq, mut txq) = port.queues(1).unwrap();
    assert!(port.queues(1).is_err(), "queues are handed out once");
    let mut burst = Burst::new();
    assert_eq!(rxq[0].rx_burst(&mut burst), BURST_SIZE);
    assert_eq!(pool.in_use() as usize, BURST_SIZE);
    assert_eq!(burst.as_slice()[0].pkt_len(), 64);
    // Share every packet three more times: each reference is freed on its own.
    let mut batch = TxBatch::new();
    let mut extra = Vec::new();
    for m in burst.drain() {
        m.share(3, |c| extra.push(c));
        if batch.push(m).is_err() {
            unreachable!("32 fit a batch");
        }
    }
    assert_eq!(extra.len(), 3 * BURST_SIZE);
    assert_eq!(pool.in_use() as usize, BURST_SIZE, "shared, not copied");
    let out = txq[0].flush(&mut batch);
    assert_eq!((out.sent, out.too_big, out.refused), (BURST_SIZE, 0, 0));
    assert_eq!(
        pool.in_use() as usize,
        BURST_SIZE,
        "the extra references keep them alive"
    );
    drop(extra);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the pool");

    // A run of frames moves into a batch as far as it has room, in order; the rest stay in
    // the burst, and every buffer is still freed exactly once.
    let mut batch = TxBatch::new();
    assert_eq!(rxq[0].rx_burst(&mut burst), BURST_SIZE);
    for m in burst.drain().take(20) {
        assert!(batch.push(m).is_ok());
    }
    assert_eq!(
        pool.in_use(),
        20,
        "the 12 not taken were freed with the drain"
    );
    assert_eq!(rxq[0].rx_burst(&mut burst), BURST_SIZE);
    let order: Vec<*const u8> = burst.as_slice().iter().map(|m| m.data().as_ptr()).collect();
    let mut pkts = burst.drain();
    assert_eq!(pkts.move_into(&mut batch, 5), 5);
    assert_eq!(pkts.move_into(&mut batch, 32), 7, "room for 7 more");
    assert_eq!(batch.len(), BURST_SIZE);
    assert_eq!(
        pkts.ahead(0).map(|m| m.data().as_ptr()),
        Some(order[12]),
        "the frames that did not fit stay next, in order"
    );
    let out = txq[0].flush(&mut batch);
    assert_eq!((out.sent, out.too_big, out.refused), (BURST_SIZE, 0, 0));
    assert_eq!(pkts.move_into(&mut batch, 32), 20, "the 20 left");
    assert!(pkts.next().is_none());
    drop(pkts);
    assert_eq!(batch.discard(), 20);
    assert_eq!(pool.in_use(), 0, "moved frames freed once, by their batch");
    assert!(port.stats().unwrap().opackets >= BURST_SIZE as u64);

    // A generator's burst: frames built in place from a bulk allocation, offered to a queue
    // that takes only what fits (a net_ring port is its own loopback: a ring of 1024 slots,
    // 1023 usable); the
    // rest stay in the batch, in order, and go once there is room.
    let mut wire = Port::probe("net_ring7").unwrap();
    wire.configure(cfg, Arc::clone(&pool)).unwrap();
    wire.start().unwrap();
    let (mut wire_rx, mut wire_tx) = wire.queues(1).unwrap();
    let mut batch = TxBatch::new();
    let (mut built, mut sent) = (0u32, 0usize);
    for _ in 0..40 {
        let n = batch.alloc_frames(&pool, BURST_SIZE, |_, room| {
            assert!(room.len() >= 2048, "the whole room after the headroom");
            room[..4].copy_from_slice(&built.to_be_bytes());
            built += 1;
            60 + (built as usize % 3)
        });
        assert!(n == 0 || batch.len() == BURST_SIZE);
        sent += wire_tx[0].try_send(&mut batch);
    }
    assert_eq!(sent, 1023, "the ring holds 1023");
    assert!(
        !batch.is_empty(),
        "the frames the ring refused stay in the batch"
    );
    let first_left = u32::from_be_bytes(batch.as_slice()[0].data()[..4].try_into().unwrap());
    assert_eq!(first_left, 1023, "in order, after the last sent");
    let mut seen = 0u32;
    while seen < 1023 {
        let n = wire_rx[0].rx_burst(&mut burst);
        for m in burst.as_slice() {
            assert_eq!(u32::from_be_bytes(m.data()[..4].try_into().unwrap()), seen);
            assert_eq!(m.pkt_len(), 60 + (seen + 1) % 3);
            seen += 1;
        }
        assert!(n > 0, "the ring returns every frame sent");
        burst.free_all();
        assert!(burst.is_empty());
    }
    let left = batch.len();
    assert_eq!(
        wire_tx[0].try_send(&mut batch),
        left,
        "room again: the rest go"
    );
    while wire_rx[0].rx_burst(&mut burst) > 0 {
        burst.free_all();
    }
    assert_eq!(batch.discard(), 0);
    assert_eq!(pool.in_use(), 0, "bulk-freed frames are back in the pool");
    drop((wire_rx, wire_tx));
    wire.close().unwrap();

    // A driver that refuses a frame longer than its MTU stops there (net_tap): that frame is
    // counted too big and freed, and the frames behind it are sent.
    let mut tap = Port::probe(&format!(
        "net_tap9,iface=pdpl{}",
        std::process::id() % 100_000
    ))
    .unwrap();
    tap.configure(
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 64,
            tx_desc: 64,
            rx_scatter: false,
            tx_multi_seg: false,
        },
        Arc::clone(&pool),
    )
    .unwrap();
    tap.start().unwrap();
    let (tap_rx, mut tap_tx) = tap.queues(1).unwrap();
    assert_eq!(tap.mtu(), Some(1500));
    assert_eq!(tap_tx[0].max_frame(), 1522);
    let mut batch = TxBatch::new();
    for len in [60u16, 2000, 60, 1522, 1523, 60] {
        let mut m = Mbuf::alloc(&pool).unwrap();
        let d = m.append(len).unwrap();
        d[..6].fill(0xff);
        d[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        assert!(batch.push(m).is_ok());
    }
    let out = tap_tx[0].flush(&mut batch);
    assert_eq!((out.sent, out.too_big, out.refused), (4, 2, 0), "{out:?}");
    assert!(batch.is_empty());
    drop((tap_rx, tap_tx));
    tap.close().unwrap();
    assert_eq!(pool.in_use(), 0, "refused frames freed once");

    // A port cannot close while a worker still holds its queues; once they are gone it can.
    let e = port.close().expect_err("closed with live queue handles");
    assert_eq!(e.errno, 16, "{e}");
    drop((rxq, txq));
    port.close().unwrap();
    port.close().unwrap();
    drop((rx, tx));
    drop(port);
    drop(pool);
    drop(eal);
    // The EAL leaves its runtime directory behind.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}
