//! The forwarding database: a fixed-capacity, lock-free MAC table keyed by (VLAN, MAC).
//!
//! Every worker looks up every packet with plain loads: no lock, no atomic read-modify-write,
//! no allocation. Learning claims a slot with a compare-and-swap from any worker; aging and
//! flushes run on the control thread with the same claim protocol.
//!
//! Layout: buckets of 8 slots, 128 bytes, each cache line four slots of a key word beside its
//! value word. A key lives in one of two buckets chosen by its (seeded) hash; inserts fill the
//! first line of its first bucket, then the other bucket's first line, then the emptier second
//! line (two-choice hashing keeps buckets from overflowing long before the table is full). So a
//! lookup of a known key reads one line, the one the worker prefetched, in all but a table
//! near capacity. A slot is a key word and a value word:
//!
//! * key: `LIVE | BUSY | STATIC | vlan (12 bits) | mac (48 bits)`, 0 when empty. A slot is
//!   claimed by CAS 0 -> BUSY, written, then published LIVE; deletion is the reverse
//!   (LIVE -> BUSY, value cleared, key zeroed). Only the holder of BUSY writes the key.
//! * value: `timestamp (32) | generation (16) | port (16)`. Updated by CAS while LIVE (refresh,
//!   move); the generation changes at every insert into the slot, so a stale CAS from a worker
//!   that saw an earlier tenant of the slot fails instead of writing into the new one.
//!
//! A reader loads the key, the value, then the key and the value again: if either changed, the
//! value may belong to another tenant and the read counts as a miss. Readers never see a torn entry.
#![forbid(unsafe_code)]

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::packet::MacAddr;

const LIVE: u64 = 1 << 63;
const BUSY: u64 = 1 << 62;
const STATIC: u64 = 1 << 61;
const KEY_MASK: u64 = (1 << 60) - 1;
const SLOTS: usize = 8;

/// VLAN ids are 12 bits.
pub const VLAN_MASK: u16 = 0x0fff;

/// What [`Fdb::learn`] did with a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port and fresh: nothing written.
    Known,
    /// Known on this port; its timestamp was refreshed.
    Refreshed,
    /// A new entry.
    Learned,
    /// The address moved here from another port.
    Moved {
        /// The port it was on.
        from: u16,
    },
    /// A static entry names another port: the static entry stands.
    StaticElsewhere {
        /// The port of the static entry.
        port: u16,
    },
    /// No room: the table is at capacity (or both buckets are full); nothing learned.
    Full,
    /// Another thread was inserting or removing the same key at that instant; nothing learned
    /// (the next frame learns it).
    Contended,
    /// The port already holds its limit of addresses: a new one is not learned (or not moved
    /// there).
    Limited,
}

/// Ports whose address counts are kept (port ids at or above it are not counted or limited).
pub const COUNTED_PORTS: usize = 64;

/// A (VLAN, MAC) key with its two candidate buckets, computed once per frame so that the line
/// where the key almost always sits (the first of its first bucket) can be prefetched a few
/// frames before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdbKey {
    key: u64,
    buckets: [u32; 2],
}

/// What a worker's lookups cost the table, counted as it makes them (plain adds on the worker's
/// own stack; the worker publishes them with its counters once per burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probes {
    /// Lookups made: a source learned or refreshed, a destination looked up.
    pub lookups: u64,
    /// Cache lines those lookups read: one for a key in the first line of its first bucket (the
    /// line prefetched), two to four for a key elsewhere, four for a miss. Above `lookups` as
    /// the table fills, and for every unknown address.
    pub lines: u64,
}

/// One entry, as the control thread reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// VLAN id (0 for a VLAN-unaware bridge).
    pub vlan: u16,
    /// MAC address.
    pub mac: MacAddr,
    /// Port the address lives on.
    pub port: u16,
    /// When it was last seen, on the table's clock (seconds).
    pub last_seen: u32,
    /// Configured by the operator: never aged, never moved by learning.
    pub is_static: bool,
}

/// Slots in one cache line: a bucket is two lines.
const LINE_SLOTS: usize = 4;

/// A key word and its value word, side by side so that one cache line holds both.
#[repr(C)]
#[derive(Default)]
struct Slot {
    key: AtomicU64,
    val: AtomicU64,
}

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    slots: [Slot; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Slot>() * LINE_SLOTS == 64);

