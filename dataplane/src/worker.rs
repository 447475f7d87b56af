//! The poll loop of one worker lcore: rx burst -> decide -> per-port tx batches -> flush.
//!
//! Nothing here allocates, locks, logs or makes a system call of its own per packet (the
//! PMD's rx/tx may, for kernel-backed devices such as tap). Counters go to the worker's private
//! tally and are published every [`HOUSEKEEPING_INTERVAL`] iterations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dpdk::{
    tsc, Burst, LcoreId, Mbuf, RingProducer, RxQueue, TxBatch, TxQueue, BURST_SIZE, MAX_PORTS,
};
use crate::fdb::{Fdb, Learn};
use crate::forward::{decide_prepared, prepare, Action, BridgeView, DropReason, Prepared};
use crate::sample::{SampleRecord, SampledOutput, Sampler};
use crate::stats::{cycles_histogram, Counters, PortCounter, WorkerCounter, WorkerStats};

/// Frames parsed (and their MAC-table buckets prefetched) ahead of the one being decided.
const LOOKAHEAD: usize = 8;

/// Poll iterations between publishing counters and checking the stop flag.
pub const HOUSEKEEPING_INTERVAL: u64 = 1024;

/// Everything one worker needs, moved onto its lcore.
pub struct Worker {
    /// The lcore it runs on.
    pub lcore: LcoreId,
    /// The (port, queue) pairs it polls, in order.
    pub rx: Vec<RxQueue>,
    /// Its tx queue on every port, indexed by port id.
    pub tx: Vec<Option<TxQueue>>,
    /// The bridge's ports and MTU.
    pub bridge: Arc<BridgeView>,
    /// The shared MAC table.
    pub fdb: Arc<Fdb>,
    /// Where its counters are published.
    pub stats: Arc<WorkerStats>,
    /// Set by the control thread to make the worker return.
    pub stop: Arc<AtomicBool>,
    /// sFlow: where sampled frames go (None: sampling off).
    pub sampling: Option<Sampling>,
}

/// A worker's sFlow sampling: one sampler per port and the ring to the control thread.
pub struct Sampling {
    /// Samplers indexed by port id (rate 0: that port is not sampled).
    pub samplers: Vec<Sampler>,
    /// Header bytes kept per sample.
    pub header_bytes: usize,
    /// The worker's end of its sample ring.
    pub ring: RingProducer<SampleRecord>,
}

/// The egress side of a worker: a batch and a queue per port, and which batches hold packets.
struct Egress {
    tx: Vec<Option<TxQueue>>,
    batches: Vec<TxBatch>,
    dirty: u64,
}

impl Egress {
    #[inline(always)]
    fn push(&mut self, port: u16, m: Mbuf, c: &mut Counters) {
        let p = usize::from(port);
        if self.tx[p].is_none() {
            c.drop_one(DropReason::NoEgressPort);
            return;
        }
        if self.batches[p].is_full() {
            self.flush_port(p, c);
        }
        // Cannot fail: the batch was just flushed if it was full.
        let _ = self.batches[p].push(m);
        self.dirty |= 1 << p;
    }

    #[inline(always)]
    fn flush_port(&mut self, p: usize, c: &mut Counters) {
        if let Some(q) = self.tx[p].as_mut() {
            let (sent, dropped) = q.flush(&mut self.batches[p]);
            c.port_add(p, PortCounter::TxPackets, sent as u64);
            if dropped != 0 {
                c.port_add(p, PortCounter::TxDropped, dropped as u64);
                c.drop_n(DropReason::TxFull, dropped as u64);
            }
        }
        self.dirty &= !(1 << p);
    }

    #[inline(always)]
    fn flush_all(&mut self, c: &mut Counters) {
        while self.dirty != 0 {
            let p = self.dirty.trailing_zeros() as usize;
            self.flush_port(p, c);
        }
    }
}

