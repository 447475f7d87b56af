//! The stats report: what `--stats-json` writes on exit and the periodic log line.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use dataplane::dpdk::{self, Mempool, PortStats};
use dataplane::fdb::Fdb;
use dataplane::forward::DropReason;
use dataplane::stats::{
    Counters, PortCounter, VlanCounter, VlanCounts, WorkerCounter, WorkerStats,
};

use crate::port::SwitchPort;

/// The whole report. Field names are an interface: scripts and tests read them.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds the workers ran.
    pub elapsed_secs: f64,
    /// The DPDK library version loaded.
    pub dpdk_version: String,
    /// TSC frequency, to turn cycles into time.
    pub tsc_hz: u64,
    /// Per port, in configuration order.
    pub ports: Vec<PortReport>,
    /// Per worker.
    pub workers: Vec<WorkerReport>,
    /// Frames dropped, by reason, all workers.
    pub drops: BTreeMap<&'static str, u64>,
    /// The MAC table.
    pub fdb: FdbReport,
    /// The mbuf pool.
    pub mempool: MempoolReport,
    /// The sFlow agent, when configured.
    pub sflow: Option<crate::sflow::agent::AgentStats>,
    /// Per VLAN id that carried a frame: what the bridge received into it.
    pub vlans: BTreeMap<u16, VlanReport>,
    #[serde(skip)]
    totals: Counters,
}

/// One port.
#[derive(Debug, Serialize)]
pub struct PortReport {
    /// Configured name.
    pub name: String,
    /// DPDK port id.
    pub port_id: u16,
    /// Devargs it was created from.
    pub devargs: String,
    /// PMD name.
    pub driver: String,
    /// Frames the switch received on it.
    pub rx_packets: u64,
    /// Bytes the switch received on it.
    pub rx_bytes: u64,
    /// Frames received on it that the switch dropped (see `drops` for why).
    pub rx_dropped: u64,
    /// Frames the device dropped before the switch saw them (no rx descriptor free:
    /// `rte_eth_stats.imissed`).
    pub rx_missed: u64,
    /// Frames the device received in error and dropped, such as frames larger than its
    /// receive buffers (`rte_eth_stats.ierrors`).
    pub rx_errors: u64,
    /// Frames the device dropped for want of an mbuf to receive into (`rx_nombuf`).
    pub rx_nombuf: u64,
    /// Frames the device failed to send (`rte_eth_stats.oerrors`).
    pub tx_errors: u64,
    /// Frames sent on it.
    pub tx_packets: u64,
    /// Frames for it that its tx queue refused.
    pub tx_dropped: u64,
    /// Frames received and forwarded to an individual address (RFC 2863 ifInUcastPkts).
    pub rx_unicast: u64,
    /// Frames received and forwarded to a multicast group (ifInMulticastPkts).
    pub rx_multicast: u64,
    /// Frames received and forwarded to the broadcast address (ifInBroadcastPkts).
    pub rx_broadcast: u64,
    /// Frames to an individual address given it to send, sent or dropped (ifOutUcastPkts).
    pub tx_unicast: u64,
    /// Frames to a multicast group given it to send (ifOutMulticastPkts).
    pub tx_multicast: u64,
    /// Frames to the broadcast address given it to send (ifOutBroadcastPkts).
    pub tx_broadcast: u64,
    /// Frames received on it that the sFlow sampler took.
    pub samples_taken: u64,
    /// Of those, samples lost because a sample ring was full.
    pub samples_lost: u64,
    /// Source addresses that moved onto this port.
    pub mac_moves_in: u64,
    /// BPDUs dropped by bpdu_guard.
    pub bpdu_dropped: u64,
    /// False when the port was shut down (bpdu_guard_shutdown).
    pub enabled: bool,
    /// Its sFlow ifIndex.
    pub if_index: u32,
    /// The device's own counters (`rte_eth_stats`).
    pub device: PortStats,
    /// The driver's extended counters (`rte_eth_xstats_get`), by name.
    pub xstats: BTreeMap<String, u64>,
    /// A VM port's socket and guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VhostReport>,
}

