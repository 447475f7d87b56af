//! A worker's exact-match cache of unicast decisions, in front of the MAC table.
//!
//! Most frames belong to a conversation the worker has already decided: same ingress port,
//! same addresses, same tag. For those, one probe of a small per-worker table replaces the
//! two MAC-table lookups (source learning and destination) and the VLAN classification.
//!
//! An entry holds the frame's header as its key (ingress port, destination and source MACs,
//! ethertype, and for tagged frames the tag and the inner ethertype) and the decision: the
//! egress port and how the frame leaves (as it came, or retagged for its VLAN). It holds only
//! under the stamp it was decided under, the sum of
//!
//! * the MAC table's [`Fdb::epoch`], which grows whenever an entry moves, goes or becomes
//!   static (a new entry changes no decision whose two addresses were both known),
//! * the bridge snapshots the worker has taken up, and
//! * the table's clock in seconds: once a second every conversation takes the full path
//!   again, which refreshes its source's entry, so the entry never ages out while it talks.
//!
//! So a hit decides exactly what the full path would (a randomized test below replays a
//! worker against it). Only unicasts whose source is known on its port are cached; floods,
//! drops, frames with two tags and frames too long to forward always take the full path, as
//! does every frame of a view with ingress checks (port security, BPDU guard, storm control,
//! policing, VEPA). A sampled frame a hit decides is sampled on the side by the worker.
//!
//! [`Fdb::epoch`]: crate::fdb::Fdb::epoch
#![forbid(unsafe_code)]

use crate::fdb::Learn;
use crate::forward::{Action, BridgeView, Prepared, Verdict, FORM_UNTAGGED};
use crate::packet::{ethertype, MIN_FRAME_LEN};

/// Entries per set: one cache line.
const WAYS: usize = 2;

/// Sets in a worker's cache by default: 32,768 entries, 1 MiB (4K conversations fit with few
/// conflicts between them).
pub const DEFAULT_SETS: usize = 16384;

/// Set in every valid key, so an empty (all-zero) entry never matches.
const KEY_VALID: u32 = 1 << 31;
/// Set in the key of a frame with a tag.
const KEY_TAGGED: u32 = 1 << 30;

/// A frame's header as the cache keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKey {
    /// Bytes 0..8: the destination and the first two bytes of the source.
    head: u64,
    /// Bytes 8..16 (the rest of the source, the ethertype and, for a tagged frame, the TCI;
    /// zero past the ethertype otherwise).
    tail: u64,
    /// KEY_VALID, KEY_TAGGED for a tagged frame, the ingress port (14 bits) and, for a tagged
    /// frame, the inner ethertype.
    port_inner: u32,
}

impl FlowKey {
    /// The key of `frame` received on `port`; None when the frame is not one the cache takes
    /// (shorter than a tagged header, or with more than one tag).
    #[inline(always)]
    pub fn of(frame: &[u8], port: u16) -> Option<FlowKey> {
        let head = u64::from_le_bytes(frame.get(0..8)?.try_into().ok()?);
        let tail = u64::from_le_bytes(frame.get(8..16)?.try_into().ok()?);
        let et = ((tail >> 32) as u16).swap_bytes();
        let tagged = et == ethertype::VLAN || et == ethertype::QINQ;
        let (tail, inner) = if tagged {
            let inner = u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?);
            if inner == ethertype::VLAN || inner == ethertype::QINQ {
                return None;
            }
            (tail, KEY_TAGGED | u32::from(inner))
        } else {
            (tail & 0xffff_ffff_ffff, 0)
        };
        Some(FlowKey {
            head,
            tail,
            port_inner: KEY_VALID | (u32::from(port & 0x3fff) << 16) | inner,
        })
    }

    /// Bytes of Ethernet header (with the tag, if any) before the payload.
    #[inline(always)]
    pub fn header_len(&self) -> u32 {
        if self.port_inner & KEY_TAGGED != 0 {
            18
        } else {
            14
        }
    }

    #[inline(always)]
    fn hash(&self) -> u64 {
        (self.head ^ self.tail.rotate_left(21) ^ u64::from(self.port_inner).rotate_left(40))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// How a frame leaves: its egress port, VLAN and tagging, as the full path decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Hit {
    out: u16,
    /// VLAN (12 bits), AS_IS, IN_TAGGED, OUT_TAGGED.
    meta: u16,
}

