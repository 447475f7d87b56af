//! Ethernet ports (ethdev): probed from a devargs string, configured, started, polled.

use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use dpdk_sys as sys;

use super::events::{self, EventSender, Watch};
use super::mbuf::{Burst, Mbuf, TxBatch, BURST_SIZE};
use super::{DpdkError, Mempool};

/// An ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl PortId {
    /// The id as an index into per-port arrays (always below [`super::MAX_PORTS`]).
    #[inline(always)]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What the driver says the device can do.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// The PMD's name, e.g. `net_tap`.
    pub driver: String,
    /// Most rx queues the device takes.
    pub max_rx_queues: u16,
    /// Most tx queues the device takes.
    pub max_tx_queues: u16,
    /// RSS hash types the device can spread rx queues by (0: no RSS).
    pub rss_offloads: u64,
    /// Kernel interface index, for devices that have one (tap), else 0.
    pub if_index: u32,
    /// The MTUs `rte_eth_dev_set_mtu` would take, as ethdev checks them against the driver's
    /// `min_mtu`, `max_mtu` and `max_rx_pktlen` (bytes of payload).
    pub mtu_range: std::ops::RangeInclusive<u32>,
    /// The device can receive one frame into several mbufs (`RTE_ETH_RX_OFFLOAD_SCATTER`).
    pub rx_scatter: bool,
    /// The device can send a frame of several mbufs (`RTE_ETH_TX_OFFLOAD_MULTI_SEGS`).
    pub tx_multi_seg: bool,
}

/// `RTE_ETH_RX_OFFLOAD_SCATTER` (a macro, so not in the bindings).
const RX_OFFLOAD_SCATTER: u64 = 1 << 13;
/// `RTE_ETH_TX_OFFLOAD_MULTI_SEGS`.
const TX_OFFLOAD_MULTI_SEGS: u64 = 1 << 15;

/// Who holds a port to its MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtuKeeper {
    /// The device took the MTU (`rte_eth_dev_set_mtu`).
    Device,
    /// The driver has no MTU operation (-ENOTSUP): the switch checks frames itself.
    Switch,
}

/// Queue layout of a port.
#[derive(Debug, Clone, Copy)]
pub struct PortConfig {
    /// Number of rx queues.
    pub rx_queues: u16,
    /// Number of tx queues.
    pub tx_queues: u16,
    /// Descriptors per rx queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Descriptors per tx queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// Receive a frame larger than one mbuf into a chain (`RTE_ETH_RX_OFFLOAD_SCATTER`).
    pub rx_scatter: bool,
    /// Send chained frames (`RTE_ETH_TX_OFFLOAD_MULTI_SEGS`), where the device can.
    pub tx_multi_seg: bool,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Carrier up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// The device's own counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    /// Packets received by the device.
    pub ipackets: u64,
    /// Packets sent by the device.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped because no rx descriptor was free.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

struct PortInner {
    id: PortId,
}

/// "No queue": a tx user whose port has no queue enabled.
const NO_QUEUE: u16 = u16::MAX;

/// Which queues of a port its peer uses, for a port whose peer enables queues itself (a
/// vhost-user guest runs as many queue pairs as it wants, and may change that at any time).
/// The control thread sets them from queue-state events; workers poll only enabled rx queues
/// and send only on enabled tx queues, spread over them.
struct Gates {
    rx_on: Box<[AtomicBool]>,
    tx_on: Box<[AtomicBool]>,
    /// Per tx user (worker): the queue it sends on (NO_QUEUE: none enabled).
    tx_of: Box<[AtomicU16]>,
    /// Per tx queue: held by a user while it sends there (users may share a queue).
    locks: Box<[AtomicBool]>,
}

impl Gates {
    /// Gates of `rx` and `tx` queues, all closed, for `users` senders.
    fn new(rx: u16, tx: u16, users: usize) -> Gates {
        let flags = |n: usize| (0..n).map(|_| AtomicBool::new(false)).collect();
        Gates {
            rx_on: flags(usize::from(rx)),
            tx_on: flags(usize::from(tx)),
            tx_of: (0..users).map(|_| AtomicU16::new(NO_QUEUE)).collect(),
            locks: flags(usize::from(tx)),
        }
    }