/// A VM port (vhost-user), as `port/show` and the stats show it.
#[derive(Debug, Serialize)]
pub struct VhostReport {
    /// The socket.
    pub socket: String,
    /// "client" or "server".
    pub mode: &'static str,
    /// Queue pairs offered.
    pub queues: u16,
    /// A guest is connected (the link is up).
    pub connected: bool,
    /// Queue pairs the guest set up.
    pub guest_queues: u16,
    /// Rx queues the guest enabled (it sends on them).
    pub rx_enabled: Vec<u16>,
    /// Tx queues the guest enabled (it receives on them).
    pub tx_enabled: Vec<u16>,
    /// The virtio features it negotiated, by name.
    pub features: Vec<&'static str>,
}

impl VhostReport {
    fn of(sp: &SwitchPort) -> Option<VhostReport> {
        let vm = sp.vm.as_ref()?;
        let q = sp.port.enabled_queues().unwrap_or_default();
        Some(VhostReport {
            socket: vm.socket.path.display().to_string(),
            mode: vm.socket.mode.name(),
            queues: vm.socket.queues,
            connected: vm.guest.is_some(),
            guest_queues: vm.guest.map_or(0, |g| g.vrings / 2),
            rx_enabled: q.rx,
            tx_enabled: q.tx,
            features: vm
                .guest
                .map_or_else(Vec::new, |g| crate::vhost::feature_names(g.features)),
        })
    }
}

/// One VLAN: the frames the bridge received into it (sFlow's VLAN counter record).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct VlanReport {
    /// Bytes of the frames forwarded in it.
    pub octets: u64,
    /// Frames forwarded to an individual address.
    pub unicast: u64,
    /// Frames forwarded to a multicast group.
    pub multicast: u64,
    /// Frames forwarded to the broadcast address.
    pub broadcast: u64,
    /// Frames admitted into it and dropped.
    pub discards: u64,
}

impl VlanReport {
    /// Every VLAN of `counts`.
    pub fn all(counts: &VlanCounts) -> BTreeMap<u16, VlanReport> {
        counts
            .0
            .iter()
            .map(|(&vlan, v)| {
                let get = |c: VlanCounter| v[c as usize];
                let r = VlanReport {
                    octets: get(VlanCounter::Octets),
                    unicast: get(VlanCounter::Unicast),
                    multicast: get(VlanCounter::Multicast),
                    broadcast: get(VlanCounter::Broadcast),
                    discards: get(VlanCounter::Discards),
                };
                (vlan, r)
            })
            .collect()
    }
}

/// One worker.
#[derive(Debug, Serialize)]
pub struct WorkerReport {
    /// Its lcore.
    pub lcore: u32,
    /// Frames received.
    pub packets: u64,
    /// Non-empty rx bursts.
    pub bursts: u64,
    /// Poll iterations.
    pub iterations: u64,
    /// Cycles in iterations that received frames.
    pub busy_cycles: u64,
    /// Cycles in iterations that received nothing.
    pub idle_cycles: u64,
    /// busy_cycles / packets.
    pub cycles_per_packet: f64,
    /// Frames sent to one known port.
    pub unicast: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// Copies sent by flooding.
    pub flood_copies: u64,
    /// Frames sent by a decision held in the worker's flow cache (no MAC-table lookup).
    pub flow_cache_hits: u64,
    /// MAC-table lookups made by the worker's full path (source learning, destination lookup):
    /// about two for each frame not sent by the flow cache.
    pub fdb_lookups: u64,
    /// MAC-table cache lines those lookups read: one for a key in the first line of its first
    /// bucket (the line prefetched), up to four for one elsewhere or missing.
    pub fdb_line_reads: u64,
    /// fdb_lookups / packets: MAC-table lookups a received frame cost, 0 with no frames.
    pub fdb_lookups_per_packet: f64,
    /// fdb_line_reads / fdb_lookups: 1 when every key sat in its first line, 0 with no lookup.
    pub fdb_lines_per_lookup: f64,
    /// Distribution of TSC cycles spent on one non-empty rx burst (rx, switch, tx).
    pub cycles_per_burst: Quantiles,
}