const AS_IS: u16 = 1 << 12;
const IN_TAGGED: u16 = 1 << 13;
const OUT_TAGGED: u16 = 1 << 14;

impl Hit {
    /// A unicast to `out` in `vlan`: leaving `as_is`, or else retagged (`out_tagged`: with
    /// the VLAN's tag; otherwise untagged). `in_tagged`: the frame arrived with a tag.
    pub fn new(out: u16, vlan: u16, as_is: bool, in_tagged: bool, out_tagged: bool) -> Hit {
        let mut meta = vlan & 0x0fff;
        if as_is {
            meta |= AS_IS;
        }
        if in_tagged {
            meta |= IN_TAGGED;
        }
        if out_tagged {
            meta |= OUT_TAGGED;
        }
        Hit { out, meta }
    }

    /// The egress port.
    #[inline(always)]
    pub fn out(&self) -> u16 {
        self.out
    }

    /// The frame's VLAN on the bridge.
    #[inline(always)]
    pub fn vlan(&self) -> u16 {
        self.meta & 0x0fff
    }

    /// The frame leaves exactly as it came.
    #[inline(always)]
    pub fn as_is(&self) -> bool {
        self.meta & AS_IS != 0
    }

    /// It arrived with a tag.
    #[inline(always)]
    pub fn in_tagged(&self) -> bool {
        self.meta & IN_TAGGED != 0
    }

