//! Packet buffer pools in hugepage memory.

use std::ffi::CString;
use std::ptr::NonNull;

use dpdk_sys as sys;

use super::DpdkError;

/// Bytes of frame a default buffer holds after its headroom (`RTE_MBUF_DEFAULT_DATAROOM`).
pub const DEFAULT_DATA_BYTES: u16 = 2048;
/// Headroom in front of every buffer's frame (`RTE_PKTMBUF_HEADROOM`).
const HEADROOM: u16 = sys::RTE_PKTMBUF_HEADROOM as u16;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`). It must outlive every port whose
/// queues draw from it and every [`super::Mbuf`] taken from it.
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
    size: u32,
}

// SAFETY: mempool get/put and the count queries are thread-safe in DPDK (ring-backed pool,
// per-lcore caches); the handle is only a pointer to that shared object.
unsafe impl Send for Mempool {}
// SAFETY: as above; no method takes `&self` in a way that races with another lcore.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with a per-lcore cache of `cache` and the default data
    /// room (2 KiB plus headroom), on NUMA socket `socket` (-1 for any).
    pub fn new_pktmbuf(name: &str, size: u32, cache: u32, socket: i32) -> Result<Self, DpdkError> {
        Self::with_buffers(name, size, cache, DEFAULT_DATA_BYTES, socket)
    }

    /// Creates a pool of `size` mbufs whose buffers hold `data_bytes` of frame after the
    /// headroom (for a device that needs a whole frame in one buffer).
    pub fn with_buffers(
        name: &str,
        size: u32,
        cache: u32,
        data_bytes: u16,
        socket: i32,
    ) -> Result<Self, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError {
            op: "rte_pktmbuf_pool_create".into(),
            errno: super::EINVAL,
            message: "pool name contains a NUL byte".into(),
        })?;
        let data_room = data_bytes.checked_add(HEADROOM).ok_or_else(|| DpdkError {
            op: "rte_pktmbuf_pool_create".into(),
            errno: super::EINVAL,
            message: format!("buffers of {data_bytes} bytes and headroom exceed 64 KiB"),
        })?;
        // SAFETY: the name is a valid C string (DPDK copies it); sizes are plain values.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        NonNull::new(raw)
            .map(|raw| Mempool { raw, size })
            .ok_or_else(|| {
                DpdkError::from_errno(format!("rte_pktmbuf_pool_create({name}, {size} mbufs)"))
            })
    }

    /// The number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs currently taken from the pool (held by rx rings, workers or tx rings); those
    /// parked in per-lcore caches count as free.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is live; the count walks the ring and the lcore caches read-only.
        unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let out = self.in_use();
        if out != 0 {
            // Freeing now would leave those mbufs pointing into freed memory: leak it instead.
            log::error!("mempool dropped with {out} mbufs still in use; leaking it");
            return;
        }
        // SAFETY: the pool is freed once, with no mbuf taken from it outstanding (checked
        // above) and no queue holding it (queue handles and ports keep an Arc to it).
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
