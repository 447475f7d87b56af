//! sFlow packet sampling on the worker: a 1-in-N sampler per (worker, port) with random skip
//! counts, and the fixed-size record a sampled frame becomes on its way to the control thread.
//!
//! The sampler costs one decrement per frame that is not sampled, and a whole burst is skipped
//! with one compare when the next sample lies beyond it. Skips are drawn uniformly from
//! [1, 2N-1] (mean N), as sFlow requires: an every-Nth sampler aliases with periodic traffic.
#![forbid(unsafe_code)]

use crate::forward::{Action, DropReason};

/// Most header bytes a sample carries (sFlow's customary default is 128).
pub const MAX_HEADER: usize = 256;

/// Where a sampled frame went, as the sFlow output field describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampledOutput {
    /// One egress port (DPDK port id).
    Port(u16),
    /// Flooded to this many ports.
    Flood(u16),
    /// Dropped; the sFlow discard reason code.
    Dropped(u16),
}

impl SampledOutput {
    /// What sFlow v5 says of a frame the switch decided `action` for: one egress port by
    /// itself (a flood that reached a single port included), two or more as a count, a drop
    /// by its discard code.
    pub fn of(action: Action) -> SampledOutput {
        match action {
            Action::Unicast(q) => SampledOutput::Port(q),
            Action::Flood(mask) if mask.count_ones() == 1 => {
                SampledOutput::Port(mask.trailing_zeros() as u16)
            }
            Action::Flood(mask) => SampledOutput::Flood(mask.count_ones() as u16),
            Action::Drop(r) => SampledOutput::Dropped(r.sflow_code()),
        }
    }
}

/// A sampled frame: metadata and its first bytes. Plain data, copied through a ring.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SampleRecord {
    /// Frames this worker's sampler for the port had seen when it took this one (inclusive).
    pub pool: u64,
    /// Length of the whole frame (no FCS).
    pub frame_len: u32,
    /// The ingress port id.
    pub input: u16,
    /// How many header bytes are valid.
    pub header_len: u16,
    /// 0 port, 1 flood, 2 dropped.
    output_kind: u16,
    /// The port, copy count or discard reason.
    output_value: u16,
    /// 802.1Q VLAN id of the frame (0 untagged).
    pub vlan: u16,
    /// 802.1p priority of the frame (0 untagged).
    pub priority: u16,
    /// The frame's first bytes.
    pub header: [u8; MAX_HEADER],
}

// rte_ring elements are a multiple of 4 bytes.
const _: () = assert!(std::mem::size_of::<SampleRecord>().is_multiple_of(4));

impl Default for SampleRecord {
    fn default() -> Self {
        SampleRecord {
            pool: 0,
            frame_len: 0,
            input: 0,
            header_len: 0,
            output_kind: 0,
            output_value: 0,
            vlan: 0,
            priority: 0,
            header: [0; MAX_HEADER],
        }
    }
}

impl SampleRecord {
    /// Builds a record from a frame's first segment, keeping up to `header_bytes` of it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        frame: &[u8],
        frame_len: u32,
        input: u16,
        output: SampledOutput,
        vlan: u16,
        priority: u16,
        pool: u64,
        header_bytes: usize,
    ) -> SampleRecord {
        let mut r = SampleRecord::default();
        r.fill(
            frame,
            frame_len,
            input,
            output,
            vlan,
            priority,
            pool,
            header_bytes,
        );
        r
    }

    /// Makes this record (a ring slot, filled in place) describe a frame: writes the metadata
    /// and up to `header_bytes` of `frame`, nothing more; header bytes past `header_len` keep
    /// whatever they held and are never read.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn fill(
        &mut self,
        frame: &[u8],
        frame_len: u32,
        input: u16,
        output: SampledOutput,
        vlan: u16,
        priority: u16,
        pool: u64,
        header_bytes: usize,
    ) {
        let n = frame.len().min(header_bytes).min(MAX_HEADER);
        self.pool = pool;
        self.frame_len = frame_len;
        self.input = input;
        self.header_len = n as u16;
        self.vlan = vlan;
        self.priority = priority;
        (self.output_kind, self.output_value) = match output {
            SampledOutput::Port(p) => (0, p),
            SampledOutput::Flood(n) => (1, n),
            SampledOutput::Dropped(reason) => (2, reason),
        };
        self.header[..n].copy_from_slice(&frame[..n]);
    }

    /// Where the frame went.
    pub fn output(&self) -> SampledOutput {
        match self.output_kind {
            0 => SampledOutput::Port(self.output_value),
            1 => SampledOutput::Flood(self.output_value),
            _ => SampledOutput::Dropped(self.output_value),
        }
    }

    /// The header bytes kept.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }
}

/// No port: a dropped frame's input or output that is not known (or there is none).
pub const NO_PORT: u16 = u16::MAX;

