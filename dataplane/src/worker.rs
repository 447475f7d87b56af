//! The poll loop of one worker lcore: rx burst -> decide (by the worker's flow cache, else the
//! full path: parse, classify, learn, look up) -> per-port tx batches -> flush.
//!
//! Nothing here allocates, locks, logs or makes a system call of its own per packet (the
//! PMD's rx/tx may, for kernel-backed devices such as tap). Counters go to the worker's private
//! tally and are published every [`HOUSEKEEPING_INTERVAL`] iterations. The bridge's
//! configuration is a snapshot the worker checks for (one atomic load) before every poll round.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::dpdk::{
    tsc, tsc_hz, Burst, BurstDrain, LcoreId, Mbuf, Mempool, RateMeter, RingProducer, RxQueue,
    TxBatch, TxDrop, TxQueue, BURST_SIZE, MAX_PORTS,
};
use crate::fdb::{Fdb, Learn, Probes};
use crate::flowcache::{entry_for, stamp, CacheGate, FlowCache, FlowKey, Hit, Slot, DEFAULT_SETS};
use crate::forward::{
    decide_in, mask_ports, prepare_in, Action, BridgeView, Cast, DropReason, FloodKind, Limits,
    Prepared, RateLimit, Tier, FORM_TAGGED, FORM_UNTAGGED,
};
use crate::packet::{ethertype, MIN_FRAME_LEN};
use crate::sample::{DropRecord, SampleRecord, SampledOutput, Sampler, MAX_HEADER, NO_PORT};
use crate::stats::{
    cycles_histogram, Counters, PortCounter, VlanTally, WorkerCounter, WorkerStats,
};

/// Frames parsed (and the MAC-table line of each address prefetched) ahead of the one being
/// decided (4, 16 and 32 measured no better at 2 x 64K MACs).
const LOOKAHEAD: usize = 8;

/// Poll iterations between publishing counters and checking the stop flag.
pub const HOUSEKEEPING_INTERVAL: u64 = 1024;

/// The bridge configuration the workers forward by, swapped as a whole by the control thread.
pub type BridgeCell = ArcSwap<BridgeView>;

/// A source address that moved between ports, reported to the control thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MoveEvent {
    /// The address, in the low 48 bits.
    pub mac: u64,
    /// Its VLAN.
    pub vlan: u16,
    /// The port it was on.
    pub from: u16,
    /// The port it moved to.
    pub to: u16,
}

/// A change the control thread asks of a worker; applied between poll rounds, acknowledged
/// through [`WorkerStats::applied`].
pub enum WorkerCommand {
    /// Poll this rx queue too.
    AddRx(RxQueue),
    /// Send to the queue's port through it.
    AddTx(TxQueue),
    /// Stop polling and sending to this port: its queue handles are dropped (a port can be
    /// closed once every worker has dropped them).
    RemovePort(u16),
    /// Sample this port's frames with this sampler (rate 0: not at all).
    SetSampler(u16, Sampler),
    /// Nothing: its acknowledgement says the worker forwards by the latest snapshot.
    Sync,
}

/// Everything one worker needs, moved onto its lcore.
pub struct Worker {
    /// The lcore it runs on.
    pub lcore: LcoreId,
    /// The (port, queue) pairs it polls, in order.
    pub rx: Vec<RxQueue>,
    /// Its tx queue on every port, indexed by port id.
    pub tx: Vec<Option<TxQueue>>,
    /// The bridge's configuration, as published by the control thread.
    pub bridge: Arc<BridgeCell>,
    /// The shared MAC table.
    pub fdb: Arc<Fdb>,
    /// Where its counters are published.
    pub stats: Arc<WorkerStats>,
    /// Set by the control thread to make the worker return.
    pub stop: Arc<AtomicBool>,
    /// sFlow: where sampled frames go (None: sampling off).
    pub sampling: Option<Sampling>,
    /// Buffers for the copy a flood needs when its egress ports differ in tagging.
    pub pool: Arc<Mempool>,
    /// Where MAC moves are reported (None: not reported).
    pub moves: Option<RingProducer<MoveEvent>>,
    /// sFlow dropped-packet notifications (None: none).
    pub drops: Option<DropReporting>,
    /// Changes from the control thread.
    pub commands: crossbeam_channel::Receiver<WorkerCommand>,
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

/// A worker's sFlow dropped-packet notifications: a copy of each dropped frame's first bytes
/// into a ring, at most `budget` a second (the control thread sets it and rate-limits all
/// workers' together; the drops not reported are counted there).
pub struct DropReporting {
    /// The worker's end of its drop ring.
    pub ring: RingProducer<DropRecord>,
    /// Notifications a second this worker may send (0: none).
    pub budget: Arc<AtomicU32>,
    /// Header bytes kept per dropped frame.
    pub header_bytes: usize,
}

/// The worker's side of [`DropReporting`]: what is left of this second's budget, and the drops
/// not offered so far (each record carries the count, so a collector learns it exactly).
struct DropReporter {
    reporting: Option<DropReporting>,
    left: u32,
    second: u32,
    unreported: u64,
}

impl DropReporter {
    /// Notes frames dropped for `reason` (received on `input`, dropped at `output` or
    /// [`NO_PORT`]) while this second's budget lasts; a full ring loses them (the control
    /// thread counts every drop it did not report). Out of line: a drop is never the hot path.
    #[cold]
    #[inline(never)]
    fn note(&mut self, now: u32, frames: &[Mbuf], input: u16, output: u16, reason: DropReason) {
        let Some(r) = self.reporting.as_mut() else {
            return;
        };
        if self.second != now {
            self.second = now;
            self.left = r.budget.load(Ordering::Relaxed);
        }
        let mut gathered = [0u8; MAX_HEADER];
        for m in frames {
            if self.left == 0 {
                self.unreported += 1;
                continue;
            }
            self.left -= 1;
            let header = header_of(m, r.header_bytes, &mut gathered);
            let mut record = DropRecord::new(header, m.pkt_len(), input, output, reason);
            record.unreported = self.unreported;
            if r.ring.enqueue_burst(std::slice::from_ref(&record)) == 0 {
                self.unreported += 1;
            }
        }
    }

