//! Builds the ports and workers from the configuration, runs the control loop (clock, aging,
//! stats), and shuts everything down in DPDK's order.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{self, DpdkError, Eal, LcoreId, Mempool, Port, PortConfig, PortInfo};
use dataplane::dpdk::{spsc_ring, RingConsumer, BURST_SIZE, MAX_PORTS};
use dataplane::fdb::Fdb;
use dataplane::forward::BridgeView;
use dataplane::sample::{SampleRecord, Sampler};
use dataplane::stats::{Counters, PortCounter, WorkerCounter, WorkerStats};
use dataplane::worker::{BridgeCell, MoveEvent, Sampling, Worker, WorkerCommand};

use crate::config::{Config, PortSpec, Source};
use crate::ctl::{self, RxqAssignment};
use crate::edge::{BpduWatch, MoveTracker};
use crate::report::{self, Report};
use crate::sflow::agent::{Agent, AgentPort};

/// Per-lcore mbuf cache of the pool.
const MEMPOOL_CACHE: u32 = 256;
/// How often the control loop wakes: the stop latency, and how often the sample rings are
/// drained (at 10 ms a 4096-record ring absorbs 400K samples/s per worker).
const TICK: Duration = Duration::from_millis(10);
/// Sample records each worker's ring holds.
const SAMPLE_RING: u32 = 4096;
/// MAC move reports each worker's ring holds between two control ticks.
const MOVE_RING: u32 = 1024;

/// Why the switch could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// EAL initialisation failed (bad EAL arguments, no hugepages...).
    #[error("DPDK EAL initialisation failed: {0}. Check the EAL arguments after `--` and that hugepages are set up (scripts/setup.sh)")]
    Eal(DpdkError),
    /// No lcore is left for a worker.
    #[error("no worker lcore: give the EAL at least two lcores, e.g. `-- -l 0,1` (the first runs the control thread, the others forward)")]
    NoWorkers,
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
    PortSetup {
        /// The port.
        name: String,
        /// DPDK's error.
        source: DpdkError,
    },
    /// The mbuf pool could not be created.
    #[error("creating the mbuf pool: {0}. Are there enough hugepages (scripts/setup.sh), or is bridge.mbufs too large?")]
    Mempool(DpdkError),
    /// A worker could not be launched.
    #[error("launching a worker: {0}")]
    Launch(DpdkError),
    /// The sFlow agent could not start (sample rings, sockets).
    #[error("starting the sFlow agent: {0}")]
    Sflow(String),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The control socket or the metrics endpoint could not be set up.
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    /// The stats file could not be written.
    #[error("writing the stats file {path}: {source}")]
    StatsFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this long (as on SIGTERM).
    pub duration: Option<Duration>,
    /// Write the stats JSON here on exit.
    pub stats_json: Option<PathBuf>,
    /// Log a one-line summary this often (None: never).
    pub stats_interval: Option<Duration>,
    /// The control socket and the metrics endpoint.
    pub ctl: ctl::CtlOptions,
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