    /// Spreads the users over the enabled tx queues: user u sends on the (u mod n)-th.
    fn remap(&self) {
        let on: Vec<u16> = (0..self.tx_on.len())
            .filter(|&q| self.tx_on[q].load(Ordering::Relaxed))
            .map(|q| q as u16)
            .collect();
        for (u, slot) in self.tx_of.iter().enumerate() {
            let q = if on.is_empty() {
                NO_QUEUE
            } else {
                on[u % on.len()]
            };
            slot.store(q, Ordering::Release);
        }
    }

    fn enabled(flags: &[AtomicBool]) -> Vec<u16> {
        (0..flags.len())
            .filter(|&q| flags[q].load(Ordering::Relaxed))
            .map(|q| q as u16)
            .collect()
    }
}

/// The queues a gated port's peer has enabled now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnabledQueues {
    /// Rx queues polled.
    pub rx: Vec<u16>,
    /// Tx queues sent on.
    pub tx: Vec<u16>,
}

/// What a vhost-user guest negotiated (`rte_vhost_get_negotiated_features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhostGuest {
    /// The virtio feature bits agreed.
    pub features: u64,
    /// Virtqueues the guest set up (two per queue pair).
    pub vrings: u16,
}

/// A queue a vhost-user guest enabled or disabled (`rte_eth_vhost_get_queue_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEvent {
    /// The port's queue index.
    pub queue: u16,
    /// An rx queue of the port (the guest's transmit side); else a tx queue.
    pub rx: bool,
    /// Enabled, or disabled.
    pub enable: bool,
}

/// A probed ethdev port, owned by the control thread. Workers poll it through [`RxQueue`] and
/// [`TxQueue`] handles; it can be stopped and closed only when no handle is left.
pub struct Port {
    inner: Arc<PortInner>,
    devargs: String,
    device: *mut sys::rte_device,
    configured: Option<PortConfig>,
    started: bool,
    closed: bool,
    queues_handed_out: bool,
    // Rx queues hold mbufs of this pool: keep it alive until the port is closed.
    pool: Option<Arc<Mempool>>,
    // Registered for link and queue events until closed.
    watch: Option<Box<Watch>>,
    // The peer enables the queues (vhost-user): see Gates.
    gated: bool,
    gates: Option<Arc<Gates>>,
    // The MTU the switch gave the port (the device's, or the one it enforces itself).
    mtu: Option<u16>,
}

// SAFETY: the raw rte_device pointer is only passed back to rte_dev_remove from the control
// thread that owns the Port; ethdev control calls are made from one thread at a time (&mut self).
unsafe impl Send for Port {}

impl Port {
    /// Creates the device named by `devargs` (hot-plug probe: a vdev such as
    /// `net_tap0,iface=vm1` or a PCI address) and returns its port.
    pub fn probe(devargs: &str) -> Result<Port, DpdkError> {
        let c = CString::new(devargs).map_err(|_| DpdkError {
            op: "rte_dev_probe".into(),
            errno: super::EINVAL,
            message: "devargs contain a NUL byte".into(),
        })?;
        // SAFETY: a valid C string; DPDK parses and copies it.
        let ret = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if ret < 0 {
            return Err(DpdkError::from_ret(
                format!("rte_dev_probe({devargs})"),
                ret,
            ));
        }
        let id = find_port(&c, devargs).ok_or_else(|| DpdkError {
            op: format!("rte_dev_probe({devargs})"),
            errno: super::ENODEV,
            message: "the device was probed but created no ethdev port".into(),
        })?;
        let mut port = Port {
            inner: Arc::new(PortInner { id }),
            devargs: devargs.to_owned(),
            device: std::ptr::null_mut(),
            configured: None,
            started: false,
            closed: false,
            queues_handed_out: false,
            pool: None,
            watch: None,
            gated: false,
            gates: None,
            mtu: None,
        };
        port.device = port.raw_info()?.device;
        Ok(port)
    }

