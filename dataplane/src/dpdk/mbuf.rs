//! Owned packet buffers and the fixed-size arrays that carry them in bursts.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use dpdk_sys as sys;

/// Packets per rx burst and per tx batch: DPDK's customary 32.
pub const BURST_SIZE: usize = 32;

/// One reference to a packet buffer. Dropping it gives the reference back
/// (`rte_pktmbuf_free`); a buffer shared with [`Mbuf::share`] is freed with its last reference.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf reference may be handed to another lcore: DPDK's free path is thread-safe
// (atomic refcount, mempool ring), and this handle is the only one through which it is used.
unsafe impl Send for Mbuf {}

impl Mbuf {
    #[inline(always)]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer came from DPDK (rx burst or alloc) and stays valid until this
        // handle is dropped; only plain fields are read through the reference.
        unsafe { self.0.as_ref() }
    }

    /// The bytes of the first segment (the whole frame unless [`Mbuf::nb_segs`] > 1).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off is the start of the first segment's data and data_len
        // bytes from there lie inside the buffer (mbuf invariant); the memory stays valid and
        // is not written while this shared reference to the handle exists.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Length of the whole packet, all segments.
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Number of segments in the chain.
    #[inline(always)]
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The port the packet was received on, as the PMD recorded it.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Hints the CPU to bring the first line of frame data into cache.
    #[inline(always)]
    pub fn prefetch_data(&self) {
        if let Some(first) = self.data().first() {
            super::prefetch(first);
        }
    }

    /// True when this handle is the only reference to a one-segment buffer of its own
    /// (not attached to another's data), so its bytes may be changed in place.
    #[inline(always)]
    pub fn is_exclusive(&self) -> bool {
        self.raw().nb_segs == 1 && self.head_is_exclusive()
    }

    /// True when this handle is the only reference to the first segment, a buffer of its own:
    /// the first segment's bytes (where the headers are) may be changed in place, whoever else
    /// shares the segments after it.
    #[inline(always)]
    pub fn head_is_exclusive(&self) -> bool {
        let m = self.raw();
        // SAFETY: the mbuf is live (this handle holds a reference); the refcount is read
        // atomically and only compared.
        let refs = unsafe { sys::rte_mbuf_refcnt_read(self.0.as_ptr()) };
        refs == 1 && m.ol_flags & (sys::RTE_MBUF_F_INDIRECT | sys::RTE_MBUF_F_EXTERNAL) == 0
    }

    /// The first segment's bytes, writable, when [`Mbuf::head_is_exclusive`].
    #[inline(always)]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.head_is_exclusive() {
            return None;
        }
        // SAFETY: &mut self and the exclusivity check (one reference to a direct first segment)
        // mean no one else reads or writes these bytes; bounds as in `data`.
        Some(unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        })
    }

    /// Grows the frame by `n` bytes at the front (into the first segment's headroom) and
    /// returns the first segment's bytes; None when that segment is shared or its headroom is
    /// short (nothing changed).
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Option<&mut [u8]> {
        if !self.head_is_exclusive() {
            return None;
        }
        // SAFETY: the first segment is this handle's alone; rte_pktmbuf_prepend changes only it
        // (data_off, data_len) and the packet length, checks the headroom and returns NULL,
        // changing nothing, when it is too small.
        let p = unsafe { sys::rte_pktmbuf_prepend(self.0.as_ptr(), n) };
        if p.is_null() {
            return None;
        }
        self.data_mut()
    }

    /// Removes `n` bytes from the front of the frame (of its first segment); false (nothing
    /// changed) when that segment is shared or not longer than `n`.
    #[inline]
    pub fn trim_front(&mut self, n: u16) -> bool {
        if !self.head_is_exclusive() || self.raw().data_len <= n {
            return false;
        }
        // SAFETY: the first segment is this handle's alone and longer than n; rte_pktmbuf_adj
        // only moves its data_off and shortens its and the packet's lengths.
        !unsafe { sys::rte_pktmbuf_adj(self.0.as_ptr(), n) }.is_null()
    }

    /// Grows the frame by `n` bytes at the end and returns the new bytes, zeroed; None when the
    /// tailroom is short.
    #[inline]
    pub fn append(&mut self, n: u16) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: exclusive one-segment mbuf; rte_pktmbuf_append checks the tailroom and
        // returns NULL, changing nothing, when it is too small.
        let p = unsafe { sys::rte_pktmbuf_append(self.0.as_ptr(), n) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at the n appended bytes inside this exclusive buffer; they are
        // initialised (zeroed) before a slice is made over them.
        Some(unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), 0, usize::from(n));
            std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(n))
        })
    }

    /// Copies `out.len()` bytes of the packet from `offset` on, across segments; false (out
    /// untouched past what was copied) when the packet is shorter.
    pub fn read(&self, offset: u32, out: &mut [u8]) -> bool {
        let mut skip = offset as usize;
        let mut done = 0;
        let mut seg = self.0.as_ptr();
        while !seg.is_null() && done < out.len() {
            // SAFETY: `seg` is this packet's first segment or a `next` of one, all live while
            // this handle holds its reference; data_len bytes from buf_addr + data_off are the
            // segment's data (mbuf invariant), read only.
            let data = unsafe {
                let m = &*seg;
                let d = std::slice::from_raw_parts(
                    m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                    usize::from(m.data_len),
                );
                seg = m.next;
                d
            };
            if skip >= data.len() {
                skip -= data.len();
                continue;
            }
            let take = (data.len() - skip).min(out.len() - done);
            out[done..done + take].copy_from_slice(&data[skip..skip + take]);
            done += take;
            skip = 0;
        }
        done == out.len()
    }

    /// For a chained packet: makes `head` (a new one-segment buffer holding this packet's first
    /// segment as it should be, e.g. retagged) the head of a packet that shares this one's
    /// other segments (one more reference on each: no copy of them). False (head unchanged)
    /// when this packet has one segment or `head` is not a one-segment buffer of its own.
    pub fn share_tail_under(&self, head: &mut Mbuf) -> bool {
        let m = self.raw();
        if m.nb_segs < 2 || m.next.is_null() || !head.is_exclusive() {
            return false;
        }
        let tail_len = m.pkt_len - u32::from(m.data_len);
        // SAFETY: the tail (segments after the first) is live while this handle holds its
        // reference; each of its segments gets one more reference before `head` points to it,
        // and `head` (one exclusive segment) then owns those references: freeing it releases
        // every segment once. Only head's fields are written.
        unsafe {
            let mut seg = m.next;
            while !seg.is_null() {
                sys::rte_mbuf_refcnt_update(seg, 1);
                seg = (*seg).next;
            }
            let h = head.0.as_mut();
            h.next = m.next;
            h.nb_segs = m.nb_segs;
            h.pkt_len = u32::from(h.data_len) + tail_len;
        }
        true
    }

    /// The packet in one new buffer of `pool` (a chained packet made one, for a device that
    /// sends one segment); None when it does not fit one buffer or the pool is empty.
    pub fn linearized(&self, pool: &super::Mempool) -> Option<Mbuf> {
        let len = u16::try_from(self.pkt_len()).ok()?;
        let mut out = Mbuf::alloc(pool)?;
        let buf = out.append(len)?;
        self.read(0, buf).then_some(out)
    }

    /// Takes a buffer from `pool` holding `len` bytes (their content undefined), using its
    /// headroom when the room after it is short (a full first segment with a tag pushed);
    /// None when the pool is empty or `len` exceeds the whole buffer.
    pub fn alloc_len(pool: &super::Mempool, len: u16) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        let (buf_len, headroom) = (m.raw().buf_len, m.raw().data_off);
        let room = buf_len.checked_sub(headroom)?;
        if len > room {
            m.prepend(len - room)?;
            m.append(room)?;
        } else {
            m.append(len)?;
        }
        Some(m)
    }

    /// Takes an empty buffer from `pool`; None when the pool is exhausted.
    #[inline]
    pub fn alloc(pool: &super::Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is live (borrowed); a returned mbuf is a fresh single reference.
        let m = unsafe { sys::rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(m).map(Mbuf)
    }

    /// Makes `n` more references to this buffer with one atomic refcount update per segment and
    /// hands each to `each`: how a frame is flooded to several ports without copying it.
    #[inline]
    pub fn share(&self, n: u16, mut each: impl FnMut(Mbuf)) {
        if n == 0 {
            return;
        }
        let delta = i16::try_from(n).expect("fewer than 32768 references at once");
        // SAFETY: this handle holds a reference, so the mbuf chain is live; the update adds `n`
        // references to every segment (rte_pktmbuf_free releases every segment of the chain),
        // and each of them is owned by exactly one Mbuf created below.
        unsafe { sys::rte_pktmbuf_refcnt_update(self.0.as_ptr(), delta) };
        for _ in 0..n {
            each(Mbuf(self.0));
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference to a live mbuf and gives it back exactly once.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to [`BURST_SIZE`] received packets, in a fixed array on the stack.
pub struct Burst {
    mbufs: [MaybeUninit<Mbuf>; BURST_SIZE],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    pub fn new() -> Self {
        Burst {
            mbufs: [const { MaybeUninit::uninit() }; BURST_SIZE],
            len: 0,
        }
    }

    /// Number of packets held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no packet is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw slot array for an rx burst to fill. Packets still held are freed first.
    pub(crate) fn fill_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        if self.len != 0 {
            drop(self.drain());
        }
        // Mbuf is repr(transparent) over NonNull<rte_mbuf>, so a slot has the layout of a pointer.
        self.mbufs.as_mut_ptr().cast()
    }

    /// Records that the first `n` slots were filled with valid mbuf pointers.
    ///
    /// # Safety
    /// The first `n` slots (n <= BURST_SIZE) must hold mbuf pointers this burst now owns.
    pub(crate) unsafe fn set_len(&mut self, n: usize) {
        debug_assert!(n <= BURST_SIZE);
        self.len = n;
    }

    /// The packets held, in order.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first `len` slots hold initialised mbufs (set_len's contract), and
        // MaybeUninit<Mbuf> has the layout of Mbuf.
        unsafe { std::slice::from_raw_parts(self.mbufs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Frees every packet held in one call (`rte_pktmbuf_free_bulk`), leaving the burst empty:
    /// how a receiver that only counts what it got gives the buffers back.
    pub fn free_all(&mut self) {
        let n = std::mem::take(&mut self.len);
        if n == 0 {
            return;
        }
        // SAFETY: the first n slots held mbufs this burst owned; with len reset they are never
        // read again, so each is freed exactly once (the bulk call frees every segment).
        unsafe {
            sys::rte_pktmbuf_free_bulk(self.mbufs.as_mut_ptr().cast(), n as u32);
        }
    }

    /// Takes the packets out, in order, leaving the burst empty.
    pub fn drain(&mut self) -> BurstDrain<'_> {
        let len = std::mem::take(&mut self.len);
        BurstDrain {
            burst: self,
            next: 0,
            len,
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        drop(self.drain());
    }
}

/// Iterator over a drained [`Burst`]; packets not taken are freed when it is dropped.
pub struct BurstDrain<'a> {
    burst: &'a mut Burst,
    next: usize,
    len: usize,
}

impl BurstDrain<'_> {
    /// The packet `k` places after the next one to be taken, if any (to work ahead on it).
    #[inline(always)]
    pub fn ahead(&self, k: usize) -> Option<&Mbuf> {
        let i = self.next + k;
        if i < self.len {
            // SAFETY: slots next..len hold initialised mbufs not yet taken.
            Some(unsafe { self.burst.mbufs[i].assume_init_ref() })
        } else {
            None
        }
    }
}

impl BurstDrain<'_> {
    /// Moves the next packets, up to `k` of them, into `batch` in order, as far as the batch
    /// has room. Returns how many moved.
    #[inline(always)]
    pub fn move_into(&mut self, batch: &mut TxBatch, k: usize) -> usize {
        let k = k.min(BURST_SIZE - batch.len).min(self.len - self.next);
        // k fits both: the burst's slots next..next+k hold mbufs not yet taken, the batch's
        // slots len..len+k are free, and the two arrays are distinct objects.
        // SAFETY: as above; advancing `next` and `len` by k moves ownership exactly once.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.burst.mbufs.as_ptr().add(self.next),
                batch.mbufs.as_mut_ptr().add(batch.len),
                k,
            );
        }
        self.next += k;
        batch.len += k;
        k
    }
}