/// Signals that stop the switch (SIGINT, SIGTERM) or reload its configuration (SIGHUP),
/// observed by the control loop.
struct StopSignals {
    flag: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl StopSignals {
    /// Blocks the signals in this thread, so that the threads the EAL creates inherit the
    /// mask and never take them, and installs handlers that set flags.
    fn install() -> Result<StopSignals, SwitchError> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(SwitchError::Signals)?;
        }
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .map_err(SwitchError::Signals)?;
        Self::mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
        Ok(StopSignals { flag, hup })
    }

    /// True once per SIGHUP.
    fn reload_requested(&self) -> bool {
        self.hup.swap(false, Ordering::Relaxed)
    }

    /// After the EAL has made its threads: let the control thread take the signals again.
    fn unblock_here(&self) -> Result<(), SwitchError> {
        Self::mask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK)
    }

    fn mask(how: nix::sys::signal::SigmaskHow) -> Result<(), SwitchError> {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        nix::sys::signal::pthread_sigmask(how, Some(&set), None)
            .map_err(|e| SwitchError::Signals(std::io::Error::from(e)))
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Runs the switch until a signal or the duration ends it. Returns the final report.
pub fn run(
    config: &Config,
    source: Source,
    eal_args: &[String],
    opts: &RunOptions,
) -> Result<Report, SwitchError> {
    let signals = StopSignals::install()?;
    let eal = Eal::init(eal_args).map_err(SwitchError::Eal)?;
    signals.unblock_here()?;
    log::info!(
        "{} (built against {}), control on lcore {}, workers on lcores {:?}",
        dpdk::runtime_version(),
        dpdk_sys::BUILD_VERSION,
        eal.main_lcore(),
        eal.worker_lcores().iter().map(|l| l.0).collect::<Vec<_>>()
    );
    let lcores = eal.worker_lcores().to_vec();
    if lcores.is_empty() {
        return Err(SwitchError::NoWorkers);
    }
    // Everything DPDK-owned lives in this scope so it is gone before the Eal is dropped.
    let report = run_with_eal(&eal, &lcores, config, source, opts, &signals)?;
    drop(eal);
    Ok(report)
}

/// Probes a port's device and chooses its queue layout for `nworkers` workers.
fn probe_port(
    spec: &PortSpec,
    nworkers: usize,
) -> Result<(Port, PortInfo, PortConfig), SwitchError> {
    let workers_u16 = u16::try_from(nworkers).unwrap_or(u16::MAX);
    let port = Port::probe(&spec.devargs).map_err(|source| SwitchError::Probe {
        name: spec.name.clone(),
        devargs: spec.devargs.clone(),
        source,
    })?;
    let info = port.info().map_err(|source| SwitchError::PortSetup {
        name: spec.name.clone(),
        source,
    })?;
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
    Ok((port, info, queues))
}

/// Mbufs a port needs: its descriptors and what a pcap port preloads.
fn port_mbufs(spec: &PortSpec, q: &PortConfig) -> u64 {
    u64::from(q.rx_queues) * u64::from(q.rx_desc)
        + u64::from(q.tx_queues) * u64::from(q.tx_desc)
        + crate::pcap::preloaded_frames(&spec.devargs)
}

/// Configures and starts a probed port on `pool`.
fn start_port(
    spec: PortSpec,
    mut port: Port,
    info: PortInfo,
    queues: PortConfig,
    pool: &Arc<Mempool>,
) -> Result<SwitchPort, SwitchError> {
    let setup = |e| SwitchError::PortSetup {
        name: spec.name.clone(),
        source: e,
    };
    let applied = port.configure(queues, Arc::clone(pool)).map_err(setup)?;
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
    })
}