    /// Posts the port's link and queue-state events to `tx` from now until it is closed.
    /// Call before `configure`, so that no event of a peer that connects at once is missed.
    pub fn watch_events(&mut self, tx: EventSender) -> Result<(), DpdkError> {
        if self.watch.is_none() {
            self.watch = Some(events::watch(self.id(), tx)?);
        }
        Ok(())
    }

    /// Makes the port's queues gated: closed until `set_queue_enabled` opens them, as its peer
    /// enables them (a vhost-user guest). Call before `queues`.
    pub fn gate_queues(&mut self) {
        self.gated = true;
    }

    /// Opens or closes one queue of a gated port (nothing for another port).
    pub fn set_queue_enabled(&self, rx: bool, queue: u16, enable: bool) {
        let Some(g) = &self.gates else { return };
        let flags = if rx { &g.rx_on } else { &g.tx_on };
        if let Some(f) = flags.get(usize::from(queue)) {
            f.store(enable, Ordering::Release);
        }
        if !rx {
            g.remap();
        }
    }

    /// Closes every queue of a gated port (its peer went away).
    pub fn close_queues(&self) {
        let Some(g) = &self.gates else { return };
        for f in g.rx_on.iter().chain(g.tx_on.iter()) {
            f.store(false, Ordering::Release);
        }
        g.remap();
    }

    /// The queues open now, for a gated port.
    pub fn enabled_queues(&self) -> Option<EnabledQueues> {
        let g = self.gates.as_ref()?;
        Some(EnabledQueues {
            rx: Gates::enabled(&g.rx_on),
            tx: Gates::enabled(&g.tx_on),
        })
    }

    /// Takes the queue changes a vhost-user guest made since the last call, oldest first
    /// (empty for another driver).
    pub fn vhost_queue_events(&self) -> Vec<QueueEvent> {
        let mut out = Vec::new();
        loop {
            let mut ev = sys::rte_eth_vhost_queue_event::default();
            // SAFETY: a valid port id and a writable event; net_vhost answers -1 for a port
            // that is not its own or when no change is left.
            if unsafe { sys::rte_eth_vhost_get_queue_event(self.id().0, &mut ev) } != 0 {
                return out;
            }
            out.push(QueueEvent {
                queue: ev.queue_id,
                rx: ev.rx,
                enable: ev.enable,
            });
        }
    }

    /// What the vhost-user guest on this port negotiated, while one is connected.
    pub fn vhost_guest(&self) -> Option<VhostGuest> {
        // SAFETY: a valid port id; -1 for a port with no guest (or not net_vhost).
        let vid = unsafe { sys::rte_eth_vhost_get_vid_from_port_id(self.id().0) };
        if vid < 0 {
            return None;
        }
        let mut features = 0u64;
        // SAFETY: vid came from net_vhost just now; features is writable. A guest gone in
        // between is answered with an error, not a crash.
        if unsafe { sys::rte_vhost_get_negotiated_features(vid, &mut features) } != 0 {
            return None;
        }
        // SAFETY: as above; 0 for a device gone.
        let vrings = unsafe { sys::rte_vhost_get_vring_num(vid) };
        Some(VhostGuest { features, vrings })
    }

    /// The ethdev port id.
    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// The devargs the port was created from.
    pub fn devargs(&self) -> &str {
        &self.devargs
    }

