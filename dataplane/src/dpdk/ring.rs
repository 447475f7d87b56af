//! Single-producer, single-consumer rings of plain values between lcores (`rte_ring_elem`):
//! how a worker hands records to the control thread without a lock or an allocation.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys as sys;

use super::DpdkError;

// rte_ring.h flags (macros, so not in the bindings).
const RING_F_SP_ENQ: u32 = 0x0001;
const RING_F_SC_DEQ: u32 = 0x0002;
const RING_F_EXACT_SZ: u32 = 0x0004;

struct RingInner {
    raw: NonNull<sys::rte_ring>,
    /// The element slots: `slots` of them right after the ring's header (DPDK's layout), each
    /// holding a valid value from creation on (see [`spsc_ring`]).
    base: NonNull<u8>,
    slots: u32,
}

// SAFETY: the ring is a shared DPDK object built for use across lcores; the producer and
// consumer handles (one of each) are the only ways to touch it.
unsafe impl Send for RingInner {}
// SAFETY: as above; &RingInner only reaches the thread-safe count query.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone, so no one enqueues or dequeues any more.
        unsafe { sys::rte_ring_free(self.raw.as_ptr()) }
    }
}

/// The sending end: exactly one exists per ring.
pub struct RingProducer<T> {
    inner: Arc<RingInner>,
    _t: PhantomData<T>,
}

/// The receiving end: exactly one exists per ring.
pub struct RingConsumer<T> {
    inner: Arc<RingInner>,
    _t: PhantomData<T>,
}

/// Creates a ring holding up to `capacity` values of `T` and returns its two ends.
/// `T` is copied bytewise; its size must be a non-zero multiple of 4 (DPDK's element rule).
/// Every slot starts as `T::default()`, so a producer may fill a slot in place
/// ([`RingProducer::push_with`]). A capacity of 2^k - 1 uses exactly 2^k slots of memory.
pub fn spsc_ring<T: Copy + Send + Default>(
    name: &str,
    capacity: u32,
) -> Result<(RingProducer<T>, RingConsumer<T>), DpdkError> {
    let esize = std::mem::size_of::<T>();
    let invalid = |message: String| DpdkError {
        op: format!("rte_ring_create_elem({name})"),
        errno: super::EINVAL,
        message,
    };
    if esize == 0 || !esize.is_multiple_of(4) {
        return Err(invalid(format!(
            "element size {esize} is not a non-zero multiple of 4"
        )));
    }
    // Slots are filled in place: each must be aligned for T, and they are laid out from a
    // 64-byte boundary at multiples of T's size.
    if std::mem::align_of::<T>() > 64 {
        return Err(invalid(format!(
            "element alignment {} is over 64 bytes",
            std::mem::align_of::<T>()
        )));
    }
    let esize = u32::try_from(esize).map_err(|_| invalid("element too large".into()))?;
    let cname = CString::new(name).map_err(|_| invalid("ring name contains a NUL byte".into()))?;
    // SAFETY: a valid C name (DPDK copies it), plain sizes and flags; -1 is SOCKET_ID_ANY.
    let raw = unsafe {
        sys::rte_ring_create_elem(
            cname.as_ptr(),
            esize,
            capacity,
            -1,
            RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ,
        )
    };
    let raw = NonNull::new(raw).ok_or_else(|| {
        DpdkError::from_errno(format!("rte_ring_create_elem({name}, {capacity})"))
    })?;
    // SAFETY: the ring is live and ours alone. Its `size` slots of `esize` bytes start right
    // after the header (rte_ring_elem.h's __rte_ring_get_elem_addr uses `&r[1]`); the header's
    // size is a multiple of its 64-byte alignment, T's alignment is at most 64 (checked above)
    // and esize a multiple of it, so every slot is aligned for T. Writing defaults makes every
    // slot hold a valid T before any handle exists.
    let (base, slots) = unsafe {
        let slots = (*raw.as_ptr()).size;
        let base = raw.as_ptr().add(1).cast::<u8>();
        for i in 0..slots as usize {
            base.add(i * esize as usize).cast::<T>().write(T::default());
        }
        (NonNull::new_unchecked(base), slots)
    };
    let inner = Arc::new(RingInner { raw, base, slots });
    Ok((
        RingProducer {
            inner: Arc::clone(&inner),
            _t: PhantomData,
        },
        RingConsumer {
            inner,
            _t: PhantomData,
        },
    ))
}