impl WorkerReport {
    /// The figures of one worker's counters and cycles histogram (a snapshot, or the
    /// difference from a baseline).
    pub fn new(lcore: u32, c: &Counters, cycles: &hdrhistogram::Histogram<u64>) -> WorkerReport {
        WorkerReport {
            lcore,
            packets: c.get(WorkerCounter::Packets),
            bursts: c.get(WorkerCounter::Bursts),
            iterations: c.get(WorkerCounter::Iterations),
            busy_cycles: c.get(WorkerCounter::BusyCycles),
            idle_cycles: c.get(WorkerCounter::IdleCycles),
            cycles_per_packet: c.cycles_per_packet(),
            unicast: c.get(WorkerCounter::Unicast),
            flooded: c.get(WorkerCounter::Flooded),
            flood_copies: c.get(WorkerCounter::FloodCopies),
            flow_cache_hits: c.get(WorkerCounter::FlowCacheHits),
            fdb_lookups: c.get(WorkerCounter::FdbLookups),
            fdb_line_reads: c.get(WorkerCounter::FdbLineReads),
            fdb_lookups_per_packet: c.per(WorkerCounter::FdbLookups, WorkerCounter::Packets),
            fdb_lines_per_lookup: c.per(WorkerCounter::FdbLineReads, WorkerCounter::FdbLookups),
            cycles_per_burst: Quantiles::of(cycles),
        }
    }

    /// Busy cycles as a share of all cycles, 0 to 1 (0 before the first iteration).
    pub fn busy_ratio(&self) -> f64 {
        let all = self.busy_cycles as f64 + self.idle_cycles as f64;
        if all > 0.0 {
            self.busy_cycles as f64 / all
        } else {
            0.0
        }
    }
}

