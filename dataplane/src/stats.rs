//! Per-worker counters. A worker counts into plain integers of its own and publishes them to
//! its cache-line-aligned shared block every so often; the control thread reads and sums the
//! blocks. No counter is shared between workers and none is updated atomically per packet.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::dpdk::MAX_PORTS;
use crate::forward::{Cast, DropReason, VLAN_IDS};

/// Worker-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerCounter {
    /// Frames received by the worker, all ports.
    Packets,
    /// Non-empty rx bursts.
    Bursts,
    /// Poll iterations.
    Iterations,
    /// TSC cycles spent in iterations that received something.
    BusyCycles,
    /// TSC cycles spent in iterations that received nothing.
    IdleCycles,
    /// Frames sent to one known port.
    Unicast,
    /// Frames flooded.
    Flooded,
    /// Copies made by flooding (one per egress port).
    FloodCopies,
    /// Source addresses learned for the first time.
    Learned,
    /// Source addresses that moved to another port.
    Moved,
    /// Source addresses not learned because the table was full.
    FdbFull,
    /// Sources that contradict a static entry (the static entry stands).
    StaticConflict,
    /// MAC moves not reported to the control thread (its ring was full).
    MoveEventsLost,
    /// Frames sent by a decision the worker's flow cache held (no MAC-table lookup).
    FlowCacheHits,
    /// MAC-table lookups made by the full path (a source learned or refreshed, a destination
    /// looked up): about two a frame it decides, none for a flow-cache hit.
    FdbLookups,
    /// MAC-table cache lines those lookups read: one for a key in the first line of its first
    /// bucket (the line the worker prefetched), up to four for one elsewhere or missing. Per
    /// lookup, how crowded the table is.
    FdbLineReads,
}

impl WorkerCounter {
    /// Number of worker-wide counters.
    pub const COUNT: usize = 16;
}

// The counts are kept by hand: a variant added without them fails to compile here.
const _: () = assert!(WorkerCounter::FdbLineReads as usize + 1 == WorkerCounter::COUNT);
const _: () = assert!(PortCounter::OutBroadcast as usize + 1 == PortCounter::COUNT);
const _: () = assert!(DropReason::LinkDown as usize + 1 == DropReason::COUNT);

/// Per-port counters, kept by every worker for every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PortCounter {
    /// Frames received on the port.
    RxPackets,
    /// Bytes received on the port.
    RxBytes,
    /// Received frames dropped by the switch (any reason but tx).
    RxDropped,
    /// Frames the port's tx queue took.
    TxPackets,
    /// Frames the port's tx queue refused (freed, counted).
    TxDropped,
    /// Frames received on the port that the sFlow sampler took.
    SamplesTaken,
    /// Samples lost because the worker's sample ring was full (sFlow's `drops`).
    SamplesLost,
    /// Source addresses that moved onto this port from another.
    MacMovesIn,
    /// BPDUs dropped by the port's bpdu_guard.
    BpduDropped,
    /// Frames received on the port and forwarded whose destination is a multicast (group, not
    /// broadcast) address: RFC 2863's ifInMulticastPkts, which counts no discarded frame.
    InMulticast,
    /// Frames received on the port and forwarded to the broadcast address (ifInBroadcastPkts).
    InBroadcast,
    /// Frames to a multicast address the switch gave the port to send, sent or dropped on the
    /// way out (RFC 2863's ifOutMulticastPkts counts those "discarded or not sent" too).
    OutMulticast,
    /// Frames to the broadcast address given the port to send (ifOutBroadcastPkts).
    OutBroadcast,
}

impl PortCounter {
    /// Number of per-port counters.
    pub const COUNT: usize = 13;
}

const DROPS_BASE: usize = WorkerCounter::COUNT;
const PORTS_BASE: usize = DROPS_BASE + DropReason::COUNT;
/// Total counters in a block.
pub const COUNTERS: usize = PORTS_BASE + MAX_PORTS * PortCounter::COUNT;

#[inline(always)]
const fn port_slot(port: usize, c: PortCounter) -> usize {
    PORTS_BASE + port * PortCounter::COUNT + c as usize
}

/// Largest cycles-per-burst value the histogram tells apart (about 26 s at 2.6 GHz).
const HIST_MAX: u64 = 1 << 36;

/// A histogram of TSC cycles per rx burst: 2 significant digits from 1 to 2^36.
pub fn cycles_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX, 2).expect("valid histogram bounds")
}