fn run_with_eal(
    eal: &Eal,
    lcores: &[LcoreId],
    config: &Config,
    source: Source,
    opts: &RunOptions,
    signals: &StopSignals,
) -> Result<Report, SwitchError> {
    let nworkers = lcores.len();
    let workers_u16 = u16::try_from(nworkers).unwrap_or(u16::MAX);

    // Probe every port first: the pool is sized from their queues.
    let mut probed = Vec::with_capacity(config.ports.len());
    for spec in &config.ports {
        let (port, info, queues) = probe_port(spec, nworkers)?;
        probed.push((spec.clone(), port, info, queues));
    }
    let pool_size = match config.bridge.mbufs {
        Some(n) => n,
        None => {
            let mut n: u64 = probed.iter().map(|(s, _, _, q)| port_mbufs(s, q)).sum();
            // Per-lcore caches, every worker's tx batches and rx burst, and headroom.
            n += (nworkers as u64 + 1) * u64::from(MEMPOOL_CACHE) * 3 / 2;
            n += nworkers as u64 * (MAX_PORTS as u64 + 1) * BURST_SIZE as u64;
            n += 4096;
            u32::try_from(n).unwrap_or(u32::MAX)
        }
    };
    let pool = Arc::new(
        Mempool::new_pktmbuf("pmdswitch_mbufs", pool_size, MEMPOOL_CACHE, -1)
            .map_err(SwitchError::Mempool)?,
    );
    log::info!("mbuf pool: {pool_size} mbufs");
    let mut ports: Vec<SwitchPort> = Vec::with_capacity(probed.len());
    for (spec, port, info, queues) in probed {
        ports.push(start_port(spec, port, info, queues, &pool)?);
    }

    let fdb = Arc::new(Fdb::new(config.bridge.fdb_capacity));
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<Arc<WorkerStats>> = lcores
        .iter()
        .map(|l| Arc::new(WorkerStats::new(l.0)))
        .collect();
    let bridge = Arc::new(BridgeCell::from_pointee(BridgeView::plain(
        &[],
        config.bridge.mtu,
    )));
    let run_seed = started_seed();

    // Every worker gets a sample ring, a move ring and a command channel; sampling runs at
    // rate 0 (one compare per burst) until sFlow is configured.
    let mut workers = Vec::with_capacity(nworkers);
    let mut sample_rings = Vec::with_capacity(nworkers);
    let mut move_rings = Vec::with_capacity(nworkers);
    let mut commands = Vec::with_capacity(nworkers);
    for (&lcore, st) in lcores.iter().zip(&stats) {
        let ring_err = |what: &str| {
            let what = what.to_owned();
            move |source| SwitchError::PortSetup { name: what, source }
        };
        let (samples, sample_rx) =
            spsc_ring::<SampleRecord>(&format!("sflow_{lcore}"), SAMPLE_RING)
                .map_err(ring_err("sFlow sample ring"))?;
        let (moves, moves_rx) = spsc_ring::<MoveEvent>(&format!("moves_{lcore}"), MOVE_RING)
            .map_err(ring_err("MAC move ring"))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        workers.push(Worker {
            lcore,
            rx: Vec::new(),
            tx: (0..MAX_PORTS).map(|_| None).collect(),
            bridge: Arc::clone(&bridge),
            fdb: Arc::clone(&fdb),
            stats: Arc::clone(st),
            stop: Arc::clone(&stop),
            sampling: Some(Sampling {
                samplers: (0..MAX_PORTS).map(|_| Sampler::new(0, 1)).collect(),
                header_bytes: config
                    .sflow
                    .as_ref()
                    .map_or(128, |s| s.header_bytes as usize),
                ring: samples,
            }),
            pool: Arc::clone(&pool),
            moves: Some(moves),
            commands: rx,
        });
        sample_rings.push(sample_rx);
        move_rings.push(moves_rx);
        commands.push(tx);
    }

    let mut rxqs: Vec<RxqAssignment> = Vec::new(); // for pmd/rxq-show
                                                   // Hand out the queues: rx queue q of the i-th port goes to worker (i + q) mod n, so the
                                                   // queues of one port land on different workers; every worker gets a tx queue on every port.
    for (i, sp) in ports.iter_mut().enumerate() {
        let (rx, tx) = sp
            .port
            .queues(nworkers)
            .map_err(|source| SwitchError::PortSetup {
                name: sp.spec.name.clone(),
                source,
            })?;
        for q in rx {
            let w = (i + usize::from(q.queue())) % nworkers;
            rxqs.push(RxqAssignment {
                lcore: workers[w].lcore.0,
                port: sp.spec.name.clone(),
                queue: q.queue(),
            });
            workers[w].rx.push(q);
        }
        for (w, q) in tx.into_iter().enumerate() {
            if q.is_shared() && w == 0 {
                log::warn!(
                    "port {}: {} tx queues for {nworkers} workers; workers share them under a lock",
                    sp.spec.name,
                    sp.queues.tx_queues
                );
            }
            let idx = q.port().index();
            workers[w].tx[idx] = Some(q);
        }
    }

    let mut rt = Runtime {
        nworkers,
        workers_u16,
        ports,
        pool: Arc::clone(&pool),
        fdb: Arc::clone(&fdb),
        bridge,
        stats: stats.clone(),
        commands,
        sent: vec![0; nworkers],
        config: config.clone(),
        source,
        sflow: SflowExport {
            agent: None,
            rings: sample_rings,
            buf: vec![SampleRecord::default(); 256],
        },
        edge: EdgeState {
            moves: MoveTracker::new(&config.bridge),
            rings: move_rings,
            buf: vec![MoveEvent::default(); 256],
            bpdu: BpduWatch::default(),
        },
        bpdu_shut: Vec::new(),
        rxqs: Vec::new(),
        mempool_at_start: 0,
        run_seed,
        pool_seq: 0,
        aged: 0,
        started: Instant::now(),
    };
    // Before the workers start: the snapshot, the samplers and the sFlow agent.
    rt.publish_view(None);
    for sp in &rt.ports {
        let rate = rt.sampling_rate_of(&sp.spec);
        for (w, worker) in workers.iter_mut().enumerate() {
            if let Some(s) = worker.sampling.as_mut() {
                s.samplers[sp.port.id().index()] = rt.sampler(w, sp.id(), rate);
            }
        }
    }
    rt.start_agent().map_err(SwitchError::Sflow)?;
    let statics = crate::edge::install_static(&rt.config.fdb, &rt.port_ids(), &fdb);
    if statics > 0 {
        log::info!("{statics} static MAC table entries");
    }

    let mut ctl_server = ctl::Server::bind(&opts.ctl)?; // the control socket and /metrics
    let mempool_at_start = pool.in_use();
    rt.mempool_at_start = mempool_at_start;
    rt.rxqs = rxqs;
    rt.started = Instant::now();
    let mut launched = Vec::new();
    for w in workers {
        let lcore = w.lcore;
        if let Err(e) = eal.launch(lcore, move || w.run()) {
            stop.store(true, Ordering::Release);
            for &l in &launched {
                eal.wait(l);
            }
            return Err(SwitchError::Launch(e));
        }
        launched.push(lcore);
    }

    rt.control_loop(opts, signals, &mut ctl_server);

    stop.store(true, Ordering::Release);
    for &l in &launched {
        let ret = eal.wait(l);
        if ret != 0 {
            log::error!("worker on lcore {l} returned {ret}");
        }
    }
    let elapsed = rt.started.elapsed();
    // The workers are gone: what is left in the rings is exported, then the last datagram.
    rt.sflow.drain(&sum_counters(&stats));
    if let Some(agent) = rt.sflow.agent.as_mut() {
        agent.flush();
    }
    rt.edge.drain(&rt.ports, &fdb);
    let mempool_at_stop = pool.in_use();
    let view = rt.bridge.load_full();
    let enabled = |id: u16| view.is_enabled(id);
    let mut rep = report::build(report::Inputs {
        enabled: Some(&enabled),
        elapsed,
        ports: &rt.ports,
        workers: &stats,
        fdb: &fdb,
        aged: rt.aged,
        pool: &pool,
        mempool_at_start,
        mempool_at_stop,
    });
    for mut sp in std::mem::take(&mut rt.ports) {
        if let Err(e) = sp.port.close() {
            log::error!("closing port {}: {e}", sp.spec.name);
        }
    }
    rep.sflow = rt.sflow.agent.as_ref().map(|a| a.stats());
    rep.fdb.flap_holds = rt.edge.moves.holds;
    rep.fdb.recent_moves = rt.edge.moves.history().cloned().collect();
    rep.fdb.held = rt.edge.moves.held();
    rep.mempool.in_use_after_close = pool.in_use();
    log::info!(
        "{}",
        report::summary_line(
            &rep.totals(),
            fdb.len(),
            fdb.capacity(),
            elapsed.as_secs_f64()
        )
    );
    if let Some(path) = &opts.stats_json {
        rep.write(path).map_err(|source| SwitchError::StatsFile {
            path: path.clone(),
            source,
        })?;
    }
    drop(rt);
    drop(pool);
    Ok(rep)
}

