//! Builds the ports and workers from the configuration, runs the control loop (clock, aging,
//! stats), and shuts everything down in DPDK's order.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{self, DpdkError, Eal, Mempool, Port, PortConfig, BURST_SIZE, MAX_PORTS};
use dataplane::dpdk::{spsc_ring, RingConsumer};
use dataplane::fdb::Fdb;
use dataplane::forward::BridgeView;
use dataplane::sample::{SampleRecord, Sampler};
use dataplane::stats::{Counters, PortCounter, WorkerCounter, WorkerStats};
use dataplane::worker::{Sampling, Worker};

use crate::config::{Config, PortSpec};
use crate::ctl::{self, RxqAssignment};
use crate::report::{self, Report};
use crate::sflow::agent::{Agent, AgentPort};

/// Per-lcore mbuf cache of the pool.
const MEMPOOL_CACHE: u32 = 256;
/// How often the control loop wakes: the stop latency, and how often the sample rings are
/// drained (at 10 ms a 4096-record ring absorbs 400K samples/s per worker).
const TICK: Duration = Duration::from_millis(10);
/// Sample records each worker's ring holds.
const SAMPLE_RING: u32 = 4096;

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
}

/// Signals that stop the switch, observed by the control loop.
struct StopSignals {
    flag: Arc<AtomicBool>,
}

impl StopSignals {
    /// Blocks SIGINT/SIGTERM in this thread, so that the threads the EAL creates inherit the
    /// mask and never take them, and installs handlers that set one flag.
    fn install() -> Result<StopSignals, SwitchError> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(SwitchError::Signals)?;
        }
        Self::mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
        Ok(StopSignals { flag })
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
        nix::sys::signal::pthread_sigmask(how, Some(&set), None)
            .map_err(|e| SwitchError::Signals(std::io::Error::from(e)))
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Runs the switch until a signal or the duration ends it. Returns the final report.
pub fn run(config: &Config, eal_args: &[String], opts: &RunOptions) -> Result<Report, SwitchError> {
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
    let report = run_with_eal(&eal, &lcores, config, opts, &signals)?;
    drop(eal);
    Ok(report)
}