    fn raw_info(&self) -> Result<sys::rte_eth_dev_info, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: the port id is valid (probed, not closed); info is a writable struct.
        let ret = unsafe { sys::rte_eth_dev_info_get(self.id().0, &mut info) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_eth_dev_info_get(port {})", self.id()),
                ret,
            ));
        }
        Ok(info)
    }

    /// What the device can do.
    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        let info = self.raw_info()?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name points to the driver's static NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // As ethdev's eth_dev_validate_mtu: the frame's overhead is what max_rx_pktlen has
        // beyond max_mtu, or an Ethernet header and FCS when the driver gives no max_mtu.
        let overhead = if info.max_mtu != u16::MAX && info.max_rx_pktlen > u32::from(info.max_mtu) {
            info.max_rx_pktlen - u32::from(info.max_mtu)
        } else {
            18
        };
        let max = u32::from(info.max_mtu).min(info.max_rx_pktlen.saturating_sub(overhead));
        let min = u32::from(info.min_mtu).max(64u32.saturating_sub(overhead));
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            if_index: info.if_index,
            mtu_range: min..=max,
            rx_scatter: info.rx_offload_capa & RX_OFFLOAD_SCATTER != 0,
            tx_multi_seg: info.tx_offload_capa & TX_OFFLOAD_MULTI_SEGS != 0,
        })
    }

    /// Sets up the queues (rx queues fill from `pool`), spreading rx over the queues by RSS
    /// when there is more than one and the device can hash. Call once, before `start`.
    pub fn configure(
        &mut self,
        cfg: PortConfig,
        pool: Arc<Mempool>,
    ) -> Result<PortConfig, DpdkError> {
        let id = self.id().0;
        let info = self.raw_info()?;
        let mut conf = sys::rte_eth_conf::default();
        let rss_hf = info.flow_type_rss_offloads & RSS_IP_TCP_UDP;
        if cfg.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        if cfg.rx_scatter && info.rx_offload_capa & RX_OFFLOAD_SCATTER != 0 {
            conf.rxmode.offloads |= RX_OFFLOAD_SCATTER;
        }
        if cfg.tx_multi_seg && info.tx_offload_capa & TX_OFFLOAD_MULTI_SEGS != 0 {
            conf.txmode.offloads |= TX_OFFLOAD_MULTI_SEGS;
        }
        // SAFETY: valid port id, stopped; conf is a fully initialised struct DPDK copies.
        let ret = unsafe { sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!(
                    "rte_eth_dev_configure(port {id}, {} rx, {} tx queues)",
                    cfg.rx_queues, cfg.tx_queues
                ),
                ret,
            ));
        }
        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port id; the two counters are writable and updated in place.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {id})"),
                ret,
            ));
        }
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        // SOCKET_ID_ANY (-1) when the device has no NUMA affinity.
        let socket = u32::try_from(socket).unwrap_or(u32::MAX);
        for q in 0..cfg.rx_queues {
            // SAFETY: configured port, queue index below the configured count; a null rxconf
            // means the driver's defaults; the pool outlives the port (held in self.pool).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(id, q, rx_desc, socket, std::ptr::null(), pool.as_ptr())
            };
            if ret != 0 {
                return Err(DpdkError::from_ret(
                    format!("rte_eth_rx_queue_setup(port {id}, queue {q})"),
                    ret,
                ));
            }
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured port, queue index below the configured count, default txconf.
            let ret =
                unsafe { sys::rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null()) };
            if ret != 0 {
                return Err(DpdkError::from_ret(
                    format!("rte_eth_tx_queue_setup(port {id}, queue {q})"),
                    ret,
                ));
            }
        }
        self.pool = Some(pool);
        let applied = PortConfig {
            rx_desc,
            tx_desc,
            ..cfg
        };
        self.configured = Some(applied);
        Ok(applied)
    }

    /// Starts the device and turns promiscuous mode on (a switch port receives every frame).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        let id = self.id().0;
        // SAFETY: valid, configured port.
        let ret = unsafe { sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_eth_dev_start(port {id})"),
                ret,
            ));
        }
        self.started = true;
        // SAFETY: valid, started port. Devices that are always promiscuous answer -ENOTSUP,
        // which is harmless for a switch port.
        let ret = unsafe { sys::rte_eth_promiscuous_enable(id) };
        if ret != 0 && ret != -super::ENOTSUP {
            return Err(DpdkError::from_ret(
                format!("rte_eth_promiscuous_enable(port {id})"),
                ret,
            ));
        }
        Ok(())
    }

    /// Hands out one handle per rx queue, once: each queue gets exactly one poller.
    /// `users` tx handles come back too, user i on queue i mod tx_queues; where users share a
    /// queue (the device has fewer tx queues than workers) their handles take a lock per flush.
    pub fn queues(&mut self, tx_users: usize) -> Result<(Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        let cfg = self.configured.ok_or_else(|| DpdkError {
            op: format!("queues(port {})", self.id()),
            errno: super::EINVAL,
            message: "the port is not configured".into(),
        })?;
        if self.queues_handed_out {
            return Err(DpdkError {
                op: format!("queues(port {})", self.id()),
                errno: super::EBUSY,
                message: "the queues were already handed out".into(),
            });
        }
        let pool = self.pool.clone().ok_or_else(|| DpdkError {
            op: format!("queues(port {})", self.id()),
            errno: super::EINVAL,
            message: "the port has no mempool".into(),
        })?;
        self.queues_handed_out = true;
        let gates = self
            .gated
            .then(|| Arc::new(Gates::new(cfg.rx_queues, cfg.tx_queues, tx_users)));
        self.gates = gates.clone();
        let rx = (0..cfg.rx_queues)
            .map(|q| RxQueue {
                port: Arc::clone(&self.inner),
                queue: q,
                gates: gates.clone(),
                _pool: Arc::clone(&pool),
            })
            .collect();
        let ntx = usize::from(cfg.tx_queues.max(1));
        let shared = tx_users > ntx;
        let max_frame = self
            .mtu
            .or_else(|| self.mtu())
            .map_or(u32::MAX, |m| u32::from(m) + FRAME_OVERHEAD);
        let locks: Vec<Arc<AtomicBool>> =
            (0..ntx).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let tx = (0..tx_users)
            .map(|u| TxQueue {
                port: Arc::clone(&self.inner),
                queue: u16::try_from(u % ntx).expect("queue index fits u16"),
                lock: shared.then(|| Arc::clone(&locks[u % ntx])),
                max_frame,
                chains: cfg.tx_multi_seg,
                gates: gates.clone().map(|g| (g, u)),
                _pool: Arc::clone(&pool),
            })
            .collect();
        Ok((rx, tx))
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Link {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port id; l is writable.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id().0, &mut l) };
        if ret != 0 {
            return Link {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            };
        }
        Link {
            up: l.link_status() != 0,
            speed_mbps: if l.link_speed == sys::RTE_ETH_SPEED_NUM_UNKNOWN {
                0
            } else {
                l.link_speed
            },
            full_duplex: l.link_duplex() != 0,
        }
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port id; a is writable.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id().0, &mut a) };
        if ret != 0 {
            return [0; 6];
        }
        a.addr_bytes
    }

    /// The device's MTU (`rte_eth_dev_get_mtu`): the largest payload it carries, in bytes.
    pub fn mtu(&self) -> Option<u16> {
        let mut mtu = 0u16;
        // SAFETY: valid port id; mtu is writable.
        let ret = unsafe { sys::rte_eth_dev_get_mtu(self.id().0, &mut mtu) };
        (ret == 0).then_some(mtu)
    }

    /// Sets the device's MTU (`rte_eth_dev_set_mtu`; the port must be configured). A driver
    /// without an MTU operation answers that the switch must keep it ([`MtuKeeper::Switch`]);
    /// a refusal is an error.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<MtuKeeper, DpdkError> {
        let id = self.id().0;
        // SAFETY: a valid, configured port; ethdev validates the value against the driver's
        // limits before calling the driver.
        let ret = unsafe { sys::rte_eth_dev_set_mtu(id, mtu) };
        match ret {
            0 => {
                self.mtu = Some(mtu);
                Ok(MtuKeeper::Device)
            }
            r if r == -super::ENOTSUP => {
                self.mtu = Some(mtu);
                Ok(MtuKeeper::Switch)
            }
            r => Err(DpdkError::from_ret(
                format!("rte_eth_dev_set_mtu(port {id}, {mtu})"),
                r,
            )),
        }
    }

    /// The driver's extended counters (`rte_eth_xstats_get`), by name, in the driver's order.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let id = self.id().0;
        let err = |ret| DpdkError::from_ret(format!("rte_eth_xstats_get(port {id})"), ret);
        // SAFETY: valid port id; a null array of size 0 asks for the count only.
        let n = unsafe { sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        let Ok(count) = u32::try_from(n) else {
            return Err(err(n));
        };
        let mut names = vec![sys::rte_eth_xstat_name::default(); count as usize];
        let mut values = vec![sys::rte_eth_xstat::default(); count as usize];
        // SAFETY: both arrays hold `count` writable elements, the size passed.
        let got = unsafe { sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), count) };
        if got < 0 || got as u32 > count {
            return Err(err(got));
        }
        // SAFETY: as above.
        let vals = unsafe { sys::rte_eth_xstats_get(id, values.as_mut_ptr(), count) };
        if vals < 0 || vals as u32 > count {
            return Err(err(vals));
        }
        let n = (got.min(vals)) as usize;
        Ok(values[..n]
            .iter()
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: the driver writes NUL-terminated names of at most 64 bytes.
                let text = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((text.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }

    /// The device's counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id; s is writable. Reading stats is safe alongside rx/tx bursts.
        let ret = unsafe { sys::rte_eth_stats_get(self.id().0, &mut s) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_eth_stats_get(port {})", self.id()),
                ret,
            ));
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    fn handles_alive(&mut self) -> bool {
        // get_mut synchronises with the handles' drops (it is an acquire on the count), and
        // handles are only made by &mut self methods, so a port found free stays free.
        Arc::get_mut(&mut self.inner).is_none()
    }

    /// Stops and closes the device and detaches it. Refused (EBUSY) while a queue handle is
    /// alive; done at most once (dropping the port closes it too).
    pub fn close(&mut self) -> Result<(), DpdkError> {
        if self.closed {
            return Ok(());
        }
        if self.handles_alive() {
            return Err(DpdkError {
                op: format!("close(port {})", self.id()),
                errno: super::EBUSY,
                message: "a worker still holds queues of this port".into(),
            });
        }
        let id = self.id().0;
        self.closed = true;
        if let Some(w) = self.watch.take() {
            events::unwatch(w);
        }
        if self.started {
            // SAFETY: no queue handle is left, so nothing polls the port while it stops.
            let ret = unsafe { sys::rte_eth_dev_stop(id) };
            if ret != 0 {
                log::warn!(
                    "rte_eth_dev_stop(port {id}): {}",
                    DpdkError::from_ret("", ret).message
                );
            }
            self.started = false;
        }
        // SAFETY: the port is stopped and no handle refers to it; after this call the id is dead.
        let ret = unsafe { sys::rte_eth_dev_close(id) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_eth_dev_close(port {id})"),
                ret,
            ));
        }
        if !self.device.is_null() {
            // SAFETY: the rte_device this port was probed from; its ethdev is closed, so the
            // driver's remove only releases the device (hot-unplug), making the name reusable.
            let ret = unsafe { sys::rte_dev_remove(self.device) };
            if ret != 0 && ret != -super::ENOENT {
                log::debug!(
                    "rte_dev_remove({}): {}",
                    self.devargs,
                    DpdkError::from_ret("", ret).message
                );
            }
        }
        // Mbufs held by the rx rings went back to the pool at close: the pool may go now.
        self.pool = None;
        Ok(())
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::error!("closing port {} ({}): {e}", self.id(), self.devargs);
        }
    }
}