impl Iterator for BurstDrain<'_> {
    type Item = Mbuf;

    #[inline(always)]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next < self.len {
            // SAFETY: slot `next` is initialised and not yet taken; advancing `next` makes this
            // the only read of it, so ownership moves out exactly once.
            let m = unsafe { self.burst.mbufs[self.next].assume_init_read() };
            self.next += 1;
            Some(m)
        } else {
            None
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.next;
        (n, Some(n))
    }
}

impl Drop for BurstDrain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}

/// Packets waiting to be sent on one tx queue, flushed as one `rte_eth_tx_burst`.
pub struct TxBatch {
    mbufs: [MaybeUninit<Mbuf>; BURST_SIZE],
    len: usize,
}

impl Default for TxBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl TxBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        TxBatch {
            mbufs: [const { MaybeUninit::uninit() }; BURST_SIZE],
            len: 0,
        }
    }

    /// Number of packets waiting.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when another push would not fit.
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Adds a packet; gives it back when the batch is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.mbufs[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Appends up to `n` new one-segment frames from `pool` (`rte_pktmbuf_alloc_bulk`, all or
    /// none), as far as the batch has room: `fill` gets each one's index among them and its
    /// whole room (the buffer after the headroom), writes the frame from its start and returns
    /// its length in bytes (at most the room). How a generator builds a burst.
    /// Returns how many were added: 0 when the pool is short.
    #[inline]
    pub fn alloc_frames(
        &mut self,
        pool: &super::Mempool,
        n: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> usize,
    ) -> usize {
        let n = n.min(BURST_SIZE - self.len);
        if n == 0 {
            return 0;
        }
        // SAFETY: slots len..len+n are free; the pool is live (borrowed). On success DPDK
        // writes n fresh, reset mbufs (refcount 1, one segment, default headroom) there.
        let ret = unsafe {
            sys::rte_pktmbuf_alloc_bulk(
                pool.as_ptr(),
                self.mbufs.as_mut_ptr().add(self.len).cast(),
                n as u32,
            )
        };
        if ret != 0 {
            return 0;
        }
        let start = self.len;
        self.len += n;
        for (i, slot) in self.mbufs[start..start + n].iter_mut().enumerate() {
            // SAFETY: the slot was just filled with a fresh mbuf that no one else references.
            let m = unsafe { slot.assume_init_mut().0.as_mut() };
            let room = usize::from(m.buf_len.saturating_sub(m.data_off));
            // SAFETY: data_off + room is the end of the buffer; the fresh mbuf is referenced
            // only by this batch, borrowed mutably here.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                    room,
                )
            };
            let len = fill(i, bytes).min(room) as u16;
            m.data_len = len;
            m.pkt_len = u32::from(len);
        }
        n
    }

    /// Frees every waiting packet and returns how many there were.
    pub fn discard(&mut self) -> usize {
        let n = self.len;
        self.release_from(0);
        n
    }

    /// After a tx burst took the first `sent` packets (DPDK owns them now): forgets them and
    /// moves the ones it left to the front, in order. Returns `sent`.
    pub(crate) fn forget_sent(&mut self, sent: usize) -> usize {
        let sent = sent.min(self.len);
        let left = self.len - sent;
        if left > 0 && sent > 0 {
            // SAFETY: slots sent..len hold initialised mbufs; they move to 0..left (an
            // overlapping copy), and with len set to `left` the slots beyond are never read as
            // packets again. The first `sent` slots' mbufs belong to DPDK and are overwritten
            // without a drop.
            unsafe {
                std::ptr::copy(self.mbufs.as_ptr().add(sent), self.mbufs.as_mut_ptr(), left);
            }
        }
        self.len = left;
        sent
    }

    /// The waiting packets, in order.
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first `len` slots are initialised, and MaybeUninit<Mbuf> has Mbuf's
        // layout.
        unsafe { std::slice::from_raw_parts(self.mbufs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The first waiting packet, if any.
    pub(crate) fn first(&self) -> Option<&Mbuf> {
        // SAFETY: slot 0 is initialised while len > 0.
        (self.len > 0).then(|| unsafe { self.mbufs[0].assume_init_ref() })
    }

    /// Frees the first waiting packet, keeping the others in order.
    pub(crate) fn drop_first(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: slot 0 is initialised; it is read out once, then forgotten by the shift.
        drop(unsafe { self.mbufs[0].assume_init_read() });
        self.forget_sent(1);
    }

    /// Raw pointer array of the waiting packets for `rte_eth_tx_burst`.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.mbufs.as_mut_ptr().cast()
    }

    fn release_from(&mut self, start: usize) {
        let len = std::mem::take(&mut self.len);
        for slot in &mut self.mbufs[start..len] {
            // SAFETY: slots start..len are initialised and, with len reset above, never read again.
            drop(unsafe { slot.assume_init_read() });
        }
    }
}

impl Drop for TxBatch {
    fn drop(&mut self) {
        self.discard();
    }
}