/// A dropped frame, for sFlow's dropped-packet notification (`sflow_drops.txt`): where it came
/// from and was going, why it was dropped, and its first bytes. Plain data, copied through a
/// ring; a worker sends at most its per-second budget of them.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DropRecord {
    /// Drops this worker did not offer a record of before this one (over its budget, its
    /// ring full, or no frame left to show), since it started.
    pub unreported: u64,
    /// Length of the whole frame (no FCS).
    pub frame_len: u32,
    /// The ingress port id ([`NO_PORT`]: not known).
    pub input: u16,
    /// The egress port id it was dropped at ([`NO_PORT`]: none, dropped on the way in).
    pub output: u16,
    /// Why: the [`DropReason`] index.
    pub reason: u16,
    /// How many header bytes are valid.
    pub header_len: u16,
    /// The frame's first bytes.
    pub header: [u8; MAX_HEADER],
}

const _: () = assert!(std::mem::size_of::<DropRecord>().is_multiple_of(4));

impl Default for DropRecord {
    fn default() -> Self {
        DropRecord {
            unreported: 0,
            frame_len: 0,
            input: NO_PORT,
            output: NO_PORT,
            reason: 0,
            header_len: 0,
            header: [0; MAX_HEADER],
        }
    }
}

impl DropRecord {
    /// A record of `header` (the frame's first bytes, as many as wanted) for a frame of
    /// `frame_len` bytes dropped for `reason`.
    pub fn new(
        header: &[u8],
        frame_len: u32,
        input: u16,
        output: u16,
        reason: DropReason,
    ) -> DropRecord {
        let n = header.len().min(MAX_HEADER);
        let mut r = DropRecord {
            unreported: 0,
            frame_len,
            input,
            output,
            reason: reason as u16,
            header_len: n as u16,
            header: [0; MAX_HEADER],
        };
        r.header[..n].copy_from_slice(&header[..n]);
        r
    }

    /// Why the frame was dropped (None: a reason index this build does not know).
    pub fn reason(&self) -> Option<DropReason> {
        DropReason::ALL.get(usize::from(self.reason)).copied()
    }

    /// The header bytes kept.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }
}

/// A 1-in-N sampler with random skips.
#[derive(Debug, Clone)]
pub struct Sampler {
    rate: u32,
    skip: u32,
    seen: u64,
    rng: u64,
}

impl Sampler {
    /// A sampler taking on average one frame in `rate` (0: never). `seed` must differ between
    /// samplers so that they do not draw the same skips.
    pub fn new(rate: u32, seed: u64) -> Sampler {
        let mut s = Sampler {
            rate,
            skip: 0,
            seen: 0,
            rng: seed | 1,
        };
        s.skip = s.next_skip();
        s
    }

    /// The configured 1-in-N rate (0: off).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Frames seen so far (the sFlow sample pool), sampled or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Carries the frame count of the sampler this one replaces, so that the sample pool a
    /// collector sees never goes back when the rate changes.
    pub fn continue_from(&mut self, previous: &Sampler) {
        self.seen = previous.seen;
    }

    fn next_skip(&mut self) -> u32 {
        if self.rate == 0 {
            return u32::MAX;
        }
        if self.rate == 1 {
            return 1;
        }
        // xorshift64*: fast, and good enough to decorrelate skips from traffic patterns.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        let span = 2 * u64::from(self.rate) - 1; // uniform in [1, 2N-1]: mean N
                                                 // Scaled by a multiply, not a division (Lemire): a 64-bit divide costs tens of cycles
                                                 // per sample; the bias is below span / 2^32.
        (1 + ((r * span) >> 32)) as u32
    }

    /// Accounts a burst of `n` frames (at most 32) and returns which to sample: bit i set for
    /// frame i. A burst with no sample in it costs one compare; the frames in between cost
    /// nothing at all. The pool of frame i is `seen()` before the call plus i + 1.
    #[inline(always)]
    pub fn burst(&mut self, n: u32) -> u32 {
        debug_assert!(n <= 32);
        self.seen += u64::from(n);
        if self.skip > n {
            self.skip -= n;
            return 0;
        }
        let mut mask = 0u32;
        let mut pos = 0u32;
        while self.skip <= n - pos {
            pos += self.skip;
            mask |= 1 << (pos - 1);
            self.skip = self.next_skip();
        }
        self.skip -= n - pos;
        if self.rate == 0 {
            0
        } else {
            mask
        }
    }