#[inline(always)]
fn make_val(port: u16, gen: u16, ts: u32) -> u64 {
    (u64::from(ts) << 32) | (u64::from(gen) << 16) | u64::from(port)
}

#[inline(always)]
fn val_port(v: u64) -> u16 {
    v as u16
}

#[inline(always)]
fn val_gen(v: u64) -> u16 {
    (v >> 16) as u16
}

#[inline(always)]
fn val_ts(v: u64) -> u32 {
    (v >> 32) as u32
}

/// The key folded through one 64 x 64 -> 128-bit multiply with the table's seed: the low and
/// high halves of the product XORed, so every key bit reaches the low bits the buckets come
/// from. One multiply (splitmix64's finaliser took two and three shift-XORs) on the path of
/// every lookup; the random seed means no one can pick addresses that crowd the same bucket
/// on every switch (a MAC flood aimed at one bucket fills it, not the table).
#[inline(always)]
fn hash(key: u64, seed: u64) -> u64 {
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let p = u128::from(key ^ seed) * u128::from(MUL);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A counter on a cache line of its own: read by every worker once per burst, written rarely.
#[repr(align(64))]
#[derive(Default)]
struct Epoch(AtomicU64);

/// The MAC table. Shared by reference between the workers and the control thread.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    mask: usize,
    capacity: usize,
    /// Random per table: keys land in different buckets on every switch and every start.
    seed: u64,
    entries: AtomicUsize,
    now: AtomicU32,
    /// Entries per port: written only when an entry is added, moved or removed.
    per_port: Box<[AtomicU32]>,
    /// Entries moved to another port, removed, or made static: see [`Fdb::epoch`].
    epoch: Epoch,
}

impl Fdb {
    /// A table that holds up to `capacity` entries. Twice as many slots are allocated, so that
    /// buckets do not overflow before the table is full.
    pub fn new(capacity: usize) -> Fdb {
        let seed = std::collections::hash_map::RandomState::new().hash_one(capacity);
        Fdb::with_seed(capacity, seed)
    }

    /// [`Fdb::new`] with the hash seed given: two tables with the same seed put every key in
    /// the same buckets (tests compare them).
    pub(crate) fn with_seed(capacity: usize, seed: u64) -> Fdb {
        let capacity = capacity.max(1);
        let nbuckets = (capacity * 2).div_ceil(SLOTS).next_power_of_two().max(2);
        let mut buckets: Vec<Bucket> = Vec::with_capacity(nbuckets);
        // Before the first write: pages the kernel has already faulted in stay small.
        crate::dpdk::advise_hugepages(buckets.spare_capacity_mut());
        buckets.extend((0..nbuckets).map(|_| Bucket::default()));
        let buckets = buckets.into_boxed_slice();
        Fdb {
            buckets,
            mask: nbuckets - 1,
            capacity,
            seed,
            entries: AtomicUsize::new(0),
            now: AtomicU32::new(0),
            per_port: (0..COUNTED_PORTS).map(|_| AtomicU32::new(0)).collect(),
            epoch: Epoch::default(),
        }
    }

    /// Grows whenever an entry changes port, is removed, or is made static (not when one is
    /// added or refreshed): a lookup answered while it stood still is still the answer. A
    /// worker that reads it before its lookups and finds it unchanged later may reuse them.
    #[inline(always)]
    pub fn epoch(&self) -> u64 {
        self.epoch.0.load(Ordering::Acquire)
    }