    /// It leaves with its VLAN's tag (when not as is).
    #[inline(always)]
    pub fn out_tagged(&self) -> bool {
        self.meta & OUT_TAGGED != 0
    }
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Entry {
    head: u64,
    tail: u64,
    /// The key's `port_inner` in the low half, the stamp it was decided under in the high.
    port_stamp: u64,
    hit: Hit,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set([Entry; WAYS]);

/// The stamp a burst's lookups are valid under: the MAC table's epoch, the snapshots the
/// worker has taken up, and the table's clock in seconds. Each only grows, so the sum grows
/// whenever any of them does.
#[inline(always)]
pub fn stamp(fdb_epoch: u64, view_changes: u64, now: u32) -> u64 {
    fdb_epoch
        .wrapping_add(view_changes)
        .wrapping_add(u64::from(now))
}

/// What the cache keeps of a decision the full path took: a unicast whose source learning
/// left the source on its port and fresh this second (known, refreshed or newly learned).
/// None for anything else, which must take the full path every time.
pub fn entry_for(v: &Verdict, p: &Prepared, view: &BridgeView) -> Option<Hit> {
    let Action::Unicast(out) = v.action else {
        return None;
    };
    if !matches!(
        v.learn,
        Some(Learn::Known | Learn::Refreshed | Learn::Learned)
    ) {
        return None;
    }
    let vlan = p.vlan()?;
    Some(Hit::new(
        out,
        vlan,
        v.as_is,
        p.form() != FORM_UNTAGGED,
        view.egress_tagged(vlan, out),
    ))
}

/// Where a key lives in the cache: computed once per frame, used to probe and to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot(u32);

/// One worker's cache. Not shared: plain loads and stores.
pub struct FlowCache {
    sets: Box<[Set]>,
    shift: u32,
    /// The MAC table's epoch, the worker's snapshot changes and the table's clock, summed
    /// when the current burst began.
    stamp: u64,
}

impl FlowCache {
    /// A cache of `sets` sets (rounded up to a power of two) of two entries each.
    pub fn new(sets: usize) -> FlowCache {
        let sets = sets.max(2).next_power_of_two();
        FlowCache {
            sets: vec![Set::default(); sets].into_boxed_slice(),
            shift: 64 - sets.trailing_zeros(),
            stamp: 0,
        }
    }

    /// Entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Starts a burst: entries stamped with another value than `stamp` no longer match.
    /// `stamp` must grow whenever a cached decision may have changed: the sum of the MAC
    /// table's epoch, the worker's snapshot changes and the table's clock (seconds) does.
    #[inline(always)]
    pub fn set_stamp(&mut self, stamp: u64) {
        // Entries keep the low 32 bits: forget them all before those could come round again
        // (the worker sets a stamp every burst; it grows by far less than 2^31 in between).
        if stamp >> 31 != self.stamp >> 31 {
            self.sets.fill(Set::default());
        }
        self.stamp = stamp;
    }

    /// The set `k` maps to.
    #[inline(always)]
    pub fn slot(&self, k: &FlowKey) -> Slot {
        Slot((k.hash() >> self.shift) as u32)
    }

    /// Hints the CPU to load the set of `slot`.
    #[inline(always)]
    pub fn prefetch(&self, slot: Slot) {
        if let Some(set) = self.sets.get(slot.0 as usize) {
            crate::dpdk::prefetch(set);
        }
    }

    #[inline(always)]
    fn port_stamp(&self, k: &FlowKey) -> u64 {
        u64::from(k.port_inner) | (self.stamp << 32)
    }

    /// The decision cached for `k` in the current burst's stamp, if any.
    #[inline(always)]
    pub fn get(&self, slot: Slot, k: &FlowKey) -> Option<Hit> {
        let set = self.sets.get(slot.0 as usize)?;
        let ps = self.port_stamp(k);
        let matches =
            |e: &Entry| ((e.head ^ k.head) | (e.tail ^ k.tail) | (e.port_stamp ^ ps)) == 0;
        if matches(&set.0[0]) {
            Some(set.0[0].hit)
        } else if matches(&set.0[1]) {
            Some(set.0[1].hit)
        } else {
            None
        }
    }

    /// The cached decision for a frame of key `k` (in `slot`), `pkt_len` bytes in `nb_segs`
    /// segments, received on a port of `mtu`: None when it is not cached or the frame is one
    /// the full path must see (chained, shorter than the Ethernet minimum, or too long).
    #[inline(always)]
    pub fn decided(
        &self,
        k: &FlowKey,
        slot: Slot,
        pkt_len: u32,
        nb_segs: u16,
        mtu: u32,
    ) -> Option<Hit> {
        if !Self::takes(k, pkt_len, nb_segs, mtu) {
            return None;
        }
        self.get(slot, k)
    }

    /// Whether a frame of key `k` (its probe), `pkt_len` bytes in `nb_segs` segments, is one
    /// the cache may decide on a bridge of `mtu` (see [`FlowCache::decided`]).
    #[inline(always)]
    pub fn fits(
        &self,
        pkt_len: u32,
        nb_segs: u16,
        mtu: u32,
        probe: &Option<(FlowKey, Slot)>,
    ) -> bool {
        probe
            .as_ref()
            .is_some_and(|(k, _)| Self::takes(k, pkt_len, nb_segs, mtu))
    }

    #[inline(always)]
    fn takes(k: &FlowKey, pkt_len: u32, nb_segs: u16, mtu: u32) -> bool {
        // Frames shorter than the Ethernet minimum are padded on the full path.
        nb_segs == 1 && pkt_len >= MIN_FRAME_LEN && pkt_len <= mtu + k.header_len()
    }

    /// Caches `hit` for `k`, decided (its source learned) in the current burst. The newest
    /// entry of a set goes first; the oldest is replaced.
    #[inline]
    pub fn insert(&mut self, slot: Slot, k: &FlowKey, hit: Hit) {
        let e = Entry {
            head: k.head,
            tail: k.tail,
            port_stamp: self.port_stamp(k),
            hit,
        };
        let Some(set) = self.sets.get_mut(slot.0 as usize) else {
            return;
        };
        // The same key again (it went stale) takes its own place; otherwise the first way's
        // entry moves to the second.
        let same =
            |x: &Entry| x.head == k.head && x.tail == k.tail && x.port_stamp as u32 == k.port_inner;
        if !same(&set.0[0]) {
            set.0[1] = set.0[0];
        }
        set.0[0] = e;
    }
}

/// Whether a worker uses its flow cache, chosen by measurement: cycles per frame with the cache
/// and without it. The cache pays when conversations repeat within its reach; with far more
/// conversations than entries (or than the CPU caches hold) its probes only add work. The
/// worker runs one mode for [`TRIAL_EVERY`] measurements, then tries the other for
/// [`TRIAL_LEN`] (after one more to warm the cache up, when it is the cache's turn), and keeps
/// the other only if it cost clearly less than the whole stint before it. Averaging over
/// several measurements matters: consecutive ones differ by 15% on a steady load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheGate {
    open: bool,
    /// The measurement in progress.
    packets: u64,
    cycles: u64,
    /// Of its frames, those the cache decided.
    hits: u64,
    /// The current stint (or trial), summed over its measurements.
    run_packets: u64,
    run_cycles: u64,
    /// Cycles per frame of the stint before the trial in progress.
    before_trial: f64,
    /// Measurements since the stint began.
    since_trial: u32,
    /// Measurements left in a trial of the other mode (0: none).
    trial_left: u32,
    /// The trial's first measurement only warms the cache up.
    warming: bool,
}

/// Frames a measurement needs before it says anything.
const MIN_PACKETS: u64 = 8192;
/// Measurements a stint of one mode lasts before the other is tried.
pub const TRIAL_EVERY: u32 = 256;
/// Measurements a trial lasts.
pub const TRIAL_LEN: u32 = 4;
/// The first trial comes after this many measurements (a worker may start in the worse mode).
const FIRST_TRIAL_AFTER: u32 = 16;
/// A trial's mode replaces the current one only below this share of its cost.
const SWITCH_MARGIN: f64 = 0.95;
/// With at least this share of its frames decided by the cache, a measurement keeps the cache
/// whatever it cost: a hit does less work than the full path by construction, and a trial
/// without the cache would only disturb a load whose cost depends on its own queueing (a
/// loop through VMs, where a slower moment backs frames up until their data is cold).
const HIT_SHARE_KEEPS: f64 = 0.95;

impl Default for CacheGate {
    fn default() -> Self {
        CacheGate {
            open: true,
            packets: 0,
            cycles: 0,
            hits: 0,
            run_packets: 0,
            run_cycles: 0,
            before_trial: 0.0,
            since_trial: TRIAL_EVERY - FIRST_TRIAL_AFTER,
            trial_left: 0,
            warming: false,
        }
    }
}

impl CacheGate {
    /// The cache is in use.
    #[inline(always)]
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Counts a burst: its frames, how many of them the cache decided, and the cycles they
    /// took.
    #[inline(always)]
    pub fn count(&mut self, packets: u64, hits: u64, cycles: u64) {
        self.packets += packets;
        self.hits += hits;
        self.cycles += cycles;
    }

