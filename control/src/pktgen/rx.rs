//! What the receiver makes of a stream's frames: loss, duplicates and reordering from their
//! sequence numbers (RFC 4737's reordered: a frame older than one already received), and
//! latency from their transmit TSC in an HDR histogram.

use hdrhistogram::Histogram;

/// How far behind the newest sequence number a frame may arrive and still be told apart as
/// reordered or duplicate (frames older than that are counted as reordered).
pub const SEQ_WINDOW: u32 = 1 << 16;
const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// How one frame's sequence number fits what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected, or later (frames in between are missing so far).
    InOrder,
    /// Older than a frame already received, and not seen before: reordered.
    Late,
    /// Seen before.
    Duplicate,
}

/// Which of the last [`SEQ_WINDOW`] sequence numbers arrived. Numbers wrap at 2^32.
pub struct SeqTracker {
    next: u32,
    started: bool,
    seen: Box<[u64; WORDS]>,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            next: 0,
            started: false,
            seen: Box::new([0; WORDS]),
        }
    }
}

impl SeqTracker {
    fn bit(seq: u32) -> (usize, u64) {
        let i = seq % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Records `seq` and says how it arrived.
    #[inline]
    pub fn record(&mut self, seq: u32) -> Arrival {
        if !self.started {
            self.started = true;
            self.next = seq;
        }
        let ahead = seq.wrapping_sub(self.next) as i32;
        if ahead >= 0 {
            // Numbers skipped over are missing for now: clear their bits for late arrivals.
            if ahead as u32 >= SEQ_WINDOW {
                self.seen.fill(0);
            } else {
                let mut s = self.next;
                while s != seq {
                    let (w, b) = Self::bit(s);
                    self.seen[w] &= !b;
                    s = s.wrapping_add(1);
                }
            }
            let (w, b) = Self::bit(seq);
            self.seen[w] |= b;
            self.next = seq.wrapping_add(1);
            return Arrival::InOrder;
        }
        if ahead.unsigned_abs() > SEQ_WINDOW {
            return Arrival::Late;
        }
        let (w, b) = Self::bit(seq);
        if self.seen[w] & b != 0 {
            Arrival::Duplicate
        } else {
            self.seen[w] |= b;
            Arrival::Late
        }
    }
}

/// The receive side of one stream during a trial.
pub struct StreamRx {
    /// Frames received (duplicates included).
    pub frames: u64,
    /// Bytes received (FCS included, as the sizes are counted).
    pub bytes: u64,
    /// Frames received a second time.
    pub duplicates: u64,
    /// Frames older than one already received.
    pub reordered: u64,
    /// One-way latency in ns (transmit burst built to receive burst polled).
    pub latency_ns: Histogram<u64>,
    seq: SeqTracker,
}

/// Largest latency the histogram holds, ns (60 s); longer ones are clamped to it.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// An empty latency histogram (ns, 1 ns to 60 s, 3 significant digits): every stream's, and
/// the sum of them, share this shape.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

impl Default for StreamRx {
    fn default() -> Self {
        StreamRx {
            frames: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            latency_ns: latency_histogram(),
            seq: SeqTracker::default(),
        }
    }
}

impl StreamRx {
    /// Counts one received frame of `size` bytes, its sequence number and its latency in ns.
    #[inline]
    pub fn record(&mut self, size: u64, seq: u32, latency_ns: u64) {
        self.frames += 1;
        self.bytes += size;
        match self.seq.record(seq) {
            Arrival::InOrder => {}
            Arrival::Late => self.reordered += 1,
            Arrival::Duplicate => self.duplicates += 1,
        }
        self.latency_ns
            .saturating_record(latency_ns.clamp(1, MAX_LATENCY_NS));
    }

    /// Distinct frames received (duplicates taken out).
    pub fn unique(&self) -> u64 {
        self.frames - self.duplicates
    }
}

/// Converts TSC cycles to ns with one multiply and shift (no division per frame).
#[derive(Debug, Clone, Copy)]
pub struct CyclesToNs {
    mult: u64,
}

impl CyclesToNs {
    /// For a TSC of `hz` cycles a second.
    pub fn new(hz: u64) -> Self {
        CyclesToNs {
            mult: ((1_000_000_000u128 << 32) / u128::from(hz.max(1))) as u64,
        }
    }

    /// `cycles` in ns.
    #[inline(always)]
    pub fn ns(self, cycles: u64) -> u64 {
        ((u128::from(cycles) * u128::from(self.mult)) >> 32) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_frames_are_neither_late_nor_duplicate() {
        let mut t = SeqTracker::default();
        for s in 0..200_000u32 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
    }

    #[test]
    fn a_swapped_pair_is_one_late_frame_and_a_repeat_is_a_duplicate() {
        let mut rx = StreamRx::default();
        for s in [0u32, 1, 3, 2, 4, 4, 6, 7] {
            rx.record(64, s, 10);
        }
        assert_eq!(rx.reordered, 1);
        assert_eq!(rx.duplicates, 1);
        assert_eq!(rx.unique(), 7);
        // 5 never came: 8 sent, 7 distinct received.
    }

    #[test]
    fn gaps_are_not_reordering_and_late_fills_after_a_gap_are() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(10), Arrival::InOrder);
        assert_eq!(t.record(20), Arrival::InOrder);
        assert_eq!(t.record(15), Arrival::Late);
        assert_eq!(t.record(15), Arrival::Duplicate);
        assert_eq!(t.record(20), Arrival::Duplicate);
        // A number reused after the window moved on is late, not a duplicate of the old one.
        assert_eq!(t.record(20 + SEQ_WINDOW + 5), Arrival::InOrder);
        assert_eq!(t.record(20 + SEQ_WINDOW), Arrival::Late);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = SeqTracker::default();
        for s in [u32::MAX - 1, u32::MAX, 0, 1] {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert_eq!(t.record(u32::MAX), Arrival::Duplicate);
    }

    #[test]
    fn cycles_convert_to_ns() {
        let c = CyclesToNs::new(2_500_000_000);
        // Within a ns per second: the factor is a 32-bit fixed-point fraction.
        assert!(c.ns(2_500_000_000).abs_diff(1_000_000_000) <= 1);
        assert!(c.ns(250).abs_diff(100) <= 1);
        assert_eq!(c.ns(0), 0);
    }
}