/// A worker's published counters: written by that worker only, read by anyone.
#[repr(C, align(64))]
pub struct WorkerStats {
    lcore: u32,
    vals: [AtomicU64; COUNTERS],
    /// Cycles per rx burst. The worker records into a histogram of its own and merges it in
    /// here with `try_lock` at housekeeping, so it never waits for a reader.
    cycles_per_burst: Mutex<Histogram<u64>>,
    /// Commands from the control thread this worker has applied (its reload handshake).
    applied: AtomicU64,
    /// Per VLAN id, [`VlanCounter`]s; only VLANs marked in `vlans_seen` are written.
    vlans: Box<[[AtomicU64; VlanCounter::COUNT]]>,
    /// One bit per VLAN id that has carried a frame through this worker.
    vlans_seen: [AtomicU64; VLAN_IDS / 64],
}

impl WorkerStats {
    /// An all-zero block for the worker on `lcore`.
    pub fn new(lcore: u32) -> WorkerStats {
        WorkerStats {
            lcore,
            vals: std::array::from_fn(|_| AtomicU64::new(0)),
            cycles_per_burst: Mutex::new(cycles_histogram()),
            applied: AtomicU64::new(0),
            vlans: (0..VLAN_IDS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            vlans_seen: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The per-VLAN counters as last published, for every VLAN that carried a frame.
    pub fn vlan_snapshot(&self) -> VlanCounts {
        let mut out = VlanCounts::default();
        for (word, seen) in self.vlans_seen.iter().enumerate() {
            let mut bits = seen.load(Ordering::Acquire);
            while bits != 0 {
                let vlan = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let v = std::array::from_fn(|k| self.vlans[vlan][k].load(Ordering::Relaxed));
                out.0.insert(vlan as u16, v);
            }
        }
        out
    }

    /// Commands the worker has applied so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that the worker has applied one more command (the worker alone calls this).
    pub fn mark_applied(&self) {
        self.applied.fetch_add(1, Ordering::Release);
    }

    /// Merges the worker's private histogram in and empties it, unless a reader holds the lock
    /// (then it is merged at the next housekeeping). Returns whether it was merged.
    pub fn merge_cycles(&self, local: &mut Histogram<u64>) -> bool {
        match self.cycles_per_burst.try_lock() {
            Ok(mut h) => {
                // Same bounds on both sides: nothing to resize, so adding cannot fail.
                let _ = h.add(&*local);
                local.reset();
                true
            }
            Err(_) => false,
        }
    }

    /// A copy of the cycles-per-burst histogram as last merged.
    pub fn cycles_per_burst(&self) -> Histogram<u64> {
        match self.cycles_per_burst.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The lcore of the worker that writes this block.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// A copy of the counters as last published.
    pub fn snapshot(&self) -> Counters {
        Counters {
            vals: std::array::from_fn(|i| self.vals[i].load(Ordering::Relaxed)),
        }
    }
}

/// A set of counters in plain integers: a worker's private tally, or a snapshot or sum of
/// published blocks.
#[derive(Clone, PartialEq, Eq)]
pub struct Counters {
    vals: [u64; COUNTERS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            vals: [0; COUNTERS],
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("packets", &self.get(WorkerCounter::Packets))
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// Adds to a worker-wide counter.
    #[inline(always)]
    pub fn add(&mut self, c: WorkerCounter, n: u64) {
        self.vals[c as usize] += n;
    }

    /// Counts one dropped frame.
    #[inline(always)]
    pub fn drop_one(&mut self, r: DropReason) {
        self.vals[DROPS_BASE + r.index()] += 1;
    }

    /// Counts `n` dropped frames.
    #[inline(always)]
    pub fn drop_n(&mut self, r: DropReason, n: u64) {
        self.vals[DROPS_BASE + r.index()] += n;
    }

    /// Adds to a port counter.
    #[inline(always)]
    pub fn port_add(&mut self, port: usize, c: PortCounter, n: u64) {
        self.vals[port_slot(port, c)] += n;
    }

    /// A worker-wide counter.
    pub fn get(&self, c: WorkerCounter) -> u64 {
        self.vals[c as usize]
    }

    /// Frames dropped for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.vals[DROPS_BASE + r.index()]
    }

    /// A port counter.
    pub fn port(&self, port: usize, c: PortCounter) -> u64 {
        self.vals[port_slot(port, c)]
    }

    /// Adds every counter of `other` to this set.
    pub fn accumulate(&mut self, other: &Counters) {
        for (a, b) in self.vals.iter_mut().zip(other.vals.iter()) {
            *a += b;
        }
    }

    /// What has been counted since `base` (an earlier snapshot of the same counters), for
    /// readers that show counts from a point on while the workers' counters stay monotonic.
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            vals: std::array::from_fn(|i| self.vals[i].saturating_sub(base.vals[i])),
        }
    }

    /// Copies the tally to the worker's shared block (single writer: plain stores suffice).
    pub fn publish(&self, to: &WorkerStats) {
        for (dst, &v) in to.vals.iter().zip(self.vals.iter()) {
            dst.store(v, Ordering::Relaxed);
        }
    }

    /// Cycles per received packet over the busy iterations (0 when nothing was received).
    pub fn cycles_per_packet(&self) -> f64 {
        self.per(WorkerCounter::BusyCycles, WorkerCounter::Packets)
    }

    /// Counter `n` per unit of counter `d` (0 when `d` is 0).
    pub fn per(&self, n: WorkerCounter, d: WorkerCounter) -> f64 {
        match self.get(d) {
            0 => 0.0,
            d => self.get(n) as f64 / d as f64,
        }
    }
}

/// Per-VLAN counters (sFlow's VLAN counter record, `sflow_version_5.txt` counter format 5),
/// for frames the bridge received into a VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VlanCounter {
    /// Bytes of the frames forwarded in the VLAN (no FCS).
    Octets,
    /// Frames forwarded to an individual address.
    Unicast,
    /// Frames forwarded to a multicast group.
    Multicast,
    /// Frames forwarded to the broadcast address.
    Broadcast,
    /// Frames admitted into the VLAN and then dropped (any reason).
    Discards,
}

impl VlanCounter {
    /// Number of per-VLAN counters.
    pub const COUNT: usize = 5;
}

const _: () = assert!(VlanCounter::Discards as usize + 1 == VlanCounter::COUNT);

/// A worker's private per-VLAN tally: plain integers, published at housekeeping for the VLANs
/// that carried a frame (a bitmap, so publishing costs nothing for VLANs never seen).
pub struct VlanTally {
    // An array, not a slice: indexing by a masked VLAN id needs no bounds check.
    vals: Box<[[u64; VlanCounter::COUNT]; VLAN_IDS]>,
    seen: [u64; VLAN_IDS / 64],
}

impl Default for VlanTally {
    fn default() -> Self {
        VlanTally {
            vals: vec![[0; VlanCounter::COUNT]; VLAN_IDS]
                .into_boxed_slice()
                .try_into()
                .expect("VLAN_IDS rows"),
            seen: [0; VLAN_IDS / 64],
        }
    }
}

impl VlanTally {
    /// Counts a frame of `bytes` forwarded in `vlan` to a destination of kind `cast`, and
    /// marks the VLAN seen (the full path; a flow-cache hit uses [`VlanTally::unicast`]).
    #[inline(always)]
    pub fn forwarded(&mut self, vlan: u16, bytes: u32, cast: Cast) {
        let v = usize::from(vlan) & (VLAN_IDS - 1);
        let kind = match cast {
            Cast::Unicast => VlanCounter::Unicast,
            Cast::Multicast => VlanCounter::Multicast,
            Cast::Broadcast => VlanCounter::Broadcast,
        };
        self.vals[v][VlanCounter::Octets as usize] += u64::from(bytes);
        self.vals[v][kind as usize] += 1;
        self.seen[v / 64] |= 1 << (v % 64);
    }