    /// Ends a housekeeping interval: once enough frames were counted, adds the measurement to
    /// the stint or trial in progress and, at its end, picks the mode that goes on.
    pub fn review(&mut self) {
        if self.packets < MIN_PACKETS {
            return;
        }
        let (packets, cycles, hits) = (self.packets, self.cycles, self.hits);
        (self.packets, self.cycles, self.hits) = (0, 0, 0);
        if self.warming {
            self.warming = false;
            return;
        }
        if self.open && hits as f64 >= HIT_SHARE_KEEPS * packets as f64 {
            // The cache decides nearly everything: it stays, and a trial in progress ends.
            self.trial_left = 0;
            self.since_trial = 0;
            (self.run_packets, self.run_cycles) = (0, 0);
            return;
        }
        self.run_packets += packets;
        self.run_cycles += cycles;
        let cost = self.run_cycles as f64 / self.run_packets as f64;
        if self.trial_left > 0 {
            self.trial_left -= 1;
            if self.trial_left == 0 {
                if cost > self.before_trial * SWITCH_MARGIN {
                    self.open = !self.open;
                }
                self.since_trial = 0;
                (self.run_packets, self.run_cycles) = (0, 0);
            }
            return;
        }
        self.since_trial += 1;
        if self.since_trial >= TRIAL_EVERY {
            self.before_trial = cost;
            (self.run_packets, self.run_cycles) = (0, 0);
            self.open = !self.open;
            self.trial_left = TRIAL_LEN;
            self.warming = self.open;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: u8, src: u8, tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, dst, 0x02, 0, 0, 0, 0, src];
        if let Some(tci) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0xaa);
        f
    }

    #[test]
    fn keys_tell_apart_what_the_decision_depends_on() {
        let k = |f: &[u8], p| FlowKey::of(f, p).unwrap();
        let base = k(&frame(1, 2, None), 0);
        assert_eq!(base.header_len(), 14);
        assert_ne!(base, k(&frame(1, 2, None), 1), "ingress port");
        assert_ne!(base, k(&frame(3, 2, None), 0), "destination");
        assert_ne!(base, k(&frame(1, 3, None), 0), "source");
        let tagged = k(&frame(1, 2, Some(10)), 0);
        assert_eq!(tagged.header_len(), 18);
        assert_ne!(base, tagged);
        assert_ne!(tagged, k(&frame(1, 2, Some(11)), 0), "VID");
        assert_ne!(tagged, k(&frame(1, 2, Some(0x200a)), 0), "priority");
        // The payload of an untagged frame is not part of its key.
        let mut other = frame(1, 2, None);
        other[14] = 0x45;
        other[15] = 0x10;
        assert_eq!(base, k(&other, 0));
    }

