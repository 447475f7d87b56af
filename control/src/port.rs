//! A switch port's bring-up: its device probed from devargs, its queue layout chosen for the
//! workers, configured and started on a pool; and what the switch keeps of a started port.
//! Used at start and by runtime changes alike.

use std::sync::Arc;

use dataplane::dpdk::{DpdkError, EventSender, Mempool, Port, PortConfig, PortInfo, VhostGuest};
use dataplane::stats::{Counters, PortCounter};

use crate::config::PortSpec;
use crate::vhost::VhostUser;

/// Per-lcore mbuf cache of a pool.
pub const MEMPOOL_CACHE: u32 = 256;

/// Why a port could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A port's device could not be created.
    #[error("port {name:?} (devargs {devargs:?}): DPDK could not create the device: {source}. Allowed: a virtual device such as net_tap0,iface=vm1 or net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap, or the PCI address of a PF/VF bound to vfio-pci and allowed with -a")]
    Probe {
        /// The port.
        name: String,
        /// Its devargs.
        devargs: String,
        /// DPDK's error.
        source: DpdkError,
    },
    /// A port could not be configured or started.
    #[error("port {name:?}: {source}")]
    Setup {
        /// The port.
        name: String,
        /// DPDK's error.
        source: DpdkError,
    },
    /// A VM port's socket could not be prepared.
    #[error("port {name:?}: vhost_user.path: {message}")]
    Vhost {
        /// The port.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An mbuf pool could not be created.
    #[error("creating the mbuf pool: {0}. Are there enough hugepages (scripts/setup.sh), or is bridge.mbufs too large?")]
    Mempool(DpdkError),
}

/// A started port and what the switch knows of it.
pub struct SwitchPort {
    /// Its configuration.
    pub spec: PortSpec,
    /// The DPDK port.
    pub port: Port,
    /// Its PMD.
    pub driver: String,
    /// Queue layout applied.
    pub queues: PortConfig,
    /// The workers' counters for its port id when it was added (a port id can be reused after
    /// a port is removed): its figures are the counters less these.
    pub base: Counters,
    /// The mbuf pool of a port added at runtime (ports of the start share the switch's pool).
    pub own_pool: Option<Arc<Mempool>>,
    /// A VM port (net_vhost): its socket, and its guest while one is connected.
    pub vm: Option<VmPort>,
}

/// What the switch knows of a VM port's guest.
pub struct VmPort {
    /// The socket.
    pub socket: VhostUser,
    /// The guest connected now, and what it negotiated (None: no guest, link down).
    pub guest: Option<VhostGuest>,
}

impl SwitchPort {
    /// Its port id.
    pub fn id(&self) -> u16 {
        self.port.id().0
    }

    /// A per-port counter, since the port was added.
    pub fn counter(&self, totals: &Counters, c: PortCounter) -> u64 {
        let idx = self.port.id().index();
        totals.port(idx, c).saturating_sub(self.base.port(idx, c))
    }
}

/// A probed device and the queue layout chosen for it, not yet configured.
pub struct Probed {
    /// The port's configuration.
    pub spec: PortSpec,
    /// The device.
    pub port: Port,
    /// What the driver says it can do.
    pub info: PortInfo,
    /// The queues it will get.
    pub queues: PortConfig,
}

impl Probed {
    /// Creates the device of `spec` and chooses its queues for `nworkers` workers: one rx
    /// queue per worker unless the port says otherwise, one tx queue per worker, as far as the
    /// device allows. A VM port (net_vhost) gets every queue pair it offers, opened as its
    /// guest enables them, and posts its link and queue events to `events`.
    pub fn new(spec: PortSpec, nworkers: usize, events: &EventSender) -> Result<Probed, PortError> {
        let workers_u16 = u16::try_from(nworkers).unwrap_or(u16::MAX);
        let vhost = spec.vhost();
        if let Some(v) = &vhost {
            v.clear_stale_socket().map_err(|message| PortError::Vhost {
                name: spec.name.clone(),
                message,
            })?;
        }
        let mut port = Port::probe(&spec.devargs).map_err(|source| PortError::Probe {
            name: spec.name.clone(),
            devargs: spec.devargs.clone(),
            source,
        })?;
        let info = port.info().map_err(|source| PortError::Setup {
            name: spec.name.clone(),
            source,
        })?;
        if info.driver == "net_vhost" {
            // The guest's queue pairs: all polled (it may use any it enables) and sent on.
            port.gate_queues();
            port.watch_events(events.clone())
                .map_err(|source| PortError::Setup {
                    name: spec.name.clone(),
                    source,
                })?;
            let queues = PortConfig {
                rx_queues: spec
                    .rx_queues
                    .unwrap_or(info.max_rx_queues)
                    .min(info.max_rx_queues)
                    .max(1),
                tx_queues: info.max_tx_queues.max(1),
                rx_desc: spec.rx_desc,
                tx_desc: spec.tx_desc,
            };
            return Ok(Probed {
                spec,
                port,
                info,
                queues,
            });
        }
        let mut txq = workers_u16.min(info.max_tx_queues).max(1);
        let mut rxq = spec
            .rx_queues
            .unwrap_or(workers_u16)
            .min(info.max_rx_queues)
            .max(1);
        if info.driver == "net_tap" {
            // net_tap refuses different rx and tx queue counts.
            let q = rxq
                .max(txq)
                .min(info.max_rx_queues.min(info.max_tx_queues))
                .max(1);
            (rxq, txq) = (q, q);
        }
        let queues = PortConfig {
            rx_queues: rxq,
            tx_queues: txq,
            rx_desc: spec.rx_desc,
            tx_desc: spec.tx_desc,
        };
        Ok(Probed {
            spec,
            port,
            info,
            queues,
        })
    }

    /// Mbufs the port needs: its descriptors and what a pcap port preloads.
    pub fn mbufs(&self) -> u64 {
        let q = &self.queues;
        u64::from(q.rx_queues) * u64::from(q.rx_desc)
            + u64::from(q.tx_queues) * u64::from(q.tx_desc)
            + crate::pcap::preloaded_frames(&self.spec.devargs)
    }

    /// Configures and starts the port on `pool`.
    pub fn start(self, pool: &Arc<Mempool>) -> Result<SwitchPort, PortError> {
        let Probed {
            spec,
            mut port,
            info,
            queues,
        } = self;
        let setup = |e| PortError::Setup {
            name: spec.name.clone(),
            source: e,
        };
        let applied = port.configure(queues, Arc::clone(pool)).map_err(setup)?;
        // A server-mode VM port's socket exists now: its permissions, for QEMU.
        let vm = match spec.vhost().filter(|_| info.driver == "net_vhost") {
            Some(socket) => {
                socket.secure_socket().map_err(|message| PortError::Vhost {
                    name: spec.name.clone(),
                    message,
                })?;
                Some(VmPort {
                    socket,
                    guest: None,
                })
            }
            None => None,
        };
        port.start().map_err(setup)?;
        let link = port.link();
        log::info!(
            "port {} ({}, port id {}, {}): {} rx / {} tx queues, link {} {} Mbit/s, mac {}",
            spec.name,
            spec.devargs,
            port.id(),
            info.driver,
            applied.rx_queues,
            applied.tx_queues,
            if link.up { "up" } else { "down" },
            link.speed_mbps,
            dataplane::packet::MacAddr(port.mac())
        );
        Ok(SwitchPort {
            spec,
            port,
            driver: info.driver,
            queues: applied,
            base: Counters::default(),
            own_pool: None,
            vm,
        })
    }
}