fn run_with_eal(
    eal: &Eal,
    lcores: &[dpdk::LcoreId],
    config: &Config,
    opts: &RunOptions,
    signals: &StopSignals,
) -> Result<Report, SwitchError> {
    let nworkers = lcores.len();
    let workers_u16 = u16::try_from(nworkers).unwrap_or(u16::MAX);

    // Probe every port first: the pool is sized from their queues.
    let mut probed = Vec::with_capacity(config.ports.len());
    for spec in &config.ports {
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
        probed.push((spec.clone(), port, info, queues));
    }

    let pool_size = match config.bridge.mbufs {
        Some(n) => n,
        None => {
            let mut n: u64 = 0;
            for (spec, _, _, q) in &probed {
                n += u64::from(q.rx_queues) * u64::from(q.rx_desc)
                    + u64::from(q.tx_queues) * u64::from(q.tx_desc);
                n += crate::pcap::preloaded_frames(&spec.devargs);
            }
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
    for (spec, mut port, info, queues) in probed {
        let setup = |e| SwitchError::PortSetup {
            name: spec.name.clone(),
            source: e,
        };
        let applied = port.configure(queues, Arc::clone(&pool)).map_err(setup)?;
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
        ports.push(SwitchPort {
            spec,
            port,
            driver: info.driver,
            queues: applied,
        });
    }

    let fdb = Arc::new(Fdb::new(config.bridge.fdb_capacity));
    let bridge = Arc::new(BridgeView {
        ports: ports.iter().map(|p| p.port.id().0).collect(),
        mtu: config.bridge.mtu,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<Arc<WorkerStats>> = lcores
        .iter()
        .map(|l| Arc::new(WorkerStats::new(l.0)))
        .collect();

    // Hand out the queues: rx queue q of the i-th port goes to worker (i + q) mod n, so the
    // queues of one port land on different workers; every worker gets a tx queue on every port.
    let mut workers: Vec<Worker> = lcores
        .iter()
        .zip(&stats)
        .map(|(&lcore, st)| Worker {
            lcore,
            rx: Vec::new(),
            tx: (0..MAX_PORTS).map(|_| None).collect(),
            bridge: Arc::clone(&bridge),
            fdb: Arc::clone(&fdb),
            stats: Arc::clone(st),
            stop: Arc::clone(&stop),
            sampling: None,
        })
        .collect();
    let mut rxqs: Vec<RxqAssignment> = Vec::new(); // for pmd/rxq-show
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

    // sFlow: a sampler per (worker, port) and a ring per worker to the control thread.
    let mut sflow: Option<SflowExport> = None;
    if let Some(spec) = &config.sflow {
        let agent_ports: Vec<AgentPort> = ports
            .iter()
            .map(|sp| AgentPort {
                port_id: sp.port.id().0,
                if_index: sp.spec.if_index,
                sampling_rate: sp.spec.sampling_rate.unwrap_or(spec.sampling_rate),
            })
            .collect();
        let mut rings = Vec::with_capacity(workers.len());
        let run_seed = started_seed();
        for worker in workers.iter_mut() {
            let (producer, consumer) =
                spsc_ring::<SampleRecord>(&format!("sflow_{}", worker.lcore), SAMPLE_RING)
                    .map_err(|e| SwitchError::Sflow(e.to_string()))?;
            let mut samplers: Vec<Sampler> = (0..MAX_PORTS).map(|_| Sampler::new(0, 1)).collect();
            for p in &agent_ports {
                // Distinct seeds: no two samplers draw the same skips.
                let seed =
                    (u64::from(worker.lcore.0) << 32) ^ (u64::from(p.port_id) << 16) ^ run_seed;
                samplers[usize::from(p.port_id)] = Sampler::new(p.sampling_rate, seed);
            }
            worker.sampling = Some(Sampling {
                samplers,
                header_bytes: spec.header_bytes as usize,
                ring: producer,
            });
            rings.push(consumer);
        }
        let agent = Agent::new(spec.clone(), &agent_ports, workers.len())
            .map_err(|e| SwitchError::Sflow(e.to_string()))?;
        log::info!(
            "sFlow: agent {}, collectors {:?}, sampling 1-in-{} (per-port overrides apply), counters every {} s",
            spec.agent_address,
            spec.collectors,
            spec.sampling_rate,
            spec.polling_interval
        );
        sflow = Some(SflowExport {
            agent,
            rings,
            buf: vec![SampleRecord::default(); 256],
        });
    }

    let mut ctl_server = ctl::Server::bind(&opts.ctl)?; // the control socket and /metrics
    let mempool_at_start = pool.in_use();
    let started = Instant::now();
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

    let ctx = LoopContext {
        ports: &ports,
        fdb: &fdb,
        stats: &stats,
        config,
        opts,
        signals,
        started,
        pool: &pool,
        mempool_at_start,
        rxqs: &rxqs,
    };
    let aged = control_loop(&ctx, &mut sflow, &mut ctl_server);

    stop.store(true, Ordering::Release);
    for &l in &launched {
        let ret = eal.wait(l);
        if ret != 0 {
            log::error!("worker on lcore {l} returned {ret}");
        }
    }
    let elapsed = started.elapsed();
    if let Some(export) = sflow.as_mut() {
        // The workers are gone: what is left in the rings is exported, then the last datagram.
        export.drain(&sum_counters(&stats));
        export.agent.flush();
    }
    let mempool_at_stop = pool.in_use();
    let mut rep = report::build(report::Inputs {
        elapsed,
        ports: &ports,
        workers: &stats,
        fdb: &fdb,
        aged,
        pool: &pool,
        mempool_at_start,
        mempool_at_stop,
    });
    for mut sp in ports {
        if let Err(e) = sp.port.close() {
            log::error!("closing port {}: {e}", sp.spec.name);
        }
    }
    rep.sflow = sflow.as_ref().map(|e| e.agent.stats());
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
    drop(pool);
    Ok(rep)
}

/// Runs until a stop signal or the duration. Returns the number of entries aged out.
/// What the control loop reads.
struct LoopContext<'a> {
    ports: &'a [SwitchPort],
    fdb: &'a Fdb,
    stats: &'a [Arc<WorkerStats>],
    config: &'a Config,
    opts: &'a RunOptions,
    signals: &'a StopSignals,
    started: Instant,
    pool: &'a Mempool,
    mempool_at_start: u32,
    rxqs: &'a [RxqAssignment],
}

/// The sFlow agent, the control thread's ends of the workers' sample rings, and the buffer
/// records are drained into (allocated once, reused every tick).
struct SflowExport {
    agent: Agent,
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
                self.agent.on_samples(w, &self.buf[..n], totals);
            }
        }
    }
}