    #[test]
    fn short_and_double_tagged_frames_are_not_cached() {
        assert_eq!(FlowKey::of(&frame(1, 2, None)[..15], 0), None);
        assert_eq!(FlowKey::of(&frame(1, 2, Some(10))[..17], 0), None);
        let mut qinq = frame(1, 2, Some(10));
        qinq[16..18].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        assert_eq!(FlowKey::of(&qinq, 0), None);
    }

    #[test]
    fn an_empty_cache_matches_nothing_not_even_an_all_zero_header() {
        let c = FlowCache::new(16);
        let k = FlowKey::of(&[0u8; 60], 0).unwrap();
        assert_eq!(c.get(c.slot(&k), &k), None);
    }

    #[test]
    fn entries_live_for_their_second_and_their_stamp() {
        let mut c = FlowCache::new(16);
        let k = FlowKey::of(&frame(1, 2, None), 0).unwrap();
        let s = c.slot(&k);
        let hit = Hit::new(3, 0, true, false, false);
        c.set_stamp(5);
        c.insert(s, &k, hit);
        assert_eq!(c.get(s, &k), Some(hit));
        c.set_stamp(6);
        assert_eq!(
            c.get(s, &k),
            None,
            "a table change, a new snapshot or the next second"
        );
        c.insert(s, &k, hit);
        assert_eq!(c.get(s, &k), Some(hit));
        // Crossing 2^31 clears everything (stamps are kept in 32 bits).
        c.set_stamp((1 << 32) + 6);
        assert_eq!(c.get(s, &k), None);
    }

    #[test]
    fn a_set_keeps_its_two_newest_keys() {
        let mut c = FlowCache::new(1);
        assert_eq!(c.capacity(), 4, "two sets at least");
        let keys: Vec<FlowKey> = (0..8)
            .map(|i| FlowKey::of(&frame(i, 9, None), 0).unwrap())
            .collect();
        // Eight keys in two sets: one set holds at least four of them.
        let s0 = (0..2)
            .map(Slot)
            .max_by_key(|s| keys.iter().filter(|k| c.slot(k) == *s).count())
            .unwrap();
        let same: Vec<&FlowKey> = keys.iter().filter(|k| c.slot(k) == s0).collect();
        assert!(same.len() >= 3);
        for (i, k) in same.iter().take(3).enumerate() {
            c.insert(s0, k, Hit::new(i as u16, 0, true, false, false));
        }
        assert_eq!(c.get(s0, same[0]), None, "the oldest went");
        assert_eq!(c.get(s0, same[1]).map(|h| h.out()), Some(1));
        assert_eq!(c.get(s0, same[2]).map(|h| h.out()), Some(2));
        // Re-inserting the newest does not push out the other.
        c.insert(s0, same[2], Hit::new(2, 0, true, false, false));
        assert_eq!(c.get(s0, same[1]).map(|h| h.out()), Some(1));
    }

    /// Runs the gate for `rounds` measurements of frames costing `with` or `without` cycles
    /// (alternately 15% above and below, as a steady load measures); returns the share of
    /// measurements (trials included) run with the cache.
    fn share_open(g: &mut CacheGate, rounds: u32, with: u64, without: u64) -> f64 {
        let mut open = 0;
        for r in 0..rounds {
            open += u32::from(g.is_open());
            let cost = if g.is_open() { with } else { without };
            let cost = if r % 2 == 0 {
                cost * 115 / 100
            } else {
                cost * 85 / 100
            };
            g.count(MIN_PACKETS, 0, MIN_PACKETS * cost);
            g.review();
        }
        f64::from(open) / f64::from(rounds)
    }

    #[test]
    fn the_gate_runs_the_cheaper_mode_and_keeps_trying_the_other() {
        let mut g = CacheGate::default();
        assert!(g.is_open());
        // Too few frames to measure: nothing changes.
        g.count(100, 0, 100_000);
        g.review();
        assert!(g.is_open());
        // The cache pays: in use but for the trials without it.
        let share = share_open(&mut g, 20 * TRIAL_EVERY, 50, 75);
        assert!(share > 0.98 && share < 1.0, "{share}");
        assert!(g.is_open());
        // The traffic changes and the cache stops paying (by 10%): out of use after the next
        // trial, and tried again now and then.
        let share = share_open(&mut g, 20 * TRIAL_EVERY, 165, 150);
        assert!(share > 0.0 && share < 0.1, "{share}");
        assert!(!g.is_open());
        // Within the margin, the mode in use stays.
        share_open(&mut g, 4 * TRIAL_EVERY, 148, 150);
        assert!(!g.is_open());
        // And back when it pays again.
        share_open(&mut g, TRIAL_EVERY + TRIAL_LEN + 2, 50, 75);
        assert!(g.is_open());
    }