/// Bytes a frame has beyond its MTU's payload: an Ethernet header and two VLAN tags.
const FRAME_OVERHEAD: u32 = 14 + 2 * 4;

/// IPv4/IPv6 address and TCP/UDP port hash types (RTE_ETH_RSS_IP | _TCP | _UDP).
const RSS_IP_TCP_UDP: u64 = {
    const fn bit(n: u32) -> u64 {
        1u64 << n
    }
    // IPV4, FRAG_IPV4, NONFRAG_IPV4_TCP, NONFRAG_IPV4_UDP, NONFRAG_IPV4_OTHER, IPV6, FRAG_IPV6,
    // NONFRAG_IPV6_TCP, NONFRAG_IPV6_UDP, NONFRAG_IPV6_OTHER, IPV6_EX, IPV6_TCP_EX, IPV6_UDP_EX
    bit(2)
        | bit(3)
        | bit(4)
        | bit(5)
        | bit(7)
        | bit(8)
        | bit(9)
        | bit(10)
        | bit(11)
        | bit(13)
        | bit(15)
        | bit(16)
        | bit(17)
};

fn find_port(devargs_c: &CStr, devargs: &str) -> Option<PortId> {
    let mut iter = sys::rte_dev_iterator::default();
    // SAFETY: iter is writable; devargs_c is a valid C string that outlives the iteration;
    // the iterator is cleaned up before returning on every path that initialised it.
    unsafe {
        if sys::rte_eth_iterator_init(&mut iter, devargs_c.as_ptr()) == 0 {
            let id = sys::rte_eth_iterator_next(&mut iter);
            if usize::from(id) < super::MAX_PORTS {
                sys::rte_eth_iterator_cleanup(&mut iter);
                return Some(PortId(id));
            }
            // The iterator cleans itself up when it reaches the end.
        }
    }
    // Fall back to the device name: the devargs up to the first comma.
    let name = devargs.split(',').next().unwrap_or(devargs);
    let cname = CString::new(name).ok()?;
    let mut id: u16 = 0;
    // SAFETY: valid C string and writable id.
    let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    (ret == 0).then_some(PortId(id))
}