    /// After a change that may turn a lookup's answer.
    #[inline]
    fn changed(&self) {
        self.epoch.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Entries (dynamic and static) on `port`.
    #[inline]
    pub fn port_len(&self, port: u16) -> u32 {
        self.per_port
            .get(usize::from(port))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    #[inline]
    fn count(&self, port: u16, up: bool) {
        if let Some(c) = self.per_port.get(usize::from(port)) {
            if up {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries in the table now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of table memory.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// The table's clock, in seconds. The control thread advances it; workers read it once per
    /// burst. Tests set it by hand to make aging deterministic.
    #[inline(always)]
    pub fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    /// Sets the table's clock.
    pub fn set_now(&self, secs: u32) {
        self.now.store(secs, Ordering::Relaxed);
    }

    /// Hashes `(vlan, mac)` to its key and buckets.
    #[inline(always)]
    pub fn key(&self, vlan: u16, mac: MacAddr) -> FdbKey {
        self.key_raw(vlan, mac.to_u64())
    }

    /// [`Fdb::key`] for a MAC held in the low 48 bits of an integer.
    #[inline(always)]
    pub fn key_raw(&self, vlan: u16, mac: u64) -> FdbKey {
        let key = (u64::from(vlan & VLAN_MASK) << 48) | (mac & 0xffff_ffff_ffff);
        let h = hash(key, self.seed);
        let b1 = (h as usize) & self.mask;
        let mut b2 = ((h >> 32) as usize) & self.mask;
        if b2 == b1 {
            b2 = b1 ^ 1;
        }
        // Bucket counts are below 2^32: the table is at most 2^25 slots.
        FdbKey {
            key,
            buckets: [b1 as u32, b2 as u32],
        }
    }

    /// Hints the CPU to load the key's first line (the first four slots of its first bucket,
    /// where inserts put it while there is room): one cache line, keys and values.
    #[inline(always)]
    pub fn prefetch(&self, k: &FdbKey) {
        crate::dpdk::prefetch(&self.buckets[k.buckets[0] as usize].slots[0]);
    }

    #[inline(always)]
    fn bucket_pair(k: &FdbKey) -> [usize; 2] {
        [k.buckets[0] as usize, k.buckets[1] as usize]
    }

    /// Finds a LIVE slot holding `key`: (bucket, slot, key word, value word), read consistently.
    #[inline(always)]
    fn find(&self, k: &FdbKey) -> Option<(usize, usize, u64, u64)> {
        self.find_probed(k, &mut Probes::default())
    }

    /// [`Fdb::find`], counting the lookup and the cache lines it reads into `probes`.
    #[inline(always)]
    fn find_probed(&self, k: &FdbKey, probes: &mut Probes) -> Option<(usize, usize, u64, u64)> {
        // Lines in the order inserts fill them, so a key is almost always in the first (the
        // one prefetched); the early exit is then well predicted (a branch-free compare of
        // all eight slots of a bucket measured a quarter slower).
        let want = LIVE | k.key;
        probes.lookups += 1;
        for (b, first) in Self::lines(k) {
            probes.lines += 1;
            let slots = &self.buckets[b].slots;
            for (i, slot) in slots.iter().enumerate().skip(first).take(LINE_SLOTS) {
                let kw = slot.key.load(Ordering::Acquire);
                if kw & (LIVE | BUSY | KEY_MASK) == want {
                    let v = slot.val.load(Ordering::Acquire);
                    // The key unchanged and the value unchanged after it: the pair belongs
                    // together. (The key alone could have been removed and re-learned in
                    // between; the value's generation moves at every remove and insert.)
                    if slot.key.load(Ordering::Acquire) == kw
                        && slot.val.load(Ordering::Acquire) == v
                    {
                        return Some((b, i, kw, v));
                    }
                    return None; // removed or replaced under us: a miss
                }
            }
        }
        None
    }

    /// A key's four lines, (bucket, first slot), in the order inserts fill them: the first
    /// line of each bucket, then the second lines.
    #[inline(always)]
    fn lines(k: &FdbKey) -> [(usize, usize); 4] {
        let [b1, b2] = Self::bucket_pair(k);
        [(b1, 0), (b2, 0), (b1, LINE_SLOTS), (b2, LINE_SLOTS)]
    }

    /// The port `(vlan, mac)` lives on, if known.
    #[inline(always)]
    pub fn lookup(&self, vlan: u16, mac: MacAddr) -> Option<u16> {
        self.lookup_key(&self.key(vlan, mac), &mut Probes::default())
    }

    /// [`Fdb::lookup`] with the key already hashed, counting what it read into `probes`.
    #[inline(always)]
    pub fn lookup_key(&self, k: &FdbKey, probes: &mut Probes) -> Option<u16> {
        self.find_probed(k, probes).map(|(_, _, _, v)| val_port(v))
    }

    /// Records that `mac` was seen as a source on `port` in `vlan` at time `now`.
    /// Writes only when something changed: a new address, a move, or a timestamp gone stale.
    #[inline]
    pub fn learn(&self, vlan: u16, mac: MacAddr, port: u16, now: u32) -> Learn {
        self.learn_key(
            &self.key(vlan, mac),
            port,
            now,
            u32::MAX,
            &mut Probes::default(),
        )
    }

    /// [`Fdb::learn`] with the key already hashed, for a port that may hold at most `limit`
    /// addresses (a new address, or one moving in from another port, is not taken once the
    /// port holds that many), counting the lookup it makes into `probes` (an insert's search
    /// for a free slot is not counted: it is rare, and not a lookup).
    #[inline(always)]
    pub fn learn_key(
        &self,
        fk: &FdbKey,
        port: u16,
        now: u32,
        limit: u32,
        probes: &mut Probes,
    ) -> Learn {
        if let Some((b, i, k, v)) = self.find_probed(fk, probes) {
            let old = val_port(v);
            if k & STATIC != 0 {
                return if old == port {
                    Learn::Known
                } else {
                    Learn::StaticElsewhere { port: old }
                };
            }
            if old == port && val_ts(v) == now {
                return Learn::Known;
            }
            if old != port && self.port_len(port) >= limit {
                return Learn::Limited;
            }
            let new = make_val(port, val_gen(v), now);
            return match self.buckets[b].slots[i].val.compare_exchange(
                v,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if old == port => Learn::Refreshed,
                Ok(_) => {
                    self.changed();
                    self.count(old, false);
                    self.count(port, true);
                    Learn::Moved { from: old }
                }
                Err(_) => Learn::Contended,
            };
        }
        if self.port_len(port) >= limit {
            return Learn::Limited;
        }
        self.insert(fk, port, now, 0)
    }

    fn insert(&self, fk: &FdbKey, port: u16, now: u32, flags: u64) -> Learn {
        let key = fk.key;
        // A plain load first: a full table under a flood of new sources costs no shared write.
        if self.entries.load(Ordering::Relaxed) >= self.capacity {
            return Learn::Full;
        }
        if self.entries.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.entries.fetch_sub(1, Ordering::AcqRel);
            return Learn::Full;
        }
        let pair = Self::bucket_pair(fk);
        // The first line of the first bucket, which lookups prefetch, while it has room; then
        // the other bucket's first line; then the emptier of the second lines, which keeps
        // buckets from overflowing until the table is full (two-choice hashing).
        let free_second = |b: usize| {
            self.buckets[b].slots[LINE_SLOTS..]
                .iter()
                .filter(|s| s.key.load(Ordering::Relaxed) == 0)
                .count()
        };
        let [b1, b2] = pair;
        let seconds = if free_second(b1) >= free_second(b2) {
            [(b1, LINE_SLOTS), (b2, LINE_SLOTS)]
        } else {
            [(b2, LINE_SLOTS), (b1, LINE_SLOTS)]
        };
        for (b, first) in [(b1, 0), (b2, 0), seconds[0], seconds[1]] {
            let bucket = &self.buckets[b];
            for i in first..first + LINE_SLOTS {
                let slot = &bucket.slots[i];
                if slot.key.load(Ordering::Relaxed) != 0 {
                    continue;
                }
                if slot
                    .key
                    .compare_exchange(0, BUSY | flags | key, Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                // Holding BUSY: no one else writes this slot. If another thread holds or published
                // the same key anywhere (it claimed before our claim), step back; of two racing
                // claims at least the later one sees the earlier, so no key is ever held twice.
                if self.other_holder(pair, key, (b, i)) {
                    // The value was never written: giving the key back empties the slot.
                    slot.key.store(0, Ordering::Release);
                    self.entries.fetch_sub(1, Ordering::AcqRel);
                    return Learn::Contended;
                }
                let gen = val_gen(slot.val.load(Ordering::Relaxed)).wrapping_add(1);
                slot.val.store(make_val(port, gen, now), Ordering::Release);
                slot.key.store(LIVE | flags | key, Ordering::Release);
                self.count(port, true);
                return Learn::Learned;
            }
        }
        self.entries.fetch_sub(1, Ordering::AcqRel);
        Learn::Full
    }

    fn other_holder(&self, pair: [usize; 2], key: u64, mine: (usize, usize)) -> bool {
        pair.iter().any(|&b| {
            (0..SLOTS).any(|i| {
                let k = self.buckets[b].slots[i].key.load(Ordering::SeqCst);
                (b, i) != mine && k & (LIVE | BUSY) != 0 && k & KEY_MASK == key
            })
        })
    }

    /// Removes the entry in slot (b, i) if it still holds key word `k` and `still` agrees.
    /// Returns true when it was removed.
    fn remove_slot(&self, b: usize, i: usize, k: u64, still: impl Fn(u64) -> bool) -> bool {
        let bucket = &self.buckets[b];
        if bucket.slots[i]
            .key
            .compare_exchange(k, (k & !LIVE) | BUSY, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // A worker may have refreshed or moved the entry before our claim, or may do so until
        // the value changes below: check, then clear the value only if it is still the one
        // checked (with a new generation, so no stale CAS of a worker lands on the next tenant).
        let v = bucket.slots[i].val.load(Ordering::Acquire);
        let dead = make_val(0, val_gen(v).wrapping_add(1), 0);
        if !still(v)
            || bucket.slots[i]
                .val
                .compare_exchange(v, dead, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            bucket.slots[i].key.store(k, Ordering::Release);
            return false;
        }
        bucket.slots[i].key.store(0, Ordering::Release);
        self.changed();
        self.entries.fetch_sub(1, Ordering::AcqRel);
        self.count(val_port(v), false);
        true
    }

    /// Removes every entry, not static, that `pred` selects. Control thread only.
    fn remove_where(&self, pred: impl Fn(&Entry) -> bool, also_static: bool) -> usize {
        self.remove_where_in(0..self.buckets.len(), pred, also_static)
    }

    /// [`Fdb::remove_where`] over buckets `range` (clamped to the table).
    fn remove_where_in(
        &self,
        range: std::ops::Range<usize>,
        pred: impl Fn(&Entry) -> bool,
        also_static: bool,
    ) -> usize {
        let mut n = 0;
        let end = range.end.min(self.buckets.len());
        let start = range.start.min(end);
        for (b, bucket) in self.buckets[start..end]
            .iter()
            .enumerate()
            .map(|(i, bk)| (start + i, bk))
        {
            for i in 0..SLOTS {
                let k = bucket.slots[i].key.load(Ordering::Acquire);
                if k & LIVE == 0 || (k & STATIC != 0 && !also_static) {
                    continue;
                }
                let v = bucket.slots[i].val.load(Ordering::Acquire);
                if pred(&entry_of(k, v)) && self.remove_slot(b, i, k, |v| pred(&entry_of(k, v))) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Removes dynamic entries not seen for more than `max_age` seconds at time `now`.
    /// Returns how many were removed.
    pub fn age(&self, now: u32, max_age: u32) -> usize {
        self.age_buckets(now, max_age, 0..self.buckets.len())
    }

    /// [`Fdb::age`] over buckets `range` only (clamped to [`Fdb::bucket_count`]): the control
    /// thread spreads one pass over many ticks, so that no tick holds its CPU for the whole
    /// table (a 256K-entry table is 8 MiB to read).
    pub fn age_buckets(&self, now: u32, max_age: u32, range: std::ops::Range<usize>) -> usize {
        self.remove_where_in(range, |e| now.wrapping_sub(e.last_seen) > max_age, false)
    }

    /// Buckets in the table (each holds a few entries).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Removes every dynamic entry on `port` (a port that went away), or all dynamic entries.
    pub fn flush(&self, port: Option<u16>) -> usize {
        self.remove_where(|e| port.is_none_or(|p| e.port == p), false)
    }

    /// Removes every entry on `port`, static ones too (the port is going away).
    pub fn flush_port(&self, port: u16) -> usize {
        self.remove_where(|e| e.port == port, true)
    }

    /// Adds (or replaces) a static entry: never aged, never moved by learning. An address
    /// already learned is made static where it stands (no window in which a worker could learn
    /// it again); the answer says whether it was new (`Learned`), moved (`Moved`), or already
    /// there (`Known`). Control thread only.
    pub fn add_static(&self, vlan: u16, mac: MacAddr, port: u16) -> Learn {
        let fk = self.key(vlan, mac);
        for _ in 0..1000 {
            if let Some((b, i, k, _)) = self.find(&fk) {
                let bucket = &self.buckets[b];
                // The flag first: a worker that reads the key from now on never writes the
                // value; one that read it before fails its value CAS against ours below.
                if k & STATIC == 0
                    && bucket.slots[i]
                        .key
                        .compare_exchange(k, k | STATIC, Ordering::SeqCst, Ordering::Relaxed)
                        .is_err()
                {
                    continue;
                }
                let v = bucket.slots[i].val.load(Ordering::Acquire);
                let old = val_port(v);
                // A new generation: the value always changes, so a worker's CAS against the value
                // it read before the flag fails even when port and time are the same.
                let new = make_val(port, val_gen(v).wrapping_add(1), self.now());
                if bucket.slots[i]
                    .val
                    .compare_exchange(v, new, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                self.changed();
                if old == port {
                    return Learn::Known;
                }
                self.count(old, false);
                self.count(port, true);
                return Learn::Moved { from: old };
            }
            match self.insert(&fk, port, self.now(), STATIC) {
                Learn::Contended => continue,
                other => return other,
            }
        }
        Learn::Contended
    }

    /// Removes the static entry for `(vlan, mac)` if it is on `port`. Returns true if it was.
    pub fn remove_static_on(&self, vlan: u16, mac: MacAddr, port: u16) -> bool {
        self.remove_keyed(vlan, mac, |k, v| k & STATIC != 0 && val_port(v) == port)
    }

    /// Removes the entry for `(vlan, mac)`, static or not. Returns true if there was one.
    pub fn remove(&self, vlan: u16, mac: MacAddr) -> bool {
        self.remove_keyed(vlan, mac, |_, _| true)
    }

    /// Removes the entry for `(vlan, mac)` if `pred(key word, value)` agrees: found by its
    /// hash, not by a scan. Control thread only.
    fn remove_keyed(&self, vlan: u16, mac: MacAddr, pred: impl Fn(u64, u64) -> bool) -> bool {
        let fk = self.key(vlan, mac);
        // A worker's refresh or move can change the value between the find and the claim:
        // look again then.
        for _ in 0..1000 {
            let Some((b, i, k, v)) = self.find(&fk) else {
                return false;
            };
            if !pred(k, v) {
                return false;
            }
            if self.remove_slot(b, i, k, |now| pred(k, now)) {
                return true;
            }
        }
        false
    }

    /// Calls `f` for every live entry (a consistent read of each, not a snapshot of the table).
    pub fn for_each(&self, mut f: impl FnMut(Entry)) {
        for bucket in self.buckets.iter() {
            for i in 0..SLOTS {
                let k = bucket.slots[i].key.load(Ordering::Acquire);
                if k & LIVE == 0 {
                    continue;
                }
                let v = bucket.slots[i].val.load(Ordering::Acquire);
                if bucket.slots[i].key.load(Ordering::Acquire) == k {
                    f(entry_of(k, v));
                }
            }
        }
    }
}

fn entry_of(k: u64, v: u64) -> Entry {
    Entry {
        vlan: ((k >> 48) as u16) & VLAN_MASK,
        mac: MacAddr::from_u64(k),
        port: val_port(v),
        last_seen: val_ts(v),
        is_static: k & STATIC != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learns_and_looks_up() {
        let fdb = Fdb::new(16);
        assert_eq!(fdb.lookup(0, mac(1)), None);
        assert_eq!(fdb.learn(0, mac(1), 3, 10), Learn::Learned);
        assert_eq!(fdb.lookup(0, mac(1)), Some(3));
        assert_eq!(fdb.len(), 1);
        // The same source again in the same second writes nothing.
        assert_eq!(fdb.learn(0, mac(1), 3, 10), Learn::Known);
        assert_eq!(fdb.learn(0, mac(1), 3, 11), Learn::Refreshed);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn probes_count_lookups_and_the_lines_they_read() {
        // Two buckets, so every key's two are the same two: a key goes to its first bucket's
        // first line while it has room, then to the other bucket's first line.
        let fdb = Fdb::new(8);
        for n in 0..8 {
            assert_eq!(fdb.learn(0, mac(n), 1, 0), Learn::Learned);
        }
        let mut lines = [0; 5];
        for n in 0..8 {
            let mut p = Probes::default();
            assert_eq!(fdb.lookup_key(&fdb.key(0, mac(n)), &mut p), Some(1));
            assert_eq!(p.lookups, 1);
            lines[p.lines as usize] += 1;
        }
        // The two first lines hold all eight, at least four in their key's first bucket.
        assert!(lines[1] >= 4, "{lines:?}");
        assert_eq!(lines[1] + lines[2], 8, "{lines:?}");
        // A miss reads all four lines; learning counts its lookup like a lookup.
        let mut p = Probes::default();
        assert_eq!(fdb.lookup_key(&fdb.key(0, mac(99)), &mut p), None);
        assert_eq!(
            p,
            Probes {
                lookups: 1,
                lines: 4
            }
        );
        let l = fdb.learn_key(&fdb.key(0, mac(0)), 1, 0, u32::MAX, &mut p);
        assert_eq!(l, Learn::Known);
        assert_eq!(p.lookups, 2);
    }

    #[test]
    fn keys_by_vlan_and_mac() {
        let fdb = Fdb::new(16);
        fdb.learn(10, mac(1), 1, 0);
        fdb.learn(20, mac(1), 2, 0);
        assert_eq!(fdb.lookup(10, mac(1)), Some(1));
        assert_eq!(fdb.lookup(20, mac(1)), Some(2));
        assert_eq!(fdb.lookup(30, mac(1)), None);
        assert_eq!(fdb.len(), 2);
    }

    #[test]
    fn the_epoch_moves_when_an_answer_may_change_and_only_then() {
        let fdb = Fdb::new(16);
        let e = fdb.epoch();
        fdb.learn(0, mac(1), 1, 0);
        fdb.learn(0, mac(1), 1, 1);
        fdb.learn(0, mac(2), 2, 1);
        assert_eq!(fdb.epoch(), e, "new and refreshed entries change no answer");
        fdb.learn(0, mac(1), 3, 1);
        assert_eq!(fdb.epoch(), e + 1, "a move");
        fdb.add_static(0, mac(2), 2);
        assert_eq!(fdb.epoch(), e + 2, "made static where it stands");
        fdb.add_static(0, mac(9), 2);
        assert_eq!(fdb.epoch(), e + 2, "a new static entry changes no answer");
        assert!(fdb.remove(0, mac(9)));
        assert_eq!(fdb.epoch(), e + 3, "removed");
        assert_eq!(fdb.age(100, 10), 1);
        assert_eq!(fdb.epoch(), e + 4, "aged out");
        assert_eq!(fdb.flush(None), 0);
        assert_eq!(fdb.epoch(), e + 4, "nothing flushed, nothing changed");
        assert_eq!(fdb.flush_port(2), 1);
        assert_eq!(fdb.epoch(), e + 5, "flushed");
    }

    #[test]
    fn detects_moves() {
        let fdb = Fdb::new(16);
        fdb.learn(0, mac(7), 1, 0);
        assert_eq!(fdb.learn(0, mac(7), 2, 0), Learn::Moved { from: 1 });
        assert_eq!(fdb.lookup(0, mac(7)), Some(2));
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn ages_out_stale_entries_only() {
        let fdb = Fdb::new(16);
        fdb.learn(0, mac(1), 1, 100);
        fdb.learn(0, mac(2), 1, 150);
        assert_eq!(fdb.add_static(0, mac(3), 2), Learn::Learned);
        assert_eq!(fdb.age(300, 300), 0);
        assert_eq!(fdb.age(401, 300), 1);
        assert_eq!(fdb.lookup(0, mac(1)), None);
        assert_eq!(fdb.lookup(0, mac(2)), Some(1));
        assert_eq!(fdb.age(10_000, 300), 1);
        assert_eq!(fdb.lookup(0, mac(3)), Some(2), "static entries never age");
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn aging_in_slices_removes_what_one_pass_would() {
        let fdb = Fdb::new(4096);
        for i in 0..3000u32 {
            let m = [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            fdb.learn(0, MacAddr(m), 1, if i % 3 == 0 { 100 } else { 500 });
        }
        let n = fdb.bucket_count();
        let slice = n.div_ceil(7);
        let mut removed = 0;
        let mut from = 0;
        while from < n {
            removed += fdb.age_buckets(600, 300, from..from + slice);
            from += slice;
        }
        assert_eq!(removed, 1000);
        assert_eq!(fdb.len(), 2000);
        assert_eq!(
            fdb.age_buckets(600, 300, n..n + 5),
            0,
            "past the end: nothing"
        );
    }

    #[test]
    fn static_entries_are_not_moved_by_learning() {
        let fdb = Fdb::new(16);
        fdb.add_static(0, mac(9), 4);
        assert_eq!(
            fdb.learn(0, mac(9), 5, 0),
            Learn::StaticElsewhere { port: 4 }
        );
        assert_eq!(fdb.lookup(0, mac(9)), Some(4));
        assert_eq!(fdb.flush(None), 0);
        assert!(fdb.remove(0, mac(9)));
        assert_eq!(fdb.lookup(0, mac(9)), None);
    }

    #[test]
    fn flush_by_port() {
        let fdb = Fdb::new(64);
        for n in 0..30 {
            fdb.learn(0, mac(n), (n % 3) as u16, 0);
        }
        assert_eq!(fdb.flush(Some(1)), 10);
        assert_eq!(fdb.len(), 20);
        let mut seen = 0;
        fdb.for_each(|e| {
            assert_ne!(e.port, 1);
            seen += 1;
        });
        assert_eq!(seen, 20);
    }

    #[test]
    fn full_table_is_counted_and_survived() {
        let fdb = Fdb::new(100);
        let mut full = 0;
        for n in 0..1000 {
            match fdb.learn(0, mac(n), 1, 0) {
                Learn::Learned => {}
                Learn::Full => full += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fdb.len(), 100);
        assert_eq!(full, 900);
        // Known entries still forward; aging makes room again.
        assert_eq!(fdb.lookup(0, mac(0)), Some(1));
        assert_eq!(fdb.age(1000, 10), 100);
        assert_eq!(fdb.learn(0, mac(5000), 2, 1000), Learn::Learned);
    }

    #[test]
    fn fills_to_capacity_before_buckets_overflow() {
        // Several address patterns (sequential, strided, scrambled), several sizes.
        for cap in [1000usize, 65_536, 300_000] {
            for stride in [1u32, 7, 4096, 0x9e37_79b9] {
                let fdb = Fdb::new(cap);
                let learned = (0..cap as u32)
                    .filter(|&n| fdb.learn(0, mac(n.wrapping_mul(stride)), 1, 0) == Learn::Learned)
                    .count();
                assert_eq!(
                    learned, cap,
                    "capacity {cap}, stride {stride}, seed {}",
                    fdb.seed
                );
            }
        }
    }

    #[test]
    fn one_million_entries() {
        let fdb = Fdb::new(1 << 20);
        for n in 0..(1u32 << 20) {
            let l = fdb.learn(0, mac(n), (n % 32) as u16, 0);
            assert_eq!(l, Learn::Learned, "entry {n}, seed {}", fdb.seed);
        }
        assert_eq!(fdb.len(), 1 << 20);
        for n in (0..(1u32 << 20)).step_by(997) {
            assert_eq!(fdb.lookup(0, mac(n)), Some((n % 32) as u16));
        }
    }

    /// Several threads learn, move, look up and age the same keys at once. Key n is only ever
    /// learned on ports n % 8 and 100 + n % 8, so any other port seen is a torn read; at the
    /// end no key is held by two slots.
    #[test]
    fn concurrent_learn_move_lookup_age() {
        const KEYS: u32 = 2_000;
        let fdb = Arc::new(Fdb::new(4_096));
        let stop = Arc::new(AtomicBool::new(false));
        // Everyone starts together, so readers and the ager overlap the learners.
        let start = Arc::new(std::sync::Barrier::new(6));
        let mut handles = Vec::new();
        for t in 0..3u32 {
            let fdb = Arc::clone(&fdb);
            let start = Arc::clone(&start);
            handles.push(std::thread::spawn(move || {
                start.wait();
                for round in 0..300u32 {
                    for n in 0..KEYS {
                        let port = if (n + round + t) % 2 == 0 {
                            (n % 8) as u16
                        } else {
                            100 + (n % 8) as u16
                        };
                        fdb.learn(0, mac(n), port, round);
                    }
                }
            }));
        }
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let fdb = Arc::clone(&fdb);
                let stop = Arc::clone(&stop);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut hits = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for n in 0..KEYS {
                            if let Some(p) = fdb.lookup(0, mac(n)) {
                                assert!(
                                    p == (n % 8) as u16 || p == 100 + (n % 8) as u16,
                                    "torn read: key {n} on port {p}"
                                );
                                hits += 1;
                            }
                        }
                    }
                    hits
                })
            })
            .collect();
        let ager = {
            let fdb = Arc::clone(&fdb);
            let stop = Arc::clone(&stop);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut t = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    fdb.age(t, 2);
                    t = (t + 1) % 64;
                    if t.is_multiple_of(16) {
                        fdb.flush(Some(3));
                    }
                }
            })
        };
        for h in handles {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(hits > 0, "the readers never overlapped the learners");
        ager.join().unwrap();
        let mut count: HashMap<MacAddr, usize> = HashMap::new();
        let mut total = 0;
        fdb.for_each(|e| {
            *count.entry(e.mac).or_default() += 1;
            total += 1;
        });
        assert!(count.values().all(|&c| c == 1), "a key is held twice");
        assert_eq!(total, fdb.len(), "entry count drifted");
    }
}
