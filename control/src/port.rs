//! A switch port's bring-up: its device probed from devargs, its queue layout chosen for the
//! workers, configured and started on a pool; and what the switch keeps of a started port.
//! Used at start and by runtime changes alike.

use std::sync::Arc;

use dataplane::dpdk::{
    DpdkError, EventSender, Mempool, MtuKeeper, Port, PortConfig, PortInfo, PortStats, VhostGuest,
    DEFAULT_DATA_BYTES,
};
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
    /// The port's MTU is more than its device takes.
    #[error("port {name:?} ({driver}): mtu {mtu} is more than the driver takes: {limit}. Give the port (or the bridge) a smaller mtu")]
    Mtu {
        /// The port.
        name: String,
        /// Its PMD.
        driver: String,
        /// The MTU asked for.
        mtu: u32,
        /// What the driver allows.
        limit: String,
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
    /// What the driver says the device can do.
    pub info: PortInfo,
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

    /// Its interface counters (RFC 2863), from the workers' `totals` and the device's `dev`.
    pub fn if_counters(&self, totals: &Counters, dev: &PortStats) -> IfCounters {
        let count = |c| self.counter(totals, c);
        IfCounters::new(
            [
                count(PortCounter::RxPackets),
                count(PortCounter::RxDropped),
                count(PortCounter::InMulticast),
                count(PortCounter::InBroadcast),
            ],
            [
                count(PortCounter::TxPackets),
                count(PortCounter::TxDropped),
                count(PortCounter::OutMulticast),
                count(PortCounter::OutBroadcast),
            ],
            dev,
        )
    }
}

/// A port's interface counters as RFC 2863 (IF-MIB) defines them, and sFlow's generic interface
/// record carries them. Frames in: each one received is delivered (unicast, multicast or
/// broadcast), discarded, or in error. Frames out: each one the switch gave the port to send
/// is counted by its destination, sent or not; those not sent are also discards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IfCounters {
    /// Bytes received (the device's count).
    pub in_octets: u64,
    /// Frames received and forwarded to an individual address.
    pub in_ucast: u64,
    /// Frames received and forwarded to a multicast group.
    pub in_multicast: u64,
    /// Frames received and forwarded to the broadcast address.
    pub in_broadcast: u64,
    /// Frames received and dropped without error: by the device for want of a descriptor or
    /// an mbuf, and by the switch for every reason it counts.
    pub in_discards: u64,
    /// Frames the device received in error.
    pub in_errors: u64,
    /// Bytes sent (the device's count).
    pub out_octets: u64,
    /// Frames to an individual address given the port to send.
    pub out_ucast: u64,
    /// Frames to a multicast group given the port to send.
    pub out_multicast: u64,
    /// Frames to the broadcast address given the port to send.
    pub out_broadcast: u64,
    /// Frames given the port that it did not send (egress drops of every reason).
    pub out_discards: u64,
    /// Frames the device failed to send.
    pub out_errors: u64,
}