/// The receive side of one queue of a port: exactly one exists per queue.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
    gates: Option<Arc<Gates>>,
    // The queue's ring holds mbufs of this pool: it must outlive the handle.
    _pool: Arc<Mempool>,
}

impl RxQueue {
    /// The port this queue belongs to.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// False while the port's peer has this queue disabled (a gated port): nothing to poll.
    #[inline(always)]
    pub fn is_enabled(&self) -> bool {
        self.gates.as_ref().is_none_or(|g| {
            g.rx_on
                .get(usize::from(self.queue))
                .is_some_and(|f| f.load(Ordering::Relaxed))
        })
    }

    /// Receives up to [`BURST_SIZE`] packets into the empty `burst`; returns how many.
    #[inline(always)]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        // SAFETY: this handle is the queue's only poller (&mut self, one handle per queue); the
        // port is started and cannot be stopped while the handle lives; the burst has room for
        // BURST_SIZE pointers, and the PMD writes exactly the returned count of valid mbufs.
        let n = unsafe {
            sys::rte_eth_rx_burst(
                self.port.id.0,
                self.queue,
                burst.fill_ptr(),
                BURST_SIZE as u16,
            )
        };
        let n = usize::from(n);
        // SAFETY: the PMD wrote n valid mbuf pointers, now owned by the burst.
        unsafe { burst.set_len(n) };
        n
    }
}