    /// Counts `frames` unicast frames of `bytes` in all in a VLAN already seen (flow-cache
    /// hits: the full path decided, and marked, their conversation before).
    #[inline(always)]
    pub fn unicast(&mut self, vlan: u16, frames: u64, bytes: u64) {
        let v = &mut self.vals[usize::from(vlan) & (VLAN_IDS - 1)];
        v[VlanCounter::Octets as usize] += bytes;
        v[VlanCounter::Unicast as usize] += frames;
    }

    /// Takes back unicast frames counted in `vlan` that did not leave as counted (the flow
    /// cache's decision for them was turned by a MAC move; the full path counts them again).
    #[cold]
    pub fn unicast_back(&mut self, vlan: u16, frames: u64, bytes: u64) {
        let v = &mut self.vals[usize::from(vlan) & (VLAN_IDS - 1)];
        v[VlanCounter::Octets as usize] = v[VlanCounter::Octets as usize].wrapping_sub(bytes);
        v[VlanCounter::Unicast as usize] = v[VlanCounter::Unicast as usize].wrapping_sub(frames);
    }

    /// Counts a frame admitted into `vlan` and dropped.
    #[inline(always)]
    pub fn discarded(&mut self, vlan: u16) {
        let v = usize::from(vlan) & (VLAN_IDS - 1);
        self.vals[v][VlanCounter::Discards as usize] += 1;
        self.seen[v / 64] |= 1 << (v % 64);
    }

