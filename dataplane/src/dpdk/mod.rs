//! The safe layer over DPDK: the only place above `dpdk-sys` that holds `unsafe`.
//!
//! Ownership carries DPDK's rules: an [`Mbuf`] frees itself when dropped, a [`Mempool`] lives
//! until every port that draws from it is closed, an [`RxQueue`] is handed out once (one poller
//! per queue), and a [`Port`] can be stopped only through unique ownership, which the control
//! thread gets back once every worker has dropped its queue handles.

mod eal;
mod events;
mod mbuf;
mod mempool;
mod meter;
mod port;
mod ring;

pub use eal::{tsc, tsc_hz, Eal, LcoreId};
pub use events::{EventSender, PortEvent};
pub use mbuf::{Burst, BurstDrain, Mbuf, TxBatch, BURST_SIZE};
pub use mempool::{Mempool, DEFAULT_DATA_BYTES};
pub use meter::RateMeter;
pub use port::{
    EnabledQueues, Link, MtuKeeper, Port, PortConfig, PortId, PortInfo, PortStats, QueueEvent,
    RxQueue, TxDrop, TxOutcome, TxQueue, VhostGuest,
};
pub use ring::{spsc_ring, RingConsumer, RingProducer};

use std::ffi::CStr;

use dpdk_sys as sys;

/// The largest number of ethdev ports this DPDK build supports (`RTE_MAX_ETHPORTS`).
pub const MAX_PORTS: usize = sys::RTE_MAX_ETHPORTS as usize;

// Linux errno values for the errors this layer raises itself.
pub(crate) const EINVAL: i32 = 22;
pub(crate) const ENODEV: i32 = 19;
pub(crate) const EBUSY: i32 = 16;
pub(crate) const EALREADY: i32 = 114;
pub(crate) const EAGAIN: i32 = 11;
pub(crate) const ENOENT: i32 = 2;
/// What DPDK returns for an operation the driver does not support (-ENOTSUP).
pub(crate) const ENOTSUP: i32 = 95;

/// A DPDK call that failed: which operation, and the errno it reported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message} (errno {errno})")]
pub struct DpdkError {
    /// The DPDK operation and its subject, e.g. `rte_eth_dev_configure(port 0)`.
    pub op: String,
    /// The positive errno value.
    pub errno: i32,
    /// `rte_strerror(errno)`.
    pub message: String,
}

impl DpdkError {
    /// Builds an error from a DPDK return code (`-errno`) or, when it is not negative, `rte_errno`.
    pub(crate) fn from_ret(op: impl Into<String>, ret: i32) -> Self {
        let errno = if ret < 0 { -ret } else { rte_errno() };
        DpdkError {
            op: op.into(),
            errno,
            message: strerror(errno),
        }
    }

    /// Builds an error from the calling thread's `rte_errno`.
    pub(crate) fn from_errno(op: impl Into<String>) -> Self {
        Self::from_ret(op, 0)
    }
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno through the shim; no arguments, no state changed.
    unsafe { sys::pmdswitch_rte_errno() }
}

fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string
    // that stays valid until the next call on this thread; it is copied out at once.
    unsafe {
        let p = sys::rte_strerror(errno);
        if p.is_null() {
            format!("error {errno}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Hints the CPU to bring the cache line holding `*r` into every cache level (`prefetcht0`).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint with no memory effects; SSE is part of the x86_64
    // baseline, and the address comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Asks the kernel to back `mem` with transparent huge pages where it can (`MADV_HUGEPAGE`):
/// a table read at random over megabytes otherwise misses the TLB on most lookups. Only the
/// 2 MiB-aligned part of the range can be huge; failure (THP off) is harmless and ignored.
pub fn advise_hugepages<T>(mem: &[T]) {
    const HUGE: usize = 2 << 20;
    let start = mem.as_ptr() as usize;
    let end = start + std::mem::size_of_val(mem);
    let first = start.next_multiple_of(HUGE);
    if end < first + HUGE {
        return;
    }
    let len = (end - first) / HUGE * HUGE;
    let Some(addr) = std::ptr::NonNull::new(first as *mut std::ffi::c_void) else {
        return;
    };
    // SAFETY: [first, first + len) lies inside `mem`, which is borrowed and so mapped for the
    // duration of the call; MADV_HUGEPAGE changes how pages are backed, never their contents.
    let _ =
        unsafe { nix::sys::mman::madvise(addr, len, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE) };
}

/// The version string of the DPDK library the process loaded (`rte_version()`).
pub fn runtime_version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::pmdswitch_rte_version()) }
        .to_string_lossy()
        .into_owned()
}