    /// Counts `n` drops with no frame left to show (a copy that could not be made).
    #[cold]
    fn lost(&mut self, n: u64) {
        self.unreported += n;
    }
}

/// A frame's first `want` bytes (at most [`MAX_HEADER`] and the frame), gathered into `buf`
/// across segments when its first segment is shorter.
fn header_of<'a>(m: &'a Mbuf, want: usize, buf: &'a mut [u8; MAX_HEADER]) -> &'a [u8] {
    let first = m.data();
    let want = want.min(MAX_HEADER).min(m.pkt_len() as usize);
    if first.len() >= want || !m.read(0, &mut buf[..want]) {
        &first[..first.len().min(want)]
    } else {
        &buf[..want]
    }
}

/// The worker's share of the ports' rate limits, on DPDK's rte_meter. A port polled on several
/// workers gets its rate split by how many of its rx queues each polls; egress limits are split
/// evenly over the workers (each has its own tx queue).
struct Meters {
    police: Vec<Option<RateMeter>>,
    storm: Vec<[Option<RateMeter>; 3]>,
    now: u64,
    /// When the meters started (their clocks must never be asked about an earlier time).
    built_at: u64,
}

impl Meters {
    fn none() -> Meters {
        Meters {
            police: (0..MAX_PORTS).map(|_| None).collect(),
            storm: (0..MAX_PORTS).map(|_| [None, None, None]).collect(),
            now: 0,
            built_at: tsc(),
        }
    }
}

impl Limits for Meters {
    #[inline(always)]
    fn police(&mut self, port: u16, bytes: u32) -> bool {
        match self.police.get_mut(usize::from(port)) {
            Some(Some(m)) => m.conform(self.now, bytes),
            _ => true,
        }
    }

    #[inline(always)]
    fn storm(&mut self, port: u16, kind: FloodKind) -> bool {
        match self.storm.get_mut(usize::from(port)) {
            Some(kinds) => match &mut kinds[kind as usize] {
                Some(m) => m.conform(self.now, 1),
                None => true,
            },
            None => true,
        }
    }
}

/// A byte-rate meter for `limit` scaled by `share`; None (with a log line: this runs only when
/// the configuration changes) if DPDK refuses the parameters. The bucket is never scaled below
/// `largest` frame bytes (or the configured burst, if that is smaller): a share that cannot
/// hold one frame would drop every frame.
fn byte_meter(
    limit: &RateLimit,
    share: f64,
    largest: u64,
    what: &str,
    port: u16,
) -> Option<RateMeter> {
    let rate = ((limit.bits_per_sec as f64 / 8.0) * share).max(1.0) as u64;
    let burst = (((limit.burst_bytes as f64) * share) as u64)
        .max(largest.min(limit.burst_bytes))
        .max(1);
    RateMeter::new(rate, burst)
        .map_err(|e| log::error!("port id {port}: {what} meter not set: {e}"))
        .ok()
}

/// A frame-rate meter of `pps` scaled by `share`, with a bucket of a tenth of a second's worth.
fn frame_meter(pps: u64, share: f64, port: u16) -> Option<RateMeter> {
    let rate = ((pps as f64) * share).max(1.0) as u64;
    RateMeter::new(rate, (rate / 10).max(1))
        .map_err(|e| log::error!("port id {port}: storm-control meter not set: {e}"))
        .ok()
}

/// Builds this worker's meters for `view`: `my_queues[p]` is how many of port p's rx queues
/// this worker polls.
fn build_meters(view: &BridgeView, my_queues: &[u16]) -> (Meters, Vec<Option<RateMeter>>) {
    let mut m = Meters::none();
    let mut egress: Vec<Option<RateMeter>> = (0..MAX_PORTS).map(|_| None).collect();
    if tsc_hz() == 0 {
        return (m, egress);
    }
    // Ethernet header, two tags and the MTU.
    let largest = u64::from(view.mtu) + 22;
    for port in view.ports() {
        let i = usize::from(port);
        let Some(pol) = view.policy(port) else {
            continue;
        };
        if i >= MAX_PORTS {
            continue;
        }
        let mine = my_queues.get(i).copied().unwrap_or(0);
        if mine > 0 {
            let share = f64::from(mine) / f64::from(view.rx_queues(port));
            if let Some(l) = &pol.ingress_policing {
                m.police[i] = byte_meter(l, share, largest, "ingress policing", port);
            }
            for kind in [
                FloodKind::Broadcast,
                FloodKind::Multicast,
                FloodKind::UnknownUnicast,
            ] {
                if let Some(pps) = pol.storm.of(kind) {
                    m.storm[i][kind as usize] = frame_meter(pps, share, port);
                }
            }
        }
        if let Some(l) = &pol.egress_rate {
            egress[i] = byte_meter(
                l,
                1.0 / f64::from(view.workers),
                largest,
                "egress rate",
                port,
            );
        }
    }
    m.built_at = tsc();
    (m, egress)
}

/// The egress side of a worker: a batch and a queue per port, which batches hold packets, and
/// the egress rate meters.
struct Egress {
    tx: Vec<Option<TxQueue>>,
    batches: Vec<TxBatch>,
    dirty: u64,
    meters: Vec<Option<RateMeter>>,
    /// Ports with an egress meter, one bit each.
    metered: u64,
    /// Ports whose MTU is below another port's (a frame may be too long for them), and their
    /// MTUs by port id.
    mtu_limited: u64,
    mtu: Vec<u32>,
    /// Ports whose device sends only one-segment frames.
    no_chains: u64,
    /// Ports with a tx queue and nothing to check: a frame to one only joins its batch.
    ready: u64,
    now: u64,
    /// Buffers for a chained frame made one for a port that sends no chains.
    pool: Arc<Mempool>,
    /// The port the current burst came from (every frame in a batch did: batches are sent
    /// before the next burst), and the MAC table's clock in seconds.
    ingress: u16,
    second: u32,
    drops: DropReporter,
}

impl Egress {
    /// Takes up a new snapshot's egress side: its rate meters (this worker's share) and its
    /// ports' MTUs.
    fn set_view(&mut self, view: &BridgeView, meters: Vec<Option<RateMeter>>) {
        self.metered = meters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .fold(0, |acc, (i, _)| acc | 1 << i);
        self.meters = meters;
        let largest = view.ports().map(|p| view.port_mtu(p)).max().unwrap_or(0);
        self.mtu_limited = 0;
        for p in view.ports() {
            let i = usize::from(p);
            if i < self.mtu.len() {
                self.mtu[i] = view.port_mtu(p);
                if self.mtu[i] < largest {
                    self.mtu_limited |= 1 << i;
                }
            }
        }
        self.refresh_ready();
    }