    /// Copies the seen VLANs' counts to the worker's shared block (single writer).
    pub fn publish(&self, to: &WorkerStats) {
        for (word, &bits) in self.seen.iter().enumerate() {
            let mut left = bits;
            while left != 0 {
                let v = word * 64 + left.trailing_zeros() as usize;
                left &= left - 1;
                for (dst, &n) in to.vlans[v].iter().zip(self.vals[v].iter()) {
                    dst.store(n, Ordering::Relaxed);
                }
            }
            // After the counts: a reader that sees the bit sees them.
            to.vlans_seen[word].store(bits, Ordering::Release);
        }
    }
}

/// Per-VLAN counts by VLAN id, of the VLANs that carried a frame: one worker's, or summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanCounts(pub std::collections::BTreeMap<u16, [u64; VlanCounter::COUNT]>);

impl VlanCounts {
    /// Adds `other`'s counts to these.
    pub fn accumulate(&mut self, other: &VlanCounts) {
        for (vlan, v) in &other.0 {
            let mine = self.0.entry(*vlan).or_default();
            for (a, b) in mine.iter_mut().zip(v) {
                *a += b;
            }
        }
    }

    /// One counter of one VLAN (0 for a VLAN never seen).
    pub fn get(&self, vlan: u16, c: VlanCounter) -> u64 {
        self.0.get(&vlan).map_or(0, |v| v[c as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_counts_publish_only_seen_vlans_and_sum() {
        let a = WorkerStats::new(1);
        let b = WorkerStats::new(2);
        let mut ta = VlanTally::default();
        ta.forwarded(10, 100, Cast::Unicast);
        ta.unicast(10, 1, 60);
        ta.forwarded(10, 64, Cast::Broadcast);
        ta.forwarded(4095, 70, Cast::Multicast);
        ta.discarded(20);
        ta.publish(&a);
        let mut tb = VlanTally::default();
        tb.forwarded(10, 1000, Cast::Multicast);
        tb.publish(&b);
        let mut sum = a.vlan_snapshot();
        assert_eq!(sum.0.keys().copied().collect::<Vec<_>>(), [10, 20, 4095]);
        sum.accumulate(&b.vlan_snapshot());
        assert_eq!(sum.get(10, VlanCounter::Octets), 1224);
        assert_eq!(sum.get(10, VlanCounter::Unicast), 2);
        assert_eq!(sum.get(10, VlanCounter::Multicast), 1);
        assert_eq!(sum.get(10, VlanCounter::Broadcast), 1);
        assert_eq!(sum.get(20, VlanCounter::Discards), 1);
        assert_eq!(sum.get(20, VlanCounter::Octets), 0);
        assert_eq!(sum.get(4095, VlanCounter::Multicast), 1);
        assert_eq!(sum.get(7, VlanCounter::Octets), 0);
        assert!(!sum.0.contains_key(&7));
    }

    #[test]
    fn publish_and_sum() {
        let a = WorkerStats::new(1);
        let b = WorkerStats::new(2);
        let mut ca = Counters::default();
        ca.add(WorkerCounter::Packets, 10);
        ca.drop_one(DropReason::Runt);
        ca.port_add(3, PortCounter::RxPackets, 7);
        ca.publish(&a);
        let mut cb = Counters::default();
        cb.add(WorkerCounter::Packets, 5);
        cb.port_add(3, PortCounter::RxPackets, 1);
        cb.port_add(MAX_PORTS - 1, PortCounter::TxDropped, 2);
        cb.publish(&b);
        let mut sum = a.snapshot();
        sum.accumulate(&b.snapshot());
        assert_eq!(sum.get(WorkerCounter::Packets), 15);
        assert_eq!(sum.drops(DropReason::Runt), 1);
        assert_eq!(sum.port(3, PortCounter::RxPackets), 8);
        assert_eq!(sum.port(MAX_PORTS - 1, PortCounter::TxDropped), 2);
        assert_eq!(sum.port(3, PortCounter::TxPackets), 0);
    }

    #[test]
    fn cycles_histogram_merges_and_reports_quantiles() {
        let w = WorkerStats::new(1);
        let mut local = cycles_histogram();
        for v in 1..=1000u64 {
            local.saturating_record(v * 10);
        }
        assert!(w.merge_cycles(&mut local));
        assert_eq!(local.len(), 0, "the private histogram starts over");
        let h = w.cycles_per_burst();
        assert_eq!(h.len(), 1000);
        let p50 = h.value_at_quantile(0.5);
        assert!((4900..=5100).contains(&p50), "p50 {p50}");
        let p99 = h.value_at_quantile(0.99);
        assert!((9800..=10_000).contains(&p99), "p99 {p99}");
        // A reader holding the lock never makes the worker wait: the merge is put off.
        let guard = w.cycles_per_burst.lock().unwrap();
        local.saturating_record(5);
        assert!(!w.merge_cycles(&mut local));
        drop(guard);
        assert!(w.merge_cycles(&mut local));
        assert_eq!(w.cycles_per_burst().len(), 1001);
    }

    #[test]
    fn blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        assert_eq!(std::mem::size_of::<WorkerStats>() % 64, 0);
    }
}