impl IfCounters {
    /// From the switch's counts `[received, dropped, multicast, broadcast]` in and
    /// `[sent, dropped, multicast, broadcast]` out, and the device's. Unicast is what is left:
    /// the workers count only group-addressed frames, which take the full path anyway.
    pub fn new(rx: [u64; 4], tx: [u64; 4], dev: &PortStats) -> IfCounters {
        let [received, rx_dropped, in_multicast, in_broadcast] = rx;
        let [sent, tx_dropped, out_multicast, out_broadcast] = tx;
        IfCounters {
            in_octets: dev.ibytes,
            // Counters are published together but read per worker: never below zero.
            in_ucast: received
                .saturating_sub(rx_dropped)
                .saturating_sub(in_multicast + in_broadcast),
            in_multicast,
            in_broadcast,
            in_discards: dev.imissed + dev.rx_nombuf + rx_dropped,
            in_errors: dev.ierrors,
            out_octets: dev.obytes,
            out_ucast: (sent + tx_dropped).saturating_sub(out_multicast + out_broadcast),
            out_multicast,
            out_broadcast,
            out_discards: tx_dropped,
            out_errors: dev.oerrors,
        }
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
    /// Bytes of frame one receive buffer must hold, beyond a default 2 KiB buffer: a device
    /// that takes a whole frame into one buffer (net_af_packet) gets a pool of its own.
    pub rx_buffer: Option<u16>,
}

/// Bytes of Ethernet header and two VLAN tags around an MTU's payload.
const FRAME_OVERHEAD: u32 = 22;

/// Whether the port's device, as `info` describes it, can take `spec`'s MTU: what ethdev lets
/// the driver take (drivers with no MTU operation are checked against it too: the switch keeps
/// their MTU, within what they can receive); net_af_packet by its framesz.
pub fn check_mtu(spec: &PortSpec, info: &PortInfo) -> Result<(), PortError> {
    let too_big = |limit: String| PortError::Mtu {
        name: spec.name.clone(),
        driver: info.driver.clone(),
        mtu: spec.mtu,
        limit,
    };
    if info.driver == "net_af_packet" {
        let framesz = af_packet_framesz(&spec.devargs);
        if spec.mtu + 52 > framesz {
            return Err(too_big(format!(
                "at most framesz - 52 = {} with framesz={framesz} in its devargs (each frame is received whole into one buffer)",
                framesz.saturating_sub(52)
            )));
        }
        return Ok(());
    }
    if !info.mtu_range.contains(&spec.mtu) {
        return Err(too_big(format!(
            "from {} to {}",
            info.mtu_range.start(),
            info.mtu_range.end()
        )));
    }
    Ok(())
}

/// Drivers that chain a large frame into several buffers themselves (net_pcap on receive,
/// net_vhost on dequeue) or send chains without saying so in their capabilities.
const CHAINING_DRIVERS: [&str; 3] = ["net_pcap", "net_vhost", "net_null"];

/// net_af_packet's frames are `framesz` bytes (default 2048) less its TPACKET headers: it
/// receives each whole into one buffer (framesz - 32 bytes), and takes an MTU up to framesz - 52
/// (DPDK 22.11's ethdev caps its MTU at 1500 whatever framesz is, so the switch keeps it).
fn af_packet_framesz(devargs: &str) -> u32 {
    devargs
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == "framesz")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(2048)
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
                rx_scatter: false,
                tx_multi_seg: false,
            };
            return Probed {
                spec,
                port,
                info,
                queues,
                rx_buffer: None,
            }
            .for_frames();
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
            rx_scatter: false,
            tx_multi_seg: false,
        };
        Probed {
            spec,
            port,
            info,
            queues,
            rx_buffer: None,
        }
        .for_frames()
    }

    /// Chooses how frames of the port's MTU are received and sent: whole into one default
    /// buffer, into a chain of them (the scatter offload, or the driver's own chaining), or
    /// into a buffer of a pool of its own; chained frames sent where the device can. Refuses
    /// an MTU the driver's limits cannot take.
    fn for_frames(mut self) -> Result<Probed, PortError> {
        let (mtu, driver) = (self.spec.mtu, self.info.driver.as_str());
        let chains = CHAINING_DRIVERS.contains(&driver);
        self.queues.tx_multi_seg = self.info.tx_multi_seg || chains;
        check_mtu(&self.spec, &self.info)?;
        if driver == "net_af_packet" {
            let framesz = af_packet_framesz(&self.spec.devargs);
            if framesz - 32 > u32::from(DEFAULT_DATA_BYTES) {
                self.rx_buffer = u16::try_from(framesz - 32).ok();
            }
        } else if mtu + FRAME_OVERHEAD > u32::from(DEFAULT_DATA_BYTES) && !chains {
            if self.info.rx_scatter {
                self.queues.rx_scatter = true;
            } else {
                self.rx_buffer = u16::try_from(mtu + FRAME_OVERHEAD).ok();
            }
        }
        Ok(self)
    }

    /// A pool of the port's own, named `name`: sized for its queues and `workers` lcores'
    /// caches, its buffers holding `rx_buffer` bytes where the device needs that much.
    pub fn own_pool(&self, name: &str, workers: usize) -> Result<Arc<Mempool>, PortError> {
        let n = self.mbufs() + (workers as u64 + 1) * u64::from(MEMPOOL_CACHE) * 3 / 2 + 2048;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let data = self.rx_buffer.unwrap_or(DEFAULT_DATA_BYTES);
        Mempool::with_buffers(name, n, MEMPOOL_CACHE, data, -1)
            .map(Arc::new)
            .map_err(PortError::Mempool)
    }

    /// Mbufs the port needs: its descriptors, times the buffers a frame of its MTU takes, and
    /// what a pcap port preloads.
    pub fn mbufs(&self) -> u64 {
        let q = &self.queues;
        // A frame of the port's MTU takes this many buffers when it is a chain of them.
        let buffer = u32::from(self.rx_buffer.unwrap_or(DEFAULT_DATA_BYTES));
        let per_frame = u64::from((self.spec.mtu + FRAME_OVERHEAD).div_ceil(buffer));
        (u64::from(q.rx_queues) * u64::from(q.rx_desc)
            + u64::from(q.tx_queues) * u64::from(q.tx_desc))
            * per_frame
            + crate::pcap::preloaded_frames(&self.spec.devargs)
    }

    /// Configures and starts the port on `pool`.
    pub fn start(self, pool: &Arc<Mempool>) -> Result<SwitchPort, PortError> {
        let Probed {
            spec,
            mut port,
            info,
            queues,
            rx_buffer: _,
        } = self;
        let setup = |e| PortError::Setup {
            name: spec.name.clone(),
            source: e,
        };
        let applied = port.configure(queues, Arc::clone(pool)).map_err(setup)?;
        // The MTU: the device's own where it has an MTU operation; else the switch's checks
        // (and net_af_packet's, whose ethdev limit is not its own).
        let keeper = if info.driver == "net_af_packet" && spec.mtu > *info.mtu_range.end() {
            MtuKeeper::Switch
        } else {
            let mtu = u16::try_from(spec.mtu).unwrap_or(u16::MAX);
            port.set_mtu(mtu).map_err(|e| PortError::Mtu {
                name: spec.name.clone(),
                driver: info.driver.clone(),
                mtu: spec.mtu,
                limit: format!("the driver refused it ({e})"),
            })?
        };
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
            "port {} ({}, port id {}, {}): {} rx / {} tx queues, mtu {} ({}{}), link {} {} Mbit/s, mac {}",
            spec.name,
            spec.devargs,
            port.id(),
            info.driver,
            applied.rx_queues,
            applied.tx_queues,
            spec.mtu,
            match keeper {
                MtuKeeper::Device => "set on the device",
                MtuKeeper::Switch => "kept by the switch",
            },
            if applied.rx_scatter {
                ", large frames received as chains"
            } else {
                ""
            },
            if link.up { "up" } else { "down" },
            link.speed_mbps,
            dataplane::packet::MacAddr(port.mac())
        );
        Ok(SwitchPort {
            spec,
            port,
            driver: info.driver.clone(),
            info,
            queues: applied,
            base: Counters::default(),
            own_pool: None,
            vm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_is_what_is_left_of_every_frame() {
        let dev = PortStats {
            ibytes: 1000,
            obytes: 2000,
            imissed: 3,
            rx_nombuf: 4,
            ierrors: 5,
            oerrors: 6,
            ..PortStats::default()
        };
        // 100 received: 10 dropped, 7 multicast, 2 broadcast; 50 given to send: 5 not sent,
        // 20 multicast, 1 broadcast.
        let c = IfCounters::new([100, 10, 7, 2], [45, 5, 20, 1], &dev);
        assert_eq!(
            (c.in_ucast, c.in_multicast, c.in_broadcast, c.in_discards),
            (81, 7, 2, 10 + 3 + 4)
        );
        assert_eq!(
            (
                c.out_ucast,
                c.out_multicast,
                c.out_broadcast,
                c.out_discards
            ),
            (29, 20, 1, 5)
        );
        assert_eq!(
            (c.in_octets, c.out_octets, c.in_errors, c.out_errors),
            (1000, 2000, 5, 6)
        );
        // Read mid-publish, the group counts may run ahead: unicast stays at zero.
        let c = IfCounters::new([1, 0, 2, 0], [0, 0, 3, 0], &dev);
        assert_eq!((c.in_ucast, c.out_ucast), (0, 0));
    }
}