/// The transmit side of a queue for one worker. Where workers share a tx queue each flush takes
/// the queue's lock; otherwise the worker owns the queue and sends without one.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
    lock: Option<Arc<AtomicBool>>,
    max_frame: u32,
    chains: bool,
    // A gated port's queue map, and which user (worker) this handle is.
    gates: Option<(Arc<Gates>, usize)>,
    // Sent mbufs may sit in the tx ring until the device is done with them.
    _pool: Arc<Mempool>,
}

impl TxQueue {
    /// The port this queue belongs to.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// True when the queue is shared with other workers (a lock per flush).
    pub fn is_shared(&self) -> bool {
        self.lock.is_some()
    }

    /// The largest frame (bytes, without FCS) the device sends: its MTU, an Ethernet header
    /// and two VLAN tags (u32::MAX when it has no MTU).
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// The device sends chained (multi-segment) frames.
    #[inline(always)]
    pub fn sends_chains(&self) -> bool {
        self.chains
    }

    /// Offers the batch to the queue once; the frames it took leave the batch and the rest stay,
    /// in order, to be offered again (a generator holds its rate instead of dropping).
    /// Returns how many were sent; 0 on a gated port whose peer enabled no queue for this user.
    #[inline]
    pub fn try_send(&mut self, batch: &mut TxBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let Some(claim) = self.claim() else {
            return 0;
        };
        let n = u16::try_from(batch.len()).expect("a batch holds at most BURST_SIZE packets");
        // SAFETY: as in `flush_reporting`: started port, queue owned or locked (the claim),
        // `n` valid mbufs, of which DPDK takes the first `sent` and `forget_sent` forgets them.
        let sent =
            unsafe { sys::rte_eth_tx_burst(self.port.id.0, claim.queue, batch.as_mut_ptr(), n) };
        batch.forget_sent(usize::from(sent))
    }

