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
pub fn spsc_ring<T: Copy + Send>(
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
    let inner = Arc::new(RingInner { raw });
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

fn esize<T>() -> u32 {
    // Checked at creation: a non-zero multiple of 4 that fits u32.
    std::mem::size_of::<T>() as u32
}

impl<T: Copy + Send> RingProducer<T> {
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