fn control_loop(
    ctx: &LoopContext<'_>,
    sflow: &mut Option<SflowExport>,
    ctl_server: &mut ctl::Server,
) -> u64 {
    let LoopContext {
        ports,
        fdb,
        stats,
        config,
        opts,
        signals,
        started,
        pool,
        mempool_at_start,
        rxqs,
    } = *ctx;
    let mut ctl_view = ctl::Context {
        bridge: &config.bridge.name,
        ports,
        fdb,
        workers: stats,
        config,
        pool,
        mempool_at_start,
        rxqs,
        started,
        aged: 0,
        sflow: None,
    };
    let mut aged: u64 = 0;
    let mut last_age_pass = 0u32;
    let mut last_summary = Instant::now();
    let mut last_totals = Counters::default();
    log::info!(
        "forwarding on {} ports; Ctrl-C or SIGTERM stops",
        ports.len()
    );
    loop {
        ctl_server.wait(TICK); // sleeps a tick, less when a control client is waiting
        if signals.raised() {
            log::info!("stop requested by signal");
            break;
        }
        let elapsed = started.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            log::info!("--duration reached");
            break;
        }
        let now = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
        fdb.set_now(now);
        if let Some(export) = sflow.as_mut() {
            let totals = sum_counters(stats);
            export.drain(&totals);
            export.agent.tick(&totals, |id| {
                ports
                    .iter()
                    .find(|sp| sp.port.id().0 == id)
                    .and_then(|sp| sp.port.stats().ok().map(|st| (st, sp.port.link())))
            });
        }
        if now != last_age_pass {
            last_age_pass = now;
            aged += fdb.age(now, config.bridge.fdb_aging_secs) as u64;
        }
        (ctl_view.aged, ctl_view.sflow) = (aged, sflow.as_ref().map(|e| e.agent.stats()));
        if ctl_server.poll(&mut ctl_view) == ctl::Flow::Exit {
            break;
        }
        if let Some(every) = opts.stats_interval {
            if last_summary.elapsed() >= every {
                let secs = last_summary.elapsed().as_secs_f64();
                last_summary = Instant::now();
                let totals = sum_counters(stats);
                let rx =
                    totals.get(WorkerCounter::Packets) - last_totals.get(WorkerCounter::Packets);
                let mut line =
                    report::summary_line(&totals, fdb.len(), fdb.capacity(), elapsed.as_secs_f64());
                line.push_str(&format!(" | {:.1} kpps", rx as f64 / secs / 1e3));
                for sp in ports {
                    let idx = sp.port.id().index();
                    line.push_str(&format!(
                        " | {} rx {} tx {}",
                        sp.spec.name,
                        totals.port(idx, PortCounter::RxPackets),
                        totals.port(idx, PortCounter::TxPackets)
                    ));
                }
                log::info!("{line}");
                last_totals = totals;
            }
        }
    }
    aged
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