    /// The queue to send on now, locked while the claim lives where users share it; None on a
    /// gated port whose peer enables no queue for this user. A gated port's queue is the one
    /// its peer enables for this user now, under that queue's lock (users may share it, and
    /// the map changes while they send).
    #[inline(always)]
    fn claim(&self) -> Option<QueueClaim<'_>> {
        let (queue, lock) = match &self.gates {
            None => (self.queue, self.lock.as_deref()),
            Some((g, user)) => {
                let q = g.tx_of[*user].load(Ordering::Acquire);
                if q == NO_QUEUE {
                    return None;
                }
                // One user alone never shares a queue.
                let shared = g.tx_of.len() > 1;
                (q, g.locks.get(usize::from(q)).filter(|_| shared))
            }
        };
        if let Some(l) = lock {
            while l
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
        }
        Some(QueueClaim { queue, lock })
    }

    /// Sends the batch, emptying it; packets the queue did not take are freed and counted.
    /// A driver that refuses a frame longer than its MTU stops there (net_tap does), so a
    /// refused frame longer than [`TxQueue::max_frame`] is counted as too big and the frames
    /// behind it are offered again.
    #[inline]
    pub fn flush(&mut self, batch: &mut TxBatch) -> TxOutcome {
        self.flush_reporting(batch, &mut |_, _| {})
    }

    /// [`TxQueue::flush`], showing the frames it drops to `on_drop` (with why) before it
    /// frees them; it is called only when a frame is dropped.
    #[inline]
    pub fn flush_reporting(
        &mut self,
        batch: &mut TxBatch,
        on_drop: &mut impl FnMut(&[Mbuf], TxDrop),
    ) -> TxOutcome {
        let mut out = TxOutcome::default();
        if batch.is_empty() {
            return out;
        }
        let Some(claim) = self.claim() else {
            on_drop(batch.as_slice(), TxDrop::NoQueue);
            out.no_queue = batch.discard();
            return out;
        };
        let queue = claim.queue;
        loop {
            let n = u16::try_from(batch.len()).expect("a batch holds at most BURST_SIZE packets");
            // SAFETY: the port is started and cannot stop while this handle lives; the queue is
            // used by this worker alone (owned, or under its lock); the batch holds `n` valid
            // mbufs and DPDK takes ownership of the first `sent`, which `forget_sent` forgets.
            let sent =
                unsafe { sys::rte_eth_tx_burst(self.port.id.0, queue, batch.as_mut_ptr(), n) };
            out.sent += batch.forget_sent(usize::from(sent));
            match batch.first() {
                None => break,
                Some(m) if m.pkt_len() > self.max_frame => {
                    on_drop(std::slice::from_ref(m), TxDrop::TooBig);
                    batch.drop_first();
                    out.too_big += 1;
                }
                Some(_) => {
                    on_drop(batch.as_slice(), TxDrop::Refused);
                    out.refused += batch.discard();
                    break;
                }
            }
        }
        // The claim (and the queue's lock, if any) ends here.
        drop(claim);
        out
    }
}

/// A tx queue held for one send: where users share the queue, its lock is taken for as long
/// as the claim lives and released when it drops.
struct QueueClaim<'a> {
    queue: u16,
    lock: Option<&'a AtomicBool>,
}

impl Drop for QueueClaim<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(l) = self.lock {
            l.store(false, Ordering::Release);
        }
    }
}

/// Why [`TxQueue::flush_reporting`] dropped frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDrop {
    /// Refused, and longer than the device sends ([`TxOutcome::too_big`]).
    TooBig,
    /// Not taken: the queue was full ([`TxOutcome::refused`]).
    Refused,
    /// No queue enabled by the port's peer ([`TxOutcome::no_queue`]).
    NoQueue,
}

/// What became of a flushed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames the queue took.
    pub sent: usize,
    /// Frames refused and longer than the device sends (see [`TxQueue::max_frame`]).
    pub too_big: usize,
    /// Other frames the queue did not take (full), freed.
    pub refused: usize,
    /// Frames with no queue to go to: the port's peer has none enabled (freed).
    pub no_queue: usize,
}