    /// Recomputes `ready` after a queue, a meter or an MTU changed.
    fn refresh_ready(&mut self) {
        let mask = |f: &dyn Fn(&TxQueue) -> bool| {
            self.tx
                .iter()
                .enumerate()
                .filter(|(_, q)| q.as_ref().is_some_and(f))
                .fold(0u64, |acc, (i, _)| acc | 1 << i)
        };
        let with_queue = mask(&|_| true);
        self.no_chains = mask(&|q: &TxQueue| !q.sends_chains());
        self.ready = with_queue & !self.metered & !self.mtu_limited & !self.no_chains;
    }

    #[inline(always)]
    fn push(&mut self, port: u16, mut m: Mbuf, c: &mut Counters) {
        let p = usize::from(port);
        if p < 64 && self.ready & (1 << p) != 0 {
            self.join(p, m, c);
            return;
        }
        if self.tx.get(p).is_none_or(|q| q.is_none()) {
            self.drop_out(&m, NO_PORT, DropReason::NoEgressPort, c);
            return;
        }
        // An L2 switch cannot fragment: too long for this port, dropped for it alone.
        if self.mtu_limited & (1 << p) != 0 && payload_len(&m) > self.mtu[p] {
            self.drop_out(&m, port, DropReason::EgressOversize, c);
            return;
        }
        if self.no_chains & (1 << p) != 0 && m.nb_segs() > 1 {
            match m.linearized(&self.pool) {
                Some(one) => m = one,
                None => {
                    self.drop_out(&m, port, DropReason::MultiSegment, c);
                    return;
                }
            }
        }
        if self.metered & (1 << p) != 0 {
            if let Some(meter) = self.meters[p].as_mut() {
                if !meter.conform(self.now, m.pkt_len()) {
                    self.drop_out(&m, port, DropReason::EgressRateLimit, c);
                    return;
                }
            }
        }
        self.join(p, m, c);
    }

    /// Counts `n` frames dropped for want of a buffer to make them in (TxFull): no frame is
    /// left to report.
    #[cold]
    fn lost(&mut self, n: u64, c: &mut Counters) {
        c.drop_n(DropReason::TxFull, n);
        self.drops.lost(n);
    }

    /// Counts `m`, given `port` to send ([`NO_PORT`]: none to send it to), as dropped there
    /// for `reason`, and reports it.
    #[cold]
    #[inline(never)]
    fn drop_out(&mut self, m: &Mbuf, port: u16, reason: DropReason, c: &mut Counters) {
        c.drop_one(reason);
        if port != NO_PORT {
            c.port_add(usize::from(port), PortCounter::TxDropped, 1);
        }
        self.drops.note(
            self.second,
            std::slice::from_ref(m),
            self.ingress,
            port,
            reason,
        );
    }

    /// True when frames to `port` may join its batch as they are ([`Egress::join_run`]).
    #[inline(always)]
    fn is_ready(&self, port: u16) -> bool {
        port < 64 && self.ready & (1 << port) != 0
    }

    /// Moves the next `k` frames of `pkts` (k of them left) to `port`'s batch, sending it
    /// whenever it fills, if the port is ready: true when it did; false leaves them in `pkts`.
    #[inline(always)]
    fn join_run(
        &mut self,
        port: u16,
        pkts: &mut BurstDrain,
        mut k: usize,
        c: &mut Counters,
    ) -> bool {
        if !self.is_ready(port) {
            return false;
        }
        let p = usize::from(port);
        while k > 0 {
            if self.batches[p].is_full() {
                self.flush_port(p, c);
            }
            let moved = pkts.move_into(&mut self.batches[p], k);
            // k frames were left and the batch had room: something always moves.
            debug_assert!(moved > 0);
            if moved == 0 {
                break;
            }
            k -= moved;
        }
        self.dirty |= 1 << p;
        true
    }

    /// Adds `m` to port p's batch, sending the batch first if it is full.
    #[inline(always)]
    fn join(&mut self, p: usize, m: Mbuf, c: &mut Counters) {
        if self.batches[p].is_full() {
            self.flush_port(p, c);
        }
        // Cannot fail: the batch was just flushed if it was full.
        let _ = self.batches[p].push(m);
        self.dirty |= 1 << p;
    }

    /// Sends `m` (one reference) to every port of `mask` (not empty).
    #[inline(always)]
    fn push_all(&mut self, mask: u64, m: Mbuf, c: &mut Counters) {
        let k = mask.count_ones() as u16;
        let mut ports = mask_ports(mask);
        m.share(k.saturating_sub(1), |copy| {
            if let Some(p) = ports.next() {
                self.push(p, copy, c);
            }
        });
        if let Some(p) = ports.next() {
            self.push(p, m, c);
        }
    }