/// Quantiles of a cycles histogram.
#[derive(Debug, Serialize)]
pub struct Quantiles {
    /// Bursts recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Quantiles {
    /// Reads the quantiles off a histogram (all 0 when it is empty).
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Quantiles {
        Quantiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The MAC table.
#[derive(Debug, Serialize)]
pub struct FdbReport {
    /// Entries at exit.
    pub entries: usize,
    /// Most entries.
    pub capacity: usize,
    /// Addresses learned.
    pub learned: u64,
    /// Addresses that moved port.
    pub moved: u64,
    /// Entries aged out.
    pub aged: u64,
    /// Sources not learned for want of room.
    pub full: u64,
    /// Sources contradicting a static entry.
    pub static_conflicts: u64,
    /// Addresses held on a port by flap damping.
    pub flap_holds: u64,
    /// The most recent MAC moves, oldest first.
    pub recent_moves: Vec<crate::edge::MoveRecord>,
    /// Addresses held by flap damping at the end.
    pub held: Vec<crate::edge::HeldRecord>,
    /// Bytes of table memory.
    pub memory_bytes: usize,
}

/// The mbuf pool: `in_use_at_stop == in_use_at_start` means no mbuf leaked while forwarding.
#[derive(Debug, Serialize)]
pub struct MempoolReport {
    /// Mbufs in the pool.
    pub size: u32,
    /// In use after the ports started, before the workers ran (rx rings filled).
    pub in_use_at_start: u32,
    /// In use after the workers stopped, ports still open.
    pub in_use_at_stop: u32,
    /// In use after every port was closed.
    pub in_use_after_close: u32,
}

/// What [`build`] reads.
pub struct Inputs<'a> {
    /// How long the workers ran.
    pub elapsed: Duration,
    /// The ports, still open.
    pub ports: &'a [SwitchPort],
    /// Every worker's published counters.
    pub workers: &'a [Arc<WorkerStats>],
    /// The MAC table.
    pub fdb: &'a Fdb,
    /// Entries aged by the control loop.
    pub aged: u64,
    /// The pool.
    pub pool: &'a Mempool,
    /// Whether a port (by id) forwards; None: all do.
    pub enabled: Option<&'a dyn Fn(u16) -> bool>,
    /// In use before the workers started.
    pub mempool_at_start: u32,
    /// In use after they stopped.
    pub mempool_at_stop: u32,
}

/// Collects the report from the workers' counters and the ports' device stats.
pub fn build(i: Inputs<'_>) -> Report {
    let mut totals = Counters::default();
    let mut vlans = VlanCounts::default();
    let workers = i
        .workers
        .iter()
        .map(|w| {
            let c = w.snapshot();
            totals.accumulate(&c);
            vlans.accumulate(&w.vlan_snapshot());
            WorkerReport::new(w.lcore(), &c, &w.cycles_per_burst())
        })
        .collect();
    let ports = i
        .ports
        .iter()
        .map(|sp| {
            // A port id can be reused after a port left: its figures start at its own start.
            let count = |c| sp.counter(&totals, c);
            let d = sp.port.stats().unwrap_or_default();
            let ifc = sp.if_counters(&totals, &d);
            PortReport {
                name: sp.spec.name.clone(),
                port_id: sp.port.id().0,
                devargs: sp.spec.devargs.clone(),
                driver: sp.driver.clone(),
                rx_packets: count(PortCounter::RxPackets),
                rx_bytes: count(PortCounter::RxBytes),
                rx_dropped: count(PortCounter::RxDropped),
                rx_missed: d.imissed,
                rx_errors: d.ierrors,
                rx_nombuf: d.rx_nombuf,
                tx_errors: d.oerrors,
                tx_packets: count(PortCounter::TxPackets),
                tx_dropped: count(PortCounter::TxDropped),
                rx_unicast: ifc.in_ucast,
                rx_multicast: ifc.in_multicast,
                rx_broadcast: ifc.in_broadcast,
                tx_unicast: ifc.out_ucast,
                tx_multicast: ifc.out_multicast,
                tx_broadcast: ifc.out_broadcast,
                samples_taken: count(PortCounter::SamplesTaken),
                samples_lost: count(PortCounter::SamplesLost),
                mac_moves_in: count(PortCounter::MacMovesIn),
                bpdu_dropped: count(PortCounter::BpduDropped),
                enabled: i.enabled.is_none_or(|f| f(sp.port.id().0)),
                if_index: sp.spec.if_index,
                device: d,
                xstats: sp.port.xstats().unwrap_or_default().into_iter().collect(),
                vhost: VhostReport::of(sp),
            }
        })
        .collect();
    let drops = DropReason::ALL
        .iter()
        .map(|&r| (r.name(), totals.drops(r)))
        .collect();
    Report {
        elapsed_secs: i.elapsed.as_secs_f64(),
        dpdk_version: dpdk::runtime_version(),
        tsc_hz: dpdk::tsc_hz(),
        ports,
        workers,
        drops,
        fdb: FdbReport {
            entries: i.fdb.len(),
            capacity: i.fdb.capacity(),
            learned: totals.get(WorkerCounter::Learned),
            moved: totals.get(WorkerCounter::Moved),
            aged: i.aged,
            full: totals.get(WorkerCounter::FdbFull),
            static_conflicts: totals.get(WorkerCounter::StaticConflict),
            flap_holds: 0,
            recent_moves: Vec::new(),
            held: Vec::new(),
            memory_bytes: i.fdb.memory_bytes(),
        },
        sflow: None,
        mempool: MempoolReport {
            size: i.pool.size(),
            in_use_at_start: i.mempool_at_start,
            in_use_at_stop: i.mempool_at_stop,
            // Filled in by the caller once the ports are closed.
            in_use_after_close: 0,
        },
        vlans: VlanReport::all(&vlans),
        totals,
    }
}

impl Report {
    /// Every worker's counters summed.
    pub fn totals(&self) -> Counters {
        self.totals.clone()
    }

    /// Writes the report as pretty JSON, atomically (temp file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

/// One line for the log: totals so far.
pub fn summary_line(t: &Counters, fdb_entries: usize, fdb_capacity: usize, secs: f64) -> String {
    let drops: u64 = DropReason::ALL.iter().map(|&r| t.drops(r)).sum();
    let busy = t.get(WorkerCounter::BusyCycles) as f64;
    let all = busy + t.get(WorkerCounter::IdleCycles) as f64;
    format!(
        "{secs:.0}s: rx {} unicast {} flooded {} dropped {} | fdb {fdb_entries}/{fdb_capacity} learned {} moved {} | {:.0} cycles/pkt, busy {:.0}%",
        t.get(WorkerCounter::Packets),
        t.get(WorkerCounter::Unicast),
        t.get(WorkerCounter::Flooded),
        drops,
        t.get(WorkerCounter::Learned),
        t.get(WorkerCounter::Moved),
        t.cycles_per_packet(),
        if all > 0.0 { 100.0 * busy / all } else { 0.0 },
    )
}