/// A runtime change that could not be made; the switch goes on as it was.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The new configuration is not valid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The change needs a restart.
    #[error("{0}: changing it needs a restart (it is sized at start); the running value stays")]
    NeedsRestart(&'static str),
    /// A port could not be brought up.
    #[error("{0}")]
    Port(#[from] SwitchError),
    /// Some of the change was made before the rest failed.
    #[error("{1} (already done: {0}; the rest was not applied)")]
    Partly(String, Box<ChangeError>),
    /// A worker did not take the change in time.
    #[error("worker on lcore {0} did not acknowledge the change within {1:?}")]
    Stuck(u32, Duration),
}

/// An apply that failed after changing some things: says which, so "running as before" is
/// never claimed falsely.
fn partly(done: Vec<String>, e: ChangeError) -> ChangeError {
    if done.is_empty() {
        e
    } else {
        ChangeError::Partly(done.join("; "), Box::new(e))
    }
}

/// How long a worker may take to acknowledge a change (it looks every ~1024 poll rounds).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The running switch, as the control thread holds it: ports, table, snapshot, the workers'
/// command channels, configuration and its source, sFlow and edge state.
pub struct Runtime {
    nworkers: usize,
    workers_u16: u16,
    /// The ports, in configuration order.
    pub ports: Vec<SwitchPort>,
    /// The start's mbuf pool.
    pub pool: Arc<Mempool>,
    /// The MAC table.
    pub fdb: Arc<Fdb>,
    /// The snapshot the workers forward by.
    pub bridge: Arc<BridgeCell>,
    /// Every worker's published counters.
    pub stats: Vec<Arc<WorkerStats>>,
    commands: Vec<crossbeam_channel::Sender<WorkerCommand>>,
    sent: Vec<u64>,
    /// The configuration in force.
    pub config: Config,
    /// Where it came from (edited by runtime changes).
    pub source: Source,
    sflow: SflowExport,
    edge: EdgeState,
    /// Ports shut down by bpdu_guard_shutdown (by name) until set enabled again.
    bpdu_shut: Vec<String>,
    /// Who polls which rx queue (pmd/rxq-show).
    pub rxqs: Vec<RxqAssignment>,
    /// Mbufs of the start's pool in use when the workers started.
    pub mempool_at_start: u32,
    run_seed: u64,
    pool_seq: u32,
    /// Entries aged out so far.
    pub aged: u64,
    /// When the workers started.
    pub started: Instant,
}

impl Runtime {
    /// (port id, spec) of every port.
    fn port_ids(&self) -> Vec<(u16, &PortSpec)> {
        self.ports.iter().map(|p| (p.id(), &p.spec)).collect()
    }

    /// Every worker's counters, summed.
    pub fn totals(&self) -> Counters {
        sum_counters(&self.stats)
    }

    /// The sFlow agent's counts, when sFlow is on.
    pub fn sflow_stats(&self) -> Option<crate::sflow::agent::AgentStats> {
        self.sflow.agent.as_ref().map(|a| a.stats())
    }

    /// Recent MAC moves and held addresses.
    pub fn moves(&self) -> &MoveTracker {
        &self.edge.moves
    }

    fn sampling_rate_of(&self, spec: &PortSpec) -> u32 {
        match &self.config.sflow {
            Some(s) => spec.sampling_rate.unwrap_or(s.sampling_rate),
            None => 0,
        }
    }

    fn sampler(&self, worker: usize, port: u16, rate: u32) -> Sampler {
        // Distinct seeds: no two samplers draw the same skips.
        let lcore = self.stats[worker].lcore();
        let seed = (u64::from(lcore) << 32) ^ (u64::from(port) << 16) ^ self.run_seed;
        Sampler::new(rate, seed)
    }

    /// Builds the snapshot from the configuration and the ports, and publishes it.
    /// `except`: a port still open but already out of the bridge (being removed).
    fn publish_view(&self, except: Option<u16>) {
        let ports: Vec<&SwitchPort> = self
            .ports
            .iter()
            .filter(|p| Some(p.id()) != except)
            .collect();
        let mut view = crate::edge::build_view(
            &self.config,
            &ports.iter().map(|p| (p.id(), &p.spec)).collect::<Vec<_>>(),
            &ports
                .iter()
                .map(|p| (p.id(), p.queues.rx_queues))
                .collect::<Vec<_>>(),
            self.workers_u16,
        );
        for p in ports {
            if !p.spec.enabled || self.bpdu_shut.contains(&p.spec.name) {
                view = view.with_port_enabled(p.id(), false);
            }
        }
        self.bridge.store(Arc::new(view));
    }

    /// (Re)starts the sFlow agent for the configuration in force.
    fn start_agent(&mut self) -> Result<(), String> {
        let Some(spec) = self.config.sflow.clone() else {
            if self.sflow.agent.take().is_some() {
                log::info!("sFlow: off");
            }
            return Ok(());
        };
        let ports: Vec<AgentPort> = self
            .ports
            .iter()
            .map(|sp| AgentPort {
                port_id: sp.id(),
                if_index: sp.spec.if_index,
                sampling_rate: self.sampling_rate_of(&sp.spec),
            })
            .collect();
        let result = match self.sflow.agent.as_mut() {
            Some(agent) => agent.reconfigure(spec.clone(), &ports, self.nworkers),
            None => Agent::new(spec.clone(), &ports, self.nworkers).map(|a| {
                self.sflow.agent = Some(a);
            }),
        };
        result.map_err(|e| format!("sFlow agent: {e}"))?;
        log::info!(
            "sFlow: agent {}, collectors {:?}, sampling 1-in-{} (per-port overrides apply), counters every {} s",
            spec.agent_address,
            spec.collectors,
            spec.sampling_rate,
            spec.polling_interval
        );
        Ok(())
    }

    /// Sends a command to worker `w`.
    fn send(&mut self, w: usize, cmd: WorkerCommand) {
        if self.commands[w].send(cmd).is_ok() {
            self.sent[w] += 1;
        }
    }

    /// Waits until every worker has applied every command sent (the reload handshake).
    fn wait_applied(&mut self) -> Result<(), ChangeError> {
        for w in 0..self.nworkers {
            self.send(w, WorkerCommand::Sync);
        }
        let deadline = Instant::now() + ACK_TIMEOUT;
        for (w, st) in self.stats.iter().enumerate() {
            while st.applied() < self.sent[w] {
                if Instant::now() >= deadline {
                    return Err(ChangeError::Stuck(st.lcore(), ACK_TIMEOUT));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// Brings up a port while the others forward: its own pool, its queues handed to the
    /// workers, acknowledged before any frame is sent to it.
    fn add_port(&mut self, spec: PortSpec, position: usize) -> Result<(), ChangeError> {
        let (port, info, queues) = probe_port(&spec, self.nworkers)?;
        let n = port_mbufs(&spec, &queues)
            + (self.nworkers as u64 + 1) * u64::from(MEMPOOL_CACHE) * 3 / 2
            + 2048;
        self.pool_seq += 1;
        let pool = Arc::new(
            Mempool::new_pktmbuf(
                &format!("pmdswitch_p{}", self.pool_seq),
                u32::try_from(n).unwrap_or(u32::MAX),
                MEMPOOL_CACHE,
                -1,
            )
            .map_err(SwitchError::Mempool)?,
        );
        let mut sp = start_port(spec, port, info, queues, &pool)?;
        sp.own_pool = Some(pool);
        sp.base = self.totals();
        let (rx, tx) = sp
            .port
            .queues(self.nworkers)
            .map_err(|source| SwitchError::PortSetup {
                name: sp.spec.name.clone(),
                source,
            })?;
        // Tx queues first: once every worker can send to the port, the snapshot takes it in
        // (floods reach it), then its rx queues start (its frames find it in the snapshot).
        for (w, q) in tx.into_iter().enumerate() {
            self.send(w, WorkerCommand::AddTx(q));
        }
        let rate = self.sampling_rate_of(&sp.spec);
        for w in 0..self.nworkers {
            let s = self.sampler(w, sp.id(), rate);
            self.send(w, WorkerCommand::SetSampler(sp.id(), s));
        }
        let id = sp.id();
        let name = sp.spec.name.clone();
        self.ports.insert(position.min(self.ports.len()), sp);
        self.wait_applied()?;
        self.publish_view(None);
        for q in rx {
            let w = (position + usize::from(q.queue())) % self.nworkers;
            self.rxqs.push(RxqAssignment {
                lcore: self.stats[w].lcore(),
                port: name.clone(),
                queue: q.queue(),
            });
            self.send(w, WorkerCommand::AddRx(q));
        }
        self.wait_applied()?;
        log::info!("port {name} (port id {id}) added");
        Ok(())
    }

    /// Takes a port out while the others forward: out of the snapshot first, then its queues
    /// back from every worker, then its table entries, then the device.
    fn remove_port(&mut self, name: &str) -> Result<(), ChangeError> {
        let Some(i) = self.ports.iter().position(|p| p.spec.name == name) else {
            return Ok(());
        };
        let id = self.ports[i].id();
        self.publish_view(Some(id));
        for w in 0..self.nworkers {
            self.send(w, WorkerCommand::RemovePort(id));
        }
        self.wait_applied()?;
        let mut sp = self.ports.remove(i);
        self.rxqs.retain(|q| q.port != name);
        let gone = self.fdb.flush_port(id);
        if let Err(e) = sp.port.close() {
            log::error!("closing port {name}: {e}");
        }
        log::info!("port {name} (port id {id}) removed; {gone} MAC table entries with it");
        Ok(())
    }

    /// Applies an edited source: validates it whole, refuses what needs a restart, then adds,
    /// removes and changes ports and settings while the workers forward. On an error nothing
    /// already running is lost; a failure half way (a device that will not start) leaves the
    /// ports done so far and says so. Returns what changed.
    pub fn apply(&mut self, source: Source) -> Result<Vec<String>, ChangeError> {
        let new = Config::from_source(&source)?;
        let old = self.config.clone();
        if new.bridge.fdb_capacity != old.bridge.fdb_capacity {
            return Err(ChangeError::NeedsRestart("bridge.fdb_capacity"));
        }
        if new.bridge.mbufs != old.bridge.mbufs {
            return Err(ChangeError::NeedsRestart("bridge.mbufs"));
        }
        let mut done = Vec::new();
        let same_device = |a: &PortSpec, b: &PortSpec| {
            a.devargs == b.devargs
                && a.rx_queues == b.rx_queues
                && a.rx_desc == b.rx_desc
                && a.tx_desc == b.tx_desc
        };
        let gone: Vec<String> = old
            .ports
            .iter()
            .filter(|o| {
                !new.ports
                    .iter()
                    .any(|n| n.name == o.name && same_device(n, o))
            })
            .map(|o| o.name.clone())
            .collect();
        self.config.sflow = new.sflow.clone();
        let mut added_ports: Vec<String> = Vec::new();
        for name in &gone {
            if let Err(e) = self.remove_port(name) {
                return Err(partly(done, e));
            }
            self.bpdu_shut.retain(|n| n != name);
            done.push(format!("removed port {name}"));
        }
        for (pos, spec) in new.ports.iter().enumerate() {
            match self.ports.iter_mut().find(|p| p.spec.name == spec.name) {
                Some(sp) => {
                    let same = PortSpec {
                        origin: sp.spec.origin.clone(),
                        ..spec.clone()
                    } == sp.spec;
                    if !same {
                        if sp.spec.enabled != spec.enabled || !spec.enabled {
                            self.bpdu_shut.retain(|n| n != &spec.name);
                        }
                        sp.spec = spec.clone();
                        done.push(format!("changed port {}", spec.name));
                    }
                }
                None => {
                    if let Err(e) = self.add_port(spec.clone(), pos) {
                        return Err(partly(done, e));
                    }
                    added_ports.push(spec.name.clone());
                    done.push(format!("added port {}", spec.name));
                }
            }
        }
        // Configuration order is port order (the flood and queue spread follow it).
        self.ports.sort_by_key(|p| {
            new.ports
                .iter()
                .position(|n| n.name == p.spec.name)
                .unwrap_or(usize::MAX)
        });
        if new.bridge != old.bridge {
            self.edge.moves.set_limits(&new.bridge);
            done.push("changed bridge settings".to_owned());
        }
        self.config = new;
        self.source = source;
        self.publish_view(None);
        // Samplers: every port whose effective rate changed.
        if old.sflow != self.config.sflow || !done.is_empty() {
            for i in 0..self.ports.len() {
                let (id, rate) = (
                    self.ports[i].id(),
                    self.sampling_rate_of(&self.ports[i].spec),
                );
                let was = old
                    .ports
                    .iter()
                    .find(|o| o.name == self.ports[i].spec.name)
                    .map(|o| match &old.sflow {
                        Some(s) => o.sampling_rate.unwrap_or(s.sampling_rate),
                        None => 0,
                    });
                if was != Some(rate) {
                    for w in 0..self.nworkers {
                        let s = self.sampler(w, id, rate);
                        self.send(w, WorkerCommand::SetSampler(id, s));
                    }
                }
            }
            if old.sflow != self.config.sflow {
                done.push("changed sFlow settings".to_owned());
            }
            self.start_agent()
                .map_err(|e| ChangeError::Port(SwitchError::Sflow(e)))?;
        }
        // Static entries from the configuration: those dropped go, new ones come.
        for e in &old.fdb {
            if !self.config.fdb.contains(e) {
                self.fdb.remove(e.vlan, e.mac);
                done.push(format!("removed static entry {} VLAN {}", e.mac, e.vlan));
            }
        }
        // New entries, and every entry of a port brought up anew (its entries went with it).
        let added: Vec<_> = self
            .config
            .fdb
            .iter()
            .filter(|e| !old.fdb.contains(e) || added_ports.contains(&e.port))
            .cloned()
            .collect();
        if !added.is_empty() {
            crate::edge::install_static(&added, &self.port_ids(), &self.fdb);
            for e in added {
                done.push(format!(
                    "added static entry {} VLAN {} on {}",
                    e.mac, e.vlan, e.port
                ));
            }
        }
        self.wait_applied()?;
        if done.is_empty() {
            done.push("nothing changed".to_owned());
        }
        for d in &done {
            log::info!("config: {d}");
        }
        Ok(done)
    }

    /// Brings a port shut down by its BPDU guard back (it forwards once the snapshot is
    /// published, by the next apply).
    pub fn clear_bpdu_shutdown(&mut self, name: &str) -> bool {
        let before = self.bpdu_shut.len();
        self.bpdu_shut.retain(|n| n != name);
        before != self.bpdu_shut.len()
    }

    /// Re-reads the configuration file (with the start's --port flags) and applies it.
    pub fn reload(&mut self) -> Result<Vec<String>, ChangeError> {
        let (_, source) =
            Config::load_with_source(self.source.file.as_deref(), &self.source.flags)?;
        self.apply(source)
    }

    /// Runs until a stop signal or the duration.
    fn control_loop(
        &mut self,
        opts: &RunOptions,
        signals: &StopSignals,
        ctl_server: &mut ctl::Server,
    ) {
        let mut last_age_pass = 0u32;
        let mut last_summary = Instant::now();
        let mut last_totals = Counters::default();
        log::info!(
            "forwarding on {} ports; Ctrl-C or SIGTERM stops",
            self.ports.len()
        );
        loop {
            ctl_server.wait(TICK); // sleeps a tick, less when a control client is waiting
            if signals.raised() {
                log::info!("stop requested by signal");
                break;
            }
            if signals.reload_requested() {
                match self.reload() {
                    Ok(_) => log::info!("SIGHUP: configuration reloaded"),
                    Err(e) => {
                        log::error!("SIGHUP: configuration not reloaded, running as before: {e}")
                    }
                }
            }
            let elapsed = self.started.elapsed();
            if opts.duration.is_some_and(|d| elapsed >= d) {
                log::info!("--duration reached");
                break;
            }
            let now = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
            self.fdb.set_now(now);
            let totals = self.totals();
            self.sflow.drain(&totals);
            if let Some(agent) = self.sflow.agent.as_mut() {
                let ports = &self.ports;
                agent.tick(&totals, |id| {
                    ports
                        .iter()
                        .find(|sp| sp.id() == id)
                        .and_then(|sp| sp.port.stats().ok().map(|st| (st, sp.port.link())))
                });
            }
            self.edge.drain(&self.ports, &self.fdb);
            for name in self.edge.bpdu.check(&self.bridge, &totals, &self.ports) {
                if !self.bpdu_shut.contains(&name) {
                    self.bpdu_shut.push(name);
                }
            }
            if now != last_age_pass {
                last_age_pass = now;
                self.aged += self.fdb.age(now, self.config.bridge.fdb_aging_secs) as u64;
                self.edge.moves.expire(&self.fdb);
            }
            if ctl_server.poll(&mut ctl::Context { rt: self }) == ctl::Flow::Exit {
                log::info!("exit requested on the control socket");
                break;
            }
            if let Some(every) = opts.stats_interval {
                if last_summary.elapsed() >= every {
                    let secs = last_summary.elapsed().as_secs_f64();
                    last_summary = Instant::now();
                    let rx = totals.get(WorkerCounter::Packets)
                        - last_totals.get(WorkerCounter::Packets);
                    let mut line = report::summary_line(
                        &totals,
                        self.fdb.len(),
                        self.fdb.capacity(),
                        elapsed.as_secs_f64(),
                    );
                    line.push_str(&format!(" | {:.1} kpps", rx as f64 / secs / 1e3));
                    for sp in &self.ports {
                        line.push_str(&format!(
                            " | {} rx {} tx {}",
                            sp.spec.name,
                            sp.counter(&totals, PortCounter::RxPackets),
                            sp.counter(&totals, PortCounter::TxPackets)
                        ));
                    }
                    log::info!("{line}");
                    last_totals = totals;
                }
            }
        }
    }
}

/// The control thread's side of the managed edge: MAC move reports and flap damping, and
/// BPDU-guard shutdowns.
struct EdgeState {
    moves: MoveTracker,
    rings: Vec<RingConsumer<MoveEvent>>,
    buf: Vec<MoveEvent>,
    bpdu: BpduWatch,
}

impl EdgeState {
    /// Takes every waiting move report.
    fn drain(&mut self, ports: &[SwitchPort], fdb: &Fdb) {
        let name_of = |id: u16| {
            ports
                .iter()
                .find(|p| p.id() == id)
                .map_or_else(|| format!("port {id}"), |p| p.spec.name.clone())
        };
        for ring in self.rings.iter_mut() {
            loop {
                let n = ring.dequeue_burst(&mut self.buf);
                if n == 0 {
                    break;
                }
                self.moves.on_moves(&self.buf[..n], fdb, &name_of);
            }
        }
    }
}

/// The sFlow agent (when on), the control thread's ends of the workers' sample rings, and the
/// buffer records are drained into (allocated once, reused every tick).
struct SflowExport {
    agent: Option<Agent>,
    rings: Vec<RingConsumer<SampleRecord>>,
    buf: Vec<SampleRecord>,
}

impl SflowExport {
    /// Moves every waiting sample record from the workers' rings into the agent.
    fn drain(&mut self, totals: &Counters) {
        for (w, ring) in self.rings.iter_mut().enumerate() {
            loop {
                let n = ring.dequeue_burst(&mut self.buf);
                if n == 0 {
                    break;
                }
                if let Some(agent) = self.agent.as_mut() {
                    agent.on_samples(w, &self.buf[..n], totals);
                }
            }
        }
    }
}

/// Every worker's published counters, summed.
fn sum_counters(stats: &[Arc<WorkerStats>]) -> Counters {
    let mut totals = Counters::default();
    for s in stats {
        totals.accumulate(&s.snapshot());
    }
    totals
}

/// A per-run seed for the samplers, so that runs do not repeat each other's skips.
fn started_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}