    #[inline(always)]
    fn flush_port(&mut self, p: usize, c: &mut Counters) {
        if let Some(q) = self.tx[p].as_mut() {
            let (drops, second, ingress) = (&mut self.drops, self.second, self.ingress);
            let out = q.flush_reporting(&mut self.batches[p], &mut |frames, why| {
                let reason = match why {
                    TxDrop::TooBig => DropReason::EgressOversize,
                    TxDrop::Refused => DropReason::TxFull,
                    TxDrop::NoQueue => DropReason::LinkDown,
                };
                drops.note(second, frames, ingress, p as u16, reason);
            });
            c.port_add(p, PortCounter::TxPackets, out.sent as u64);
            if out.too_big + out.refused + out.no_queue != 0 {
                let (big, full, down) =
                    (out.too_big as u64, out.refused as u64, out.no_queue as u64);
                c.port_add(p, PortCounter::TxDropped, big + full + down);
                c.drop_n(DropReason::EgressOversize, big);
                c.drop_n(DropReason::TxFull, full);
                c.drop_n(DropReason::LinkDown, down);
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

/// Bytes of a frame after its Ethernet header and VLAN tags (up to two), as an MTU counts them.
#[inline]
fn payload_len(m: &Mbuf) -> u32 {
    let d = m.data();
    let tpid = |at: usize| {
        d.get(at..at + 2)
            .is_some_and(|b| matches!(be16(b), ethertype::VLAN | ethertype::QINQ))
    };
    let header = match (tpid(12), tpid(16)) {
        (true, true) => 22,
        (true, false) => 18,
        _ => 14,
    };
    m.pkt_len().saturating_sub(header)
}

/// How a frame is to leave: with this TCI, or untagged.
type Wire = Option<u16>;

/// Rewrites `m` in place to leave as `want` (it arrived with an outer tag if `tagged`); false
/// when the buffer is shared or has no headroom (nothing changed).
fn retag_in_place(m: &mut Mbuf, tagged: bool, want: Wire) -> bool {
    match (tagged, want) {
        (false, None) => true,
        (true, Some(tci)) => match m.data_mut() {
            Some(d) if d.len() >= 18 => {
                d[14..16].copy_from_slice(&tci.to_be_bytes());
                true
            }
            _ => false,
        },
        (false, Some(tci)) => match m.prepend(4) {
            Some(d) => {
                d.copy_within(4..16, 0);
                d[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                d[14..16].copy_from_slice(&tci.to_be_bytes());
                true
            }
            None => false,
        },
        (true, None) => match m.data_mut() {
            Some(d) if d.len() >= 18 => {
                d.copy_within(0..12, 4);
                m.trim_front(4)
            }
            _ => false,
        },
    }
}

/// Pads `m` with zeros to the Ethernet minimum ([`MIN_FRAME_LEN`]); false (nothing changed)
/// when it is short and cannot grow in place (shared, or no tailroom).
#[inline]
fn pad_in_place(m: &mut Mbuf) -> bool {
    match MIN_FRAME_LEN.checked_sub(m.pkt_len()) {
        None | Some(0) => true,
        // Less than 60: fits u16.
        Some(short) => m.append(short as u16).is_some(),
    }
}

/// A new buffer holding `m`'s frame as it should leave (`want`), padded to the Ethernet
/// minimum; None when the pool is empty.
fn retagged_copy(pool: &Mempool, m: &Mbuf, tagged: bool, want: Wire) -> Option<Mbuf> {
    let d = m.data();
    let len = match (tagged, want) {
        (false, None) | (true, Some(_)) => d.len(),
        (false, Some(_)) => d.len() + 4,
        (true, None) => d.len().checked_sub(4)?,
    };
    // A full first segment with a tag pushed takes some of the new buffer's headroom.
    let mut out = Mbuf::alloc_len(pool, u16::try_from(len).ok()?)?;
    let buf = out.data_mut()?;
    match (tagged, want) {
        (false, None) | (true, Some(_)) => {
            buf.copy_from_slice(d);
            if let (Some(tci), true) = (want, buf.len() >= 18) {
                buf[14..16].copy_from_slice(&tci.to_be_bytes());
            }
        }
        (false, Some(tci)) => {
            buf[..12].copy_from_slice(d.get(..12)?);
            buf[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            buf[14..16].copy_from_slice(&tci.to_be_bytes());
            buf[16..].copy_from_slice(d.get(12..)?);
        }
        (true, None) => {
            buf[..12].copy_from_slice(d.get(..12)?);
            buf[12..].copy_from_slice(d.get(16..)?);
        }
    }
    if m.nb_segs() > 1 {
        // A chained frame: its first segment, retagged, heads the others, shared, not copied.
        return m.share_tail_under(&mut out).then_some(out);
    }
    // A fresh buffer of 2 KiB: room to pad.
    pad_in_place(&mut out).then_some(out)
}

/// Makes `m` leave as `want` and at least [`MIN_FRAME_LEN`] long (a tag popped, or a runt
/// that came in short, is padded with zeros): in place when it can, else as a copy (the
/// original is freed).
#[inline]
fn into_wire(pool: &Mempool, mut m: Mbuf, tagged: bool, want: Wire) -> Option<Mbuf> {
    if !retag_in_place(&mut m, tagged, want) {
        return retagged_copy(pool, &m, tagged, want);
    }
    if pad_in_place(&mut m) {
        return Some(m);
    }
    // Now in its wire form already, but shared or without tailroom: a padded copy.
    retagged_copy(pool, &m, want.is_some(), want)
}

/// The TCI a frame of `vlan` carries out of a trunk: its own priority bits, the bridge's VID.
#[inline(always)]
fn tci_for(p: &Prepared, vlan: u16) -> u16 {
    p.tag().map_or(0, |t| t.0 & 0xf000) | (vlan & 0x0fff)
}

impl Worker {
    /// Runs the poll loop until the stop flag is set, then flushes and publishes its counters.
    /// Returns 0 (the lcore's exit status).
    pub fn run(self) -> i32 {
        let Worker {
            lcore,
            mut rx,
            tx,
            bridge: cell,
            fdb,
            stats,
            stop,
            mut sampling,
            pool,
            mut moves,
            drops,
            commands,
        } = self;
        const { assert!(MAX_PORTS <= 64, "the dirty-port mask is a u64") };
        log::info!(
            "worker on lcore {lcore}: polling {}",
            rx.iter()
                .map(|q| format!("port {} queue {}", q.port(), q.queue()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut my_queues = [0u16; MAX_PORTS];
        for q in &rx {
            my_queues[q.port().index()] += 1;
        }
        let mut cache = Cache::new(Arc::clone(&cell));
        // `published` is the snapshot last seen; `view` is what this worker forwards by (the
        // same, unless a BPDU just shut a port down here before the control thread republished).
        let mut published: Arc<BridgeView> = Arc::clone(cache.load());
        let mut view = Arc::clone(&published);
        let (mut limits, egress_meters) = build_meters(&view, &my_queues);
        let mut egress = Egress {
            tx,
            batches: (0..MAX_PORTS).map(|_| TxBatch::new()).collect(),
            dirty: 0,
            meters: Vec::new(),
            metered: 0,
            mtu_limited: 0,
            mtu: vec![u32::MAX; MAX_PORTS],
            no_chains: 0,
            ready: 0,
            now: 0,
            pool: Arc::clone(&pool),
            ingress: 0,
            second: 0,
            drops: DropReporter {
                reporting: drops,
                left: 0,
                second: u32::MAX,
                unreported: 0,
            },
        };
        egress.set_view(&view, egress_meters);
        let mut c = Counters::default();
        let mut vlans = VlanTally::default();
        let mut cycles = cycles_histogram();
        let mut burst = Burst::new();
        let mut prepared = [Prepared::default(); BURST_SIZE];
        let mut flows = FlowCache::new(DEFAULT_SETS);
        let mut gate = CacheGate::default();
        let mut hit_of = [Hit::default(); BURST_SIZE];
        let mut probes: [Option<(FlowKey, Slot)>; BURST_SIZE] = [None; BURST_SIZE];
        let mut misses = [0u8; BURST_SIZE];
        // What the full path's lookups read of the MAC table, published once per burst.
        let mut table = Probes::default();
        // Snapshots taken up since the start: with the table's epoch, the flow cache's stamp.
        let mut view_changes: u64 = 0;
        let mut iterations: u64 = 0;
        let mut mark = tsc();
        loop {
            let current = cache.load();
            if !Arc::ptr_eq(current, &published) {
                published = Arc::clone(current);
                view = Arc::clone(&published);
                view_changes += 1;
                let (m, e) = build_meters(&view, &my_queues);
                limits = m;
                egress.set_view(&view, e);
            }
            let now = fdb.now();
            for q in rx.iter_mut() {
                // A queue the port's peer has not enabled (a VM's unused queue pair).
                if !q.is_enabled() {
                    continue;
                }
                let n = q.rx_burst(&mut burst);
                if n == 0 {
                    let t = tsc();
                    c.add(WorkerCounter::IdleCycles, t.wrapping_sub(mark));
                    mark = t;
                    continue;
                }
                limits.now = mark.max(limits.built_at);
                egress.now = limits.now;
                let ingress = q.port().0;
                egress.ingress = ingress;
                egress.second = now;
                let inp = usize::from(ingress);
                let mut ctx = view.ingress_ctx(ingress);
                // The code compiled for what this view needs: the same decisions, less work.
                let tier = view.tier();
                // The flow cache serves views without ingress checks (those need every frame
                // metered or matched) while it measures cheaper than the full path alone.
                let caching = gate.is_open() && tier != Tier::Full && ctx.enabled();
                if !caching {
                    // Every frame's first line in (with the cache, its key pass reads them).
                    for m in burst.as_slice() {
                        m.prefetch_data();
                    }
                }
                // Which frames of this burst sFlow samples: usually none, found with one compare.
                let (sampled, pool_before) = match sampling.as_mut() {
                    Some(s) => {
                        let sampler = &mut s.samplers[inp];
                        let before = sampler.seen();
                        (sampler.burst(n as u32), before)
                    }
                    None => (0, 0),
                };
                let mut bytes = 0u64;
                let mut pkts = burst.drain();
                // Frames the flow cache decides, one bit each (sampled ones included: a sample
                // of a cached frame says what the full path would).
                let mut hits: u32 = 0;
                // Frames before `first` went out by the cache, in the run that opens the burst.
                let mut first = 0;
                if caching {
                    flows.set_stamp(stamp(fdb.epoch(), view_changes, now));
                    (first, hits) = send_cached_frames(
                        &mut CacheWork {
                            flows: &flows,
                            probes: &mut probes,
                            hit_of: &mut hit_of,
                            pool: &pool,
                            egress: &mut egress,
                            c: &mut c,
                            bytes: &mut bytes,
                            vlans: &mut vlans,
                            sampling: sampling.as_mut(),
                            pool_before,
                        },
                        &mut pkts,
                        n,
                        ingress,
                        ctx.mtu(),
                        sampled,
                    );
                }
                // The rest take the full path, as a pipeline: parse miss k + LOOKAHEAD and
                // prefetch its MAC-table lines while deciding miss k, so the table loads
                // overlap without flooding the CPU with outstanding misses.
                let mut nmiss =
                    plan_misses(hits, first, n, &pkts, &mut misses, &mut prepared, |d| {
                        prepare_in(tier, d, &ctx, &view, &fdb)
                    });
                let mut i = first;
                let mut k = 0;
                while i < n {
                    if hits & (1 << i) != 0 {
                        // Runs of cached frames join their batch at once here too.
                        let h = hit_of[i];
                        let joins = h.as_is() && egress.is_ready(h.out());
                        let mut run = 1;
                        while joins
                            && i + run < n
                            && hits & (1 << (i + run)) != 0
                            && hit_of[i + run] == h
                        {
                            run += 1;
                        }
                        // Sampled as they leave: by now no move in this burst can turn them
                        // to the full path (one before them already did).
                        if u64::from(sampled) >> i != 0 {
                            if let Some(s) = sampling.as_mut() {
                                for j in 0..run {
                                    let Some(m) = pkts.ahead(j) else { break };
                                    if sampled & (1 << (i + j)) != 0 {
                                        let pool = pool_before + (i + j) as u64 + 1;
                                        sample_hit(s, m, h, ingress, pool, &mut c);
                                    }
                                }
                            }
                        }
                        if joins {
                            egress.join_run(h.out(), &mut pkts, run, &mut c);
                        } else {
                            let Some(m) = pkts.next() else { break };
                            send_cached(&pool, h, m, &mut egress, &mut c);
                        }
                        i += run;
                        continue;
                    }
                    if k + LOOKAHEAD < nmiss {
                        let j = usize::from(misses[k + LOOKAHEAD]);
                        if let Some(a) = pkts.ahead(j - i) {
                            prepared[j] = prepare_in(tier, a.data(), &ctx, &view, &fdb);
                        }
                    }
                    k += 1;
                    let Some(m) = pkts.next() else { break };
                    i += 1;
                    bytes += u64::from(m.pkt_len());
                    let p = &prepared[i - 1];
                    let mut moved_here = false;
                    let v = decide_in(
                        tier,
                        &ctx,
                        p,
                        m.pkt_len(),
                        &view,
                        &fdb,
                        &mut limits,
                        now,
                        &mut table,
                    );
                    if let Some(vlan) = p.vlan() {
                        match v.action {
                            Action::Drop(_) => vlans.discarded(vlan),
                            _ => vlans.forwarded(vlan, m.pkt_len(), p.dst_cast()),
                        }
                    }
                    if sampled & (1 << (i - 1)) != 0 {
                        if let Some(s) = sampling.as_mut() {
                            let taken = Taken {
                                output: SampledOutput::of(v.action),
                                vlan: p.vlan().unwrap_or(0),
                                priority: u16::from(p.pcp()),
                                pool: pool_before + i as u64,
                            };
                            take_sample(s, &m, taken, ingress, &mut c);
                        }
                    }
                    match v.learn {
                        None
                        | Some(
                            Learn::Known | Learn::Refreshed | Learn::Contended | Learn::Limited,
                        ) => {}
                        Some(Learn::Learned) => c.add(WorkerCounter::Learned, 1),
                        Some(Learn::Moved { from }) => {
                            report_move(&mut moves, p, from, ingress, &mut c);
                            moved_here = true;
                        }
                        Some(Learn::Full) => c.add(WorkerCounter::FdbFull, 1),
                        Some(Learn::StaticElsewhere { .. }) => {
                            c.add(WorkerCounter::StaticConflict, 1)
                        }
                    }
                    let vlan = p.vlan().unwrap_or(0);
                    match v.action {
                        Action::Unicast(out) => {
                            c.add(WorkerCounter::Unicast, 1);
                            if caching {
                                if let (Some(k), Some(hit)) =
                                    (FlowKey::of(m.data(), ingress), entry_for(&v, p, &view))
                                {
                                    flows.insert(flows.slot(&k), &k, hit);
                                }
                            }
                            // A frame shorter than the minimum leaves padded: never as is.
                            if v.as_is && m.pkt_len() >= MIN_FRAME_LEN {
                                egress.push(out, m, &mut c);
                            } else {
                                let want = view.egress_tagged(vlan, out).then(|| tci_for(p, vlan));
                                match into_wire(&pool, m, p.form() != FORM_UNTAGGED, want) {
                                    Some(m) => egress.push(out, m, &mut c),
                                    None => egress.lost(1, &mut c),
                                }
                            }
                        }
                        Action::Flood(mask) => {
                            c.add(WorkerCounter::Flooded, 1);
                            c.add(WorkerCounter::FloodCopies, u64::from(mask.count_ones()));
                            let cast = p.dst_cast();
                            if cast != Cast::Unicast {
                                count_group(&mut c, inp, mask, cast);
                            }
                            let untagged = mask & view.untagged(vlan);
                            let tagged_out = mask & !untagged;
                            // Shared as it came when every copy leaves in that form and
                            // needs no padding; otherwise rewritten (and padded) first.
                            let whole = m.pkt_len() >= MIN_FRAME_LEN;
                            if whole && tagged_out == 0 && p.form() == FORM_UNTAGGED {
                                egress.push_all(untagged, m, &mut c);
                            } else if whole && untagged == 0 && p.form() == FORM_TAGGED {
                                egress.push_all(tagged_out, m, &mut c);
                            } else {
                                self::flood_mixed(
                                    &pool,
                                    m,
                                    p,
                                    vlan,
                                    untagged,
                                    tagged_out,
                                    &mut egress,
                                    &mut c,
                                );
                            }
                        }
                        Action::Drop(r) => {
                            drop_in(&mut egress, &mut c, &m, ingress, r, now);
                            if r == DropReason::BpduGuard
                                && bpdu_guard_fired(&mut view, ingress, &mut c)
                            {
                                // The rest of this burst is dropped too.
                                ctx = view.ingress_ctx(ingress);
                                view_changes += 1;
                            }
                        }
                    }
                    // The rest of the burst was probed before this move, which may turn their
                    // decisions: it all takes the full path.
                    if moved_here && u64::from(hits) >> i != 0 {
                        uncount_hits(hits >> i, i, &pkts, &hit_of, &mut bytes, &mut vlans);
                        hits &= ((1u64 << i) - 1) as u32;
                        nmiss = plan_misses(hits, i, n, &pkts, &mut misses, &mut prepared, |d| {
                            prepare_in(tier, d, &ctx, &view, &fdb)
                        });
                        k = 0;
                    }
                }
                egress.flush_all(&mut c);
                let cached = u64::from(hits.count_ones());
                c.add(WorkerCounter::Unicast, cached);
                c.add(WorkerCounter::FlowCacheHits, cached);
                c.add(WorkerCounter::FdbLookups, table.lookups);
                c.add(WorkerCounter::FdbLineReads, table.lines);
                table = Probes::default();
                c.add(WorkerCounter::Packets, n as u64);
                c.add(WorkerCounter::Bursts, 1);
                c.port_add(inp, PortCounter::RxPackets, n as u64);
                c.port_add(inp, PortCounter::RxBytes, bytes);
                let t = tsc();
                let spent = t.wrapping_sub(mark);
                c.add(WorkerCounter::BusyCycles, spent);
                cycles.saturating_record(spent);
                if tier != Tier::Full && ctx.enabled() {
                    gate.count(n as u64, cached, spent);
                }
                mark = t;
            }
            iterations += 1;
            if iterations.is_multiple_of(HOUSEKEEPING_INTERVAL) {
                c.add(WorkerCounter::Iterations, HOUSEKEEPING_INTERVAL);
                c.publish(&stats);
                vlans.publish(&stats);
                stats.merge_cycles(&mut cycles);
                gate.review();
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let mut changed = false;
                while let Ok(cmd) = commands.try_recv() {
                    // Forward by the latest snapshot from here on: a port removed from it gets
                    // nothing more from this worker once its handles go.
                    let current = cache.load();
                    if !Arc::ptr_eq(current, &published) {
                        published = Arc::clone(current);
                        view = Arc::clone(&published);
                        view_changes += 1;
                    }
                    match cmd {
                        WorkerCommand::AddRx(q) => {
                            my_queues[q.port().index()] += 1;
                            rx.push(q);
                        }
                        WorkerCommand::AddTx(q) => {
                            let p = q.port().index();
                            egress.flush_all(&mut c);
                            egress.tx[p] = Some(q);
                            egress.refresh_ready();
                        }
                        WorkerCommand::RemovePort(port) => {
                            egress.flush_all(&mut c);
                            rx.retain(|q| q.port().0 != port);
                            my_queues[usize::from(port) % MAX_PORTS] = 0;
                            if let Some(slot) = egress.tx.get_mut(usize::from(port)) {
                                *slot = None;
                            }
                            egress.refresh_ready();
                        }
                        WorkerCommand::SetSampler(port, mut sampler) => {
                            if let Some(s) = sampling.as_mut() {
                                if let Some(slot) = s.samplers.get_mut(usize::from(port)) {
                                    sampler.continue_from(slot);
                                    *slot = sampler;
                                }
                            }
                        }
                        WorkerCommand::Sync => {}
                    }
                    changed = true;
                    stats.mark_applied();
                }
                if changed {
                    let (m, e) = build_meters(&view, &my_queues);
                    limits = m;
                    egress.set_view(&view, e);
                }
            }
        }
        egress.flush_all(&mut c);
        c.add(
            WorkerCounter::Iterations,
            iterations % HOUSEKEEPING_INTERVAL,
        );
        c.publish(&stats);
        vlans.publish(&stats);
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

/// Lists in `misses`, in order, the frames `from..n` the flow cache did not decide (`pkts`
/// is at frame `from`), and prepares the first LOOKAHEAD of them for the full path's
/// pipeline. Returns how many there are.
#[inline(always)]
fn plan_misses(
    hits: u32,
    from: usize,
    n: usize,
    pkts: &BurstDrain,
    misses: &mut [u8; BURST_SIZE],
    prepared: &mut [Prepared; BURST_SIZE],
    prepare: impl Fn(&[u8]) -> Prepared,
) -> usize {
    let mut nmiss = 0;
    for j in from..n {
        if hits & (1 << j) == 0 {
            misses[nmiss] = j as u8;
            nmiss += 1;
        }
    }
    for &j in &misses[..nmiss.min(LOOKAHEAD)] {
        let j = usize::from(j);
        if let Some(m) = pkts.ahead(j - from) {
            prepared[j] = prepare(m.data());
        }
    }
    nmiss
}

/// What the flow cache's part of a burst works with.
struct CacheWork<'a> {
    flows: &'a FlowCache,
    probes: &'a mut [Option<(FlowKey, Slot)>; BURST_SIZE],
    hit_of: &'a mut [Hit; BURST_SIZE],
    pool: &'a Mempool,
    egress: &'a mut Egress,
    c: &'a mut Counters,
    bytes: &'a mut u64,
    vlans: &'a mut VlanTally,
    /// sFlow: the worker's samplers and ring, and the ingress sampler's count before this burst.
    sampling: Option<&'a mut Sampling>,
    pool_before: u64,
}

/// The flow cache's part of a burst of `n` frames from `ingress`: sends the opening run of
/// frames it decides and probes the rest. A `sampled` frame it decides is sampled on the side
/// and forwards as decided: sampling does not send frames down the full path. Returns how many frames
/// it sent (taken from `pkts`) and which frames it decides, one bit each (the opening run's
/// and the later ones, whose decisions are in `hit_of`). Out of line: the poll loop stays
/// small for the full path.
#[inline(never)]
fn send_cached_frames(
    w: &mut CacheWork,
    pkts: &mut BurstDrain,
    n: usize,
    ingress: u16,
    mtu: u32,
    sampled: u32,
) -> (usize, u32) {
    let mut first = 0;
    let mut run = VlanRun::default();
    // Every frame's key first, its set prefetched, so the probes below overlap. A frame of the
    // same conversation as the one before it (most of a VM's burst) reuses its slot.
    let mut prev: Option<(FlowKey, Slot)> = None;
    for (j, probe) in w.probes.iter_mut().enumerate().take(n) {
        *probe = pkts
            .ahead(j)
            .and_then(|m| FlowKey::of(m.data(), ingress))
            .map(|k| match prev {
                Some((pk, slot)) if pk == k => (k, slot),
                _ => {
                    let slot = w.flows.slot(&k);
                    w.flows.prefetch(slot);
                    (k, slot)
                }
            });
        prev = *probe;
    }
    // The opening run of cached frames; when they all leave as they came by one
    // port (a conversation, or one VM's traffic), they join its batch at once. A frame with
    // the key of the one before it takes that one's decision without a probe.
    let mut one_port = true;
    while let Some(m) = pkts.ahead(first) {
        let same = first > 0 && w.probes[first] == w.probes[first - 1];
        let h = if same {
            w.flows
                .fits(m.pkt_len(), m.nb_segs(), mtu, &w.probes[first])
                .then_some(w.hit_of[first - 1])
        } else {
            cached(w.flows, m, &w.probes[first], mtu)
        };
        let Some(h) = h else {
            break;
        };
        if sampled & (1 << first) != 0 {
            if let Some(s) = w.sampling.as_deref_mut() {
                sample_hit(s, m, h, ingress, w.pool_before + first as u64 + 1, w.c);
            }
        }
        *w.bytes += u64::from(m.pkt_len());
        run.add(h.vlan(), m.pkt_len(), w.vlans);
        w.hit_of[first] = h;
        one_port &= h.as_is() && h.out() == w.hit_of[0].out();
        first += 1;
    }
    if !(one_port && first > 0 && w.egress.join_run(w.hit_of[0].out(), pkts, first, w.c)) {
        for h in &w.hit_of[..first] {
            let Some(m) = pkts.next() else { break };
            send_cached(w.pool, *h, m, w.egress, w.c);
        }
    }
    let mut hits = ((1u64 << first) - 1) as u32;
    // After a miss: the rest of the burst is probed as a whole.
    for j in first + 1..n {
        let Some(m) = pkts.ahead(j - first) else {
            break;
        };
        // Counted now (taken back if a move before them sends them down the full path),
        // sampled when they leave.
        if let Some(h) = cached(w.flows, m, &w.probes[j], mtu) {
            *w.bytes += u64::from(m.pkt_len());
            run.add(h.vlan(), m.pkt_len(), w.vlans);
            w.hit_of[j] = h;
            hits |= 1 << j;
        }
    }
    run.flush(w.vlans);
    (first, hits)
}

/// Takes back the counts of the burst's later hits (`rest`, one bit each from frame `from` on)
/// that a MAC move sends down the full path, which counts them again.
#[cold]
#[inline(never)]
fn uncount_hits(
    rest: u32,
    from: usize,
    pkts: &BurstDrain,
    hit_of: &[Hit; BURST_SIZE],
    bytes: &mut u64,
    vlans: &mut VlanTally,
) {
    for j in 0..BURST_SIZE - from {
        if rest & (1 << j) == 0 {
            continue;
        }
        let Some(m) = pkts.ahead(j) else { break };
        *bytes -= u64::from(m.pkt_len());
        vlans.unicast_back(hit_of[from + j].vlan(), 1, u64::from(m.pkt_len()));
    }
}

/// Unicast frames of one VLAN in a row, counted in registers and added to the VLAN's tally
/// when the VLAN changes or the burst ends: most bursts are one VLAN's, and a memory add per
/// frame would chain every frame of the burst through the tally's cache line.
#[derive(Default)]
struct VlanRun {
    vlan: u16,
    frames: u64,
    bytes: u64,
}

impl VlanRun {
    #[inline(always)]
    fn add(&mut self, vlan: u16, bytes: u32, tally: &mut VlanTally) {
        if vlan != self.vlan {
            self.flush(tally);
            self.vlan = vlan;
        }
        self.frames += 1;
        self.bytes += u64::from(bytes);
    }

    #[inline(always)]
    fn flush(&mut self, tally: &mut VlanTally) {
        if self.frames != 0 {
            tally.unicast(self.vlan, self.frames, self.bytes);
            self.frames = 0;
            self.bytes = 0;
        }
    }
}

/// The flow cache's decision for `m`, received on `ingress`; None sends the frame down the
/// full path.
#[inline(always)]
fn cached(flows: &FlowCache, m: &Mbuf, probe: &Option<(FlowKey, Slot)>, mtu: u32) -> Option<Hit> {
    let (k, slot) = probe.as_ref()?;
    flows.decided(k, *slot, m.pkt_len(), m.nb_segs(), mtu)
}

/// Sends a frame the flow cache decided, retagged if its decision says so.
#[inline(always)]
fn send_cached(pool: &Mempool, h: Hit, m: Mbuf, egress: &mut Egress, c: &mut Counters) {
    if h.as_is() {
        egress.push(h.out(), m, c);
        return;
    }
    let pcp = match (h.in_tagged(), m.data().get(14..16)) {
        (true, Some(b)) => be16(b) & 0xf000,
        _ => 0,
    };
    let want = h.out_tagged().then_some(pcp | h.vlan());
    match into_wire(pool, m, h.in_tagged(), want) {
        Some(m) => egress.push(h.out(), m, c),
        None => egress.lost(1, c),
    }
}

#[inline(always)]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Samples frame `m`, which the flow cache decided `h` for, the `pool`th frame its sampler
/// saw: the record says what the full path would (one egress port, the frame's VLAN and
/// priority).
#[inline(never)]
fn sample_hit(s: &mut Sampling, m: &Mbuf, h: Hit, ingress: u16, pool: u64, c: &mut Counters) {
    let pcp = match (h.in_tagged(), m.data().get(14..16)) {
        (true, Some(b)) => be16(b) >> 13,
        _ => 0,
    };
    let taken = Taken {
        output: SampledOutput::Port(h.out()),
        vlan: h.vlan(),
        priority: pcp,
        pool,
    };
    take_sample(s, m, taken, ingress, c);
}

/// What a sample says beyond the frame itself.
struct Taken {
    output: SampledOutput,
    vlan: u16,
    priority: u16,
    /// The ingress sampler's frame count, this frame included.
    pool: u64,
}

/// Puts a sampled frame's record into the worker's sample ring (1 frame in N: out of line).
#[inline(never)]
fn take_sample(s: &mut Sampling, m: &Mbuf, t: Taken, ingress: u16, c: &mut Counters) {
    let mut gathered = [0u8; MAX_HEADER];
    let header = header_of(m, s.header_bytes, &mut gathered);
    let inp = usize::from(ingress);
    c.port_add(inp, PortCounter::SamplesTaken, 1);
    // Written straight into the ring's slot: only the bytes kept, no record on the stack.
    let queued = s.ring.push_with(|r| {
        r.fill(
            header,
            m.pkt_len(),
            ingress,
            t.output,
            t.vlan,
            t.priority,
            t.pool,
            s.header_bytes,
        )
    });
    if !queued {
        c.port_add(inp, PortCounter::SamplesLost, 1);
    }
}

/// Counts frame `m`, received on `ingress`, as dropped there for `r`, and reports it.
#[cold]
#[inline(never)]
fn drop_in(egress: &mut Egress, c: &mut Counters, m: &Mbuf, ingress: u16, r: DropReason, now: u32) {
    c.drop_one(r);
    c.port_add(usize::from(ingress), PortCounter::RxDropped, 1);
    // A frame for its own segment was bound back out of the port it came in on.
    let out = if r == DropReason::SameSegment {
        ingress
    } else {
        NO_PORT
    };
    egress
        .drops
        .note(now, std::slice::from_ref(m), ingress, out, r);
}

/// Counts a flood to a group address: received multicast or broadcast on `inp`, given to
/// send on every port of `mask`.
#[inline(never)]
fn count_group(c: &mut Counters, inp: usize, mask: u64, cast: Cast) {
    let (rx, tx) = match cast {
        Cast::Broadcast => (PortCounter::InBroadcast, PortCounter::OutBroadcast),
        _ => (PortCounter::InMulticast, PortCounter::OutMulticast),
    };
    c.port_add(inp, rx, 1);
    for q in mask_ports(mask) {
        c.port_add(usize::from(q), tx, 1);
    }
}

/// Counts a BPDU the guard dropped; with bpdu_guard_shutdown, shuts the port down here at
/// once (the control thread then publishes it to every worker). True when it did.
#[cold]
#[inline(never)]
fn bpdu_guard_fired(view: &mut Arc<BridgeView>, ingress: u16, c: &mut Counters) -> bool {
    c.port_add(usize::from(ingress), PortCounter::BpduDropped, 1);
    if view.shuts_down_on_bpdu(ingress) && view.is_enabled(ingress) {
        *view = Arc::new(view.with_port_enabled(ingress, false));
        return true;
    }
    false
}

/// Counts a MAC move and reports it to the control thread (rare: kept out of the hot loop).
#[cold]
#[inline(never)]
fn report_move(
    moves: &mut Option<RingProducer<MoveEvent>>,
    p: &Prepared,
    from: u16,
    to: u16,
    c: &mut Counters,
) {
    c.add(WorkerCounter::Moved, 1);
    c.port_add(usize::from(to), PortCounter::MacMovesIn, 1);
    if let Some(ring) = moves.as_mut() {
        let ev = MoveEvent {
            mac: p.src(),
            vlan: p.vlan().unwrap_or(0),
            from,
            to,
        };
        if ring.enqueue_burst(std::slice::from_ref(&ev)) == 0 {
            c.add(WorkerCounter::MoveEventsLost, 1);
        }
    }
}

/// A flood whose egress ports need the frame in two forms (tagged and untagged), or in one form
/// it did not arrive in: the original buffer is rewritten for one group and a copy is made for
/// the other.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn flood_mixed(
    pool: &Mempool,
    m: Mbuf,
    p: &Prepared,
    vlan: u16,
    untagged: u64,
    tagged_out: u64,
    egress: &mut Egress,
    c: &mut Counters,
) {
    let tagged = p.tag().is_some();
    let tci = tci_for(p, vlan);
    let (copy_mask, copy_want, orig_mask, orig_want) = if tagged {
        (untagged, None, tagged_out, Some(tci))
    } else {
        (tagged_out, Some(tci), untagged, None)
    };
    // One group only: rewrite the original for it. Both: the copy first, while the original is
    // still as it arrived.
    let (orig_mask, orig_want) = if orig_mask == 0 {
        (copy_mask, copy_want)
    } else {
        if copy_mask != 0 {
            match retagged_copy(pool, &m, tagged, copy_want) {
                Some(copy) => egress.push_all(copy_mask, copy, c),
                None => egress.lost(u64::from(copy_mask.count_ones()), c),
            }
        }
        (orig_mask, orig_want)
    };
    match into_wire(pool, m, tagged, orig_want) {
        Some(m) => egress.push_all(orig_mask, m, c),
        None => egress.lost(u64::from(orig_mask.count_ones()), c),
    }
}