/// Hints the CPU to own the cache line at `p` for writing (`prefetchw`): a store to a line the
/// consumer's core read last then does not wait for it.
#[inline(always)]
fn prefetch_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint with no memory effects, valid for any address; CPUs
    // without PRFCHW execute this opcode (0F 0D /1) as a NOP.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn esize<T>() -> u32 {
    // Checked at creation: a non-zero multiple of 4 that fits u32.
    std::mem::size_of::<T>() as u32
}

impl<T: Copy + Send> RingProducer<T> {
    /// Fills the next free slot in place with `fill` (given the slot's previous value) and
    /// publishes it; false, without calling `fill`, when the ring is full. Never waits. Only the
    /// bytes `fill` writes are stored (a large record with a short header costs its size, not
    /// the slot's), and the following slot's first lines are prefetched for writing. `fill`
    /// must not panic: the slot would stay reserved and the next push publish it as it was.
    #[inline]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut T)) -> bool {
        let r = self.inner.raw.as_ptr();
        let mut zcd = sys::rte_ring_zc_data::default();
        // SAFETY: single producer (this handle is unique and &mut); asks for one slot of the
        // ring's element size, reserved for us until the finish call below.
        let n = unsafe {
            sys::rte_ring_enqueue_zc_burst_elem_start(
                r,
                esize::<T>(),
                1,
                &mut zcd,
                std::ptr::null_mut(),
            )
        };
        if n == 0 {
            return false;
        }
        let slot = zcd.ptr1.cast::<T>();
        // SAFETY: `slot` is a reserved slot of this ring, aligned for T and holding a valid T
        // (every slot does from creation on); no one else touches it until it is published.
        fill(unsafe { &mut *slot });
        // SAFETY: publishes exactly the one slot reserved above.
        unsafe { sys::rte_ring_enqueue_zc_elem_finish(r, 1) };
        let size = esize::<T>() as usize;
        let base = self.inner.base.as_ptr();
        let index = (slot as usize - base as usize) / size;
        let next = if index + 1 == self.inner.slots as usize {
            base.cast_const()
        } else {
            slot.cast::<u8>().cast_const().wrapping_add(size)
        };
        // Its first 192 bytes (a sample record's head and 128 header bytes), every line they
        // touch.
        let span = size.min(192);
        for offset in (0..span).step_by(64).chain([span - 1]) {
            prefetch_for_write(next.wrapping_add(offset));
        }
        true
    }

    /// Copies as many of `items` as fit into the ring, in order; returns how many. Never waits.
    #[inline]
    pub fn enqueue_burst(&mut self, items: &[T]) -> usize {
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // SAFETY: single producer (this handle is unique and &mut); `items` holds n valid values
        // of the ring's element size, which DPDK copies out before returning.
        let done = unsafe {
            sys::rte_ring_enqueue_burst_elem(
                self.inner.raw.as_ptr(),
                items.as_ptr().cast(),
                esize::<T>(),
                n,
                std::ptr::null_mut(),
            )
        };
        done as usize
    }
}

impl<T: Copy + Send> RingConsumer<T> {
    /// Moves up to `out.len()` values out of the ring into `out`, in order; returns how many.
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> usize {
        let n = u32::try_from(out.len()).unwrap_or(u32::MAX);
        // SAFETY: single consumer (unique, &mut); `out` has room for n elements; every element
        // in the ring was copied in from a valid T by the producer, so the bytes written are a
        // valid T (T: Copy has no drop glue to skip).
        let done = unsafe {
            sys::rte_ring_dequeue_burst_elem(
                self.inner.raw.as_ptr(),
                out.as_mut_ptr().cast(),
                esize::<T>(),
                n,
                std::ptr::null_mut(),
            )
        };
        done as usize
    }

    /// Values waiting in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: the ring is live; the count reads its head and tail indexes.
        unsafe { sys::rte_ring_count(self.inner.raw.as_ptr()) as usize }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