    /// When the cache decides nearly every frame it stays, whatever the measurements say (a
    /// loop through VMs costs what its queues make it cost), and a trial of it that hits
    /// brings it back.
    #[test]
    fn a_cache_that_decides_nearly_everything_stays() {
        let mut g = CacheGate::default();
        for r in 0..20 * TRIAL_EVERY {
            // Costs that would close the gate: the cache measures 20% dearer.
            let cost = if g.is_open() { 180 } else { 150 };
            let hits = if g.is_open() { MIN_PACKETS } else { 0 };
            assert!(g.is_open(), "closed at measurement {r}");
            g.count(MIN_PACKETS, hits, MIN_PACKETS * cost);
            g.review();
        }
        // A closed gate (the cache did not pay before) opens for good after a trial that hits.
        let mut g = CacheGate::default();
        share_open(&mut g, FIRST_TRIAL_AFTER + TRIAL_LEN + 1, 200, 150);
        assert!(!g.is_open());
        let mut opened_at = None;
        for r in 0..2 * TRIAL_EVERY {
            let hits = if g.is_open() { MIN_PACKETS } else { 0 };
            g.count(MIN_PACKETS, hits, MIN_PACKETS * 150);
            g.review();
            if g.is_open() && opened_at.is_none() {
                opened_at = Some(r);
            }
        }
        assert!(opened_at.is_some() && g.is_open());
    }

    #[test]
    fn a_worker_starting_in_the_worse_mode_leaves_it_soon() {
        let mut g = CacheGate::default();
        let share = share_open(&mut g, FIRST_TRIAL_AFTER + TRIAL_LEN + 1, 200, 150);
        assert!(!g.is_open());
        assert!(share > 0.5, "{share}");
    }