    /// Accounts one frame; true when it is to be sampled.
    #[inline(always)]
    pub fn take(&mut self) -> bool {
        self.seen += 1;
        self.skip -= 1;
        if self.skip == 0 {
            self.skip = self.next_skip();
            self.rate != 0
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_output_names_one_port_by_itself_and_counts_several() {
        use super::{Action, SampledOutput};
        use crate::forward::DropReason;
        assert_eq!(
            SampledOutput::of(Action::Unicast(3)),
            SampledOutput::Port(3)
        );
        assert_eq!(
            SampledOutput::of(Action::Flood(1 << 5)),
            SampledOutput::Port(5),
            "a flood that reached one port went to that port"
        );
        assert_eq!(
            SampledOutput::of(Action::Flood(0b1011)),
            SampledOutput::Flood(3)
        );
        assert_eq!(
            SampledOutput::of(Action::Drop(DropReason::Runt)),
            SampledOutput::Dropped(324)
        );
    }

    use super::*;

    #[test]
    fn drop_record_keeps_ports_reason_and_header() {
        let frame: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let r = DropRecord::new(&frame[..128], 512, 3, NO_PORT, DropReason::SameSegment);
        assert_eq!(r.header(), &frame[..128]);
        assert_eq!((r.frame_len, r.input, r.output), (512, 3, NO_PORT));
        assert_eq!(r.reason(), Some(DropReason::SameSegment));
        let all = DropRecord::new(&frame, 512, 1, 2, DropReason::TxFull);
        assert_eq!(
            all.header().len(),
            MAX_HEADER,
            "never more than a record holds"
        );
        for reason in DropReason::ALL {
            assert_eq!(DropRecord::new(&[], 0, 0, 0, reason).reason(), Some(reason));
        }
        let garbage = DropRecord {
            reason: 999,
            ..DropRecord::default()
        };
        assert_eq!(garbage.reason(), None);
    }

    #[test]
    fn samples_one_in_n_on_average() {
        for rate in [2u32, 16, 256, 1000] {
            let mut s = Sampler::new(rate, 0x1234_5678 + u64::from(rate));
            let frames = 2_000_000u64;
            let taken = (0..frames).filter(|_| s.take()).count() as f64;
            let expect = frames as f64 / f64::from(rate);
            // sFlow's 95% bound: 196 * sqrt(1/c) percent for c samples.
            let bound = 1.96 * (1.0 / expect).sqrt() * expect;
            assert!(
                (taken - expect).abs() <= bound,
                "rate {rate}: {taken} samples, expected {expect} +- {bound}"
            );
            assert_eq!(s.seen(), frames);
        }
    }

    #[test]
    fn skips_are_random_not_periodic() {
        let mut s = Sampler::new(100, 42);
        let mut gaps = Vec::new();
        let mut last = 0u64;
        for i in 1..=200_000u64 {
            if s.take() {
                gaps.push(i - last);
                last = i;
            }
        }
        let distinct: std::collections::HashSet<_> = gaps.iter().collect();
        assert!(
            distinct.len() > 100,
            "gaps vary: {} distinct",
            distinct.len()
        );
        assert!(
            gaps.iter().all(|&g| (1..=199).contains(&g)),
            "gaps within [1, 2N-1]"
        );
    }

    #[test]
    fn bursts_sample_the_same_frames_as_one_at_a_time() {
        let mut a = Sampler::new(64, 7);
        let mut b = Sampler::new(64, 7);
        for round in 0..20_000u32 {
            let n = round % 33; // every burst size, empty ones included
            let one_by_one: u32 = (0..n).filter(|_| a.take()).map(|i| 1 << i).sum();
            assert_eq!(b.burst(n), one_by_one, "burst {round} of {n}");
        }
        assert_eq!(a.seen(), b.seen());
        let mut all = Sampler::new(1, 3);
        assert_eq!(all.burst(32), u32::MAX);
        let mut off = Sampler::new(0, 3);
        assert!((0..1000).all(|_| off.burst(32) == 0));
    }

    #[test]
    fn rate_zero_never_samples_and_one_samples_all() {
        let mut off = Sampler::new(0, 1);
        assert!((0..100_000).all(|_| !off.take()));
        let mut all = Sampler::new(1, 1);
        assert!((0..1000).all(|_| all.take()));
    }

    #[test]
    fn record_keeps_the_header_and_the_output() {
        let frame: Vec<u8> = (0..200u8).collect();
        let r = SampleRecord::new(&frame, 200, 3, SampledOutput::Flood(4), 10, 5, 77, 128);
        assert_eq!(r.header(), &frame[..128]);
        assert_eq!(r.output(), SampledOutput::Flood(4));
        assert_eq!(
            (r.input, r.vlan, r.priority, r.pool, r.frame_len),
            (3, 10, 5, 77, 200)
        );
        let short = SampleRecord::new(
            &frame[..20],
            20,
            1,
            SampledOutput::Dropped(324),
            0,
            0,
            1,
            128,
        );
        assert_eq!(short.header().len(), 20);
        assert_eq!(short.output(), SampledOutput::Dropped(324));
        assert_eq!(
            SampleRecord::new(&frame, 200, 1, SampledOutput::Port(2), 0, 0, 1, 64).output(),
            SampledOutput::Port(2)
        );
    }
}