impl Worker {
    /// Runs the poll loop until the stop flag is set, then flushes and publishes its counters.
    /// Returns 0 (the lcore's exit status).
    pub fn run(self) -> i32 {
        let Worker {
            lcore,
            mut rx,
            tx,
            bridge,
            fdb,
            stats,
            stop,
            mut sampling,
        } = self;
        const { assert!(MAX_PORTS <= 64, "the dirty-port mask is a u64") };
        log::info!(
            "worker on lcore {lcore}: polling {}",
            rx.iter()
                .map(|q| format!("port {} queue {}", q.port(), q.queue()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut egress = Egress {
            tx,
            batches: (0..MAX_PORTS).map(|_| TxBatch::new()).collect(),
            dirty: 0,
        };
        let mut c = Counters::default();
        let mut cycles = cycles_histogram();
        let mut burst = Burst::new();
        let mut prepared = [Prepared::default(); BURST_SIZE];
        let mut flood_to = [0u16; MAX_PORTS];
        let mut iterations: u64 = 0;
        let mut mark = tsc();
        loop {
            let now = fdb.now();
            for q in rx.iter_mut() {
                let n = q.rx_burst(&mut burst);
                if n == 0 {
                    let t = tsc();
                    c.add(WorkerCounter::IdleCycles, t.wrapping_sub(mark));
                    mark = t;
                    continue;
                }
                let ingress = q.port().0;
                let inp = usize::from(ingress);
                // Bring every frame's first line in, then work as a pipeline: parse frame
                // i + LOOKAHEAD and prefetch its MAC-table buckets while deciding frame i, so
                // the bucket loads overlap without flooding the CPU with outstanding misses.
                let pkts = burst.as_slice();
                for m in pkts {
                    m.prefetch_data();
                }
                for (m, p) in pkts.iter().zip(prepared.iter_mut()).take(LOOKAHEAD) {
                    *p = prepare(m.data(), &fdb);
                }
                let mut bytes = 0u64;
                // Which frames of this burst sFlow samples: usually none, found with one compare.
                let (sampled, pool_before) = match sampling.as_mut() {
                    Some(s) => {
                        let sampler = &mut s.samplers[inp];
                        let before = sampler.seen();
                        (sampler.burst(n as u32), before)
                    }
                    None => (0, 0),
                };
                let mut pkts = burst.drain();
                let mut i = 0;
                while let Some(m) = pkts.next() {
                    if let Some(ahead) = pkts.ahead(LOOKAHEAD - 1) {
                        prepared[i + LOOKAHEAD] = prepare(ahead.data(), &fdb);
                    }
                    let p = &prepared[i];
                    i += 1;
                    bytes += u64::from(m.pkt_len());
                    let v =
                        decide_prepared(ingress, p, m.pkt_len(), m.nb_segs(), &bridge, &fdb, now);
                    if sampled & (1 << (i - 1)) != 0 {
                        if let Some(s) = sampling.as_mut() {
                            let output = match v.action {
                                Action::Unicast(q) => SampledOutput::Port(q),
                                Action::Flood => {
                                    SampledOutput::Flood(bridge.flood_ports(ingress).count() as u16)
                                }
                                Action::Drop(r) => SampledOutput::Dropped(r.sflow_code()),
                            };
                            let tci = p.vlan().unwrap_or_default();
                            let record = SampleRecord::new(
                                m.data(),
                                m.pkt_len(),
                                ingress,
                                output,
                                tci.vid(),
                                u16::from(tci.pcp()),
                                pool_before + i as u64,
                                s.header_bytes,
                            );
                            c.port_add(inp, PortCounter::SamplesTaken, 1);
                            if s.ring.enqueue_burst(std::slice::from_ref(&record)) == 0 {
                                c.port_add(inp, PortCounter::SamplesLost, 1);
                            }
                        }
                    }
                    match v.learn {
                        None | Some(Learn::Known | Learn::Refreshed | Learn::Contended) => {}
                        Some(Learn::Learned) => c.add(WorkerCounter::Learned, 1),
                        Some(Learn::Moved { .. }) => c.add(WorkerCounter::Moved, 1),
                        Some(Learn::Full) => c.add(WorkerCounter::FdbFull, 1),
                        Some(Learn::StaticElsewhere { .. }) => {
                            c.add(WorkerCounter::StaticConflict, 1)
                        }
                    }
                    match v.action {
                        Action::Unicast(p) => {
                            c.add(WorkerCounter::Unicast, 1);
                            egress.push(p, m, &mut c);
                        }
                        Action::Flood => {
                            let mut k = 0;
                            for p in bridge.flood_ports(ingress) {
                                flood_to[k] = p;
                                k += 1;
                            }
                            c.add(WorkerCounter::Flooded, 1);
                            c.add(WorkerCounter::FloodCopies, k as u64);
                            // k >= 1: decide() drops a flood with no egress port.
                            let mut next = 0;
                            m.share((k - 1) as u16, |copy| {
                                egress.push(flood_to[next], copy, &mut c);
                                next += 1;
                            });
                            egress.push(flood_to[k - 1], m, &mut c);
                        }
                        Action::Drop(r) => {
                            c.drop_one(r);
                            c.port_add(inp, PortCounter::RxDropped, 1);
                        }
                    }
                }
                egress.flush_all(&mut c);
                c.add(WorkerCounter::Packets, n as u64);
                c.add(WorkerCounter::Bursts, 1);
                c.port_add(inp, PortCounter::RxPackets, n as u64);
                c.port_add(inp, PortCounter::RxBytes, bytes);
                let t = tsc();
                let spent = t.wrapping_sub(mark);
                c.add(WorkerCounter::BusyCycles, spent);
                cycles.saturating_record(spent);
                mark = t;
            }
            iterations += 1;
            if iterations.is_multiple_of(HOUSEKEEPING_INTERVAL) {
                c.add(WorkerCounter::Iterations, HOUSEKEEPING_INTERVAL);
                c.publish(&stats);
                stats.merge_cycles(&mut cycles);
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
        }
        egress.flush_all(&mut c);
        c.add(
            WorkerCounter::Iterations,
            iterations % HOUSEKEEPING_INTERVAL,
        );
        c.publish(&stats);
        while !stats.merge_cycles(&mut cycles) {
            std::hint::spin_loop();
        }
        log::info!(
            "worker on lcore {lcore}: stopped after {} packets",
            c.get(WorkerCounter::Packets)
        );
        0
    }
}