    /// A worker's use of the cache, replayed against the full decision: frames from a few
    /// hosts, tagged and not, too long or not, while other workers move addresses, the clock
    /// ticks, entries age out or are flushed, static entries come and go and the bridge's
    /// snapshot changes. Every hit must be exactly what the full path decides then (a unicast
    /// to the same port, tagged the same way, with nothing left to learn).
    #[test]
    fn a_hit_decides_what_the_full_path_would() {
        use crate::fdb::Fdb;
        use crate::forward::{
            decide, decide_in, prepare_in, BridgeMode, PortPolicy, Tier, Unlimited, VlanMode,
        };
        use crate::packet::MacAddr;

        let trunk = |trunks: &[u16], native| PortPolicy {
            vlan: VlanMode::Trunk {
                trunks: trunks.to_vec(),
                native,
            },
            ..PortPolicy::default()
        };
        let access = |vlan| PortPolicy {
            vlan: VlanMode::Access { vlan },
            ..PortPolicy::default()
        };
        let views = [
            BridgeView::plain(&[0, 1, 2, 3], 1500),
            BridgeView::new(
                1500,
                BridgeMode::Veb,
                &[
                    (0, access(10)),
                    (1, access(10)),
                    (2, trunk(&[10, 20], None)),
                    (3, trunk(&[10, 20], Some(20))),
                ],
            ),
        ];
        let mut next = {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            }
        };
        let host = |i: u64| [0x02, 0, 0, 0, 0, (i % 5) as u8];
        let fdb = Fdb::new(64);
        // Fewer entries than conversations: entries collide and are replaced too.
        let mut flows = FlowCache::new(64);
        let (mut view, mut view_changes, mut now) = (views[1].clone(), 0u64, 0u32);
        let (mut hits, mut inserted) = (0u32, 0u32);
        for _ in 0..300_000 {
            let r = next();
            match r % 1000 {
                // Another worker sees a host on some port (perhaps a move).
                0..=4 => {
                    let vlan = [0, 10, 20][(r >> 8) as usize % 3];
                    let mac = MacAddr(host(r >> 16));
                    fdb.learn(vlan, mac, (r >> 24) as u16 % 4, now);
                }
                5 => {
                    now += 1;
                    fdb.set_now(now);
                }
                6 => {
                    fdb.age(now, 1);
                }
                7 => {
                    fdb.flush(Some((r >> 8) as u16 % 4));
                }
                8 => {
                    let mac = MacAddr(host(r >> 16));
                    if r & 0x100 != 0 {
                        fdb.add_static(10, mac, (r >> 24) as u16 % 4);
                    } else {
                        fdb.remove(10, mac);
                    }
                }
                9 => {
                    let base = &views[(r >> 8) as usize % 2];
                    view = base.with_port_enabled((r >> 16) as u16 % 4, r & 0x1000_0000 == 0);
                    view_changes += 1;
                }
                _ => {
                    let (dst, src) = match r >> 8 & 15 {
                        0 => ([0xff; 6], host(r >> 16)),
                        // Sources that are no station: never learned, so never cached.
                        1 => (host(r >> 16), [0; 6]),
                        _ => (host(r >> 16), host(r >> 24)),
                    };
                    let mut f = dst.to_vec();
                    f.extend_from_slice(&src);
                    match r >> 32 & 3 {
                        0 => f.extend_from_slice(&[0x81, 0x00, 0x00, 10]),
                        1 => f.extend_from_slice(&[0x81, 0x00, 0x20, 20]),
                        2 => f.extend_from_slice(&[0x81, 0x00, 0x60, 0]),
                        _ => {}
                    }
                    f.extend_from_slice(&[0x08, 0x00]);
                    f.resize(64, 0);
                    // A host sends from its own port, but now and then from another (a move).
                    let ingress = if r >> 40 & 255 == 0 {
                        (r >> 48) as u16 % 4
                    } else {
                        u16::from(src[5]) % 4
                    };
                    // Now and then a length at the edges of the MTU (1500), tagged or not.
                    let len = match r >> 56 & 63 {
                        0 => 1514,
                        1 => 1515,
                        2 => 1518,
                        3 => 1519,
                        4 => 1600,
                        _ => 64,
                    };
                    let ctx = view.ingress_ctx(ingress);
                    let tier = view.tier();
                    let caching = tier != Tier::Full && ctx.enabled();
                    flows.set_stamp(stamp(fdb.epoch(), view_changes, now));
                    let key = FlowKey::of(&f, ingress).map(|k| (k, flows.slot(&k)));
                    let hit = key
                        .as_ref()
                        .filter(|_| caching)
                        .and_then(|(k, slot)| flows.decided(k, *slot, len, 1, view.mtu));
                    if let Some(h) = hit {
                        let v = decide(ingress, &f, len, &view, &fdb, &mut Unlimited, now);
                        let p = prepare_in(Tier::Full, &f, &ctx, &view, &fdb);
                        assert_eq!(
                            v.action,
                            Action::Unicast(h.out()),
                            "{f:02x?} from {ingress}"
                        );
                        assert_eq!(v.learn, Some(Learn::Known), "{f:02x?} from {ingress}");
                        assert_eq!(v.as_is, h.as_is());
                        assert_eq!(p.vlan(), Some(h.vlan()));
                        assert_eq!(p.form() != FORM_UNTAGGED, h.in_tagged());
                        assert_eq!(view.egress_tagged(h.vlan(), h.out()), h.out_tagged());
                        hits += 1;
                        continue;
                    }
                    let p = prepare_in(tier, &f, &ctx, &view, &fdb);
                    let v = decide_in(
                        tier,
                        &ctx,
                        &p,
                        len,
                        &view,
                        &fdb,
                        &mut Unlimited,
                        now,
                        &mut crate::fdb::Probes::default(),
                    );
                    if let (true, Some((k, slot)), Some(hit)) =
                        (caching, &key, entry_for(&v, &p, &view))
                    {
                        flows.insert(*slot, k, hit);
                        inserted += 1;
                    }
                }
            }
        }
        // The cache was used, and often: this test checks something.
        assert!(
            hits > 20_000 && inserted > 5_000,
            "{hits} hits, {inserted} inserts"
        );
    }

    #[test]
    fn hits_carry_the_tagging() {
        let h = Hit::new(7, 4094, false, true, false);
        assert_eq!((h.out(), h.vlan()), (7, 4094));
        assert!(!h.as_is() && h.in_tagged() && !h.out_tagged());
        let h = Hit::new(1, 10, false, false, true);
        assert!(!h.as_is() && !h.in_tagged() && h.out_tagged());
    }
}
