//! Builds the switch from the configuration (EAL, ports, pool, workers, the runtime), runs
//! the control loop until a stop, and tears everything down in DPDK's order. The running
//! state lives in [`crate::runtime`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{self, spsc_ring, DpdkError, Eal, LcoreId, Mempool, BURST_SIZE, MAX_PORTS};
use dataplane::fdb::Fdb;
use dataplane::forward::BridgeView;
use dataplane::sample::{DropRecord, SampleRecord, Sampler};
use dataplane::stats::{Counters, PortCounter, WorkerCounter, WorkerStats};
use dataplane::worker::{BridgeCell, DropReporting, MoveEvent, Sampling, Worker};

use crate::config::{Config, Source};
use crate::ctl;
use crate::port::{PortError, Probed, SwitchPort, MEMPOOL_CACHE};
use crate::report::{self, Report};
use crate::runtime::{Parts, Runtime, RxqAssignment};
use crate::signals::StopSignals;

/// How often the control loop wakes: the stop latency, and how often the sample rings are
/// drained (at 10 ms a 4095-record ring absorbs 400K samples/s per worker).
const TICK: Duration = Duration::from_millis(10);
// Ring capacities are 2^k - 1: DPDK then uses exactly 2^k slots (2^k asks for 2^(k+1)), and
// a smaller footprint leaves more of the worker's cache to the tables.
/// Sample records each worker's ring holds.
const SAMPLE_RING: u32 = 4095;
/// MAC move reports each worker's ring holds between two control ticks.
const MOVE_RING: u32 = 1023;
/// Drop records per worker ring: a second's budget at most is offered, the control thread
/// drains it every tick.
const DROP_RING: u32 = 1023;

/// Why the switch could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// EAL initialisation failed (bad EAL arguments, no hugepages...).
    #[error("DPDK EAL initialisation failed: {0}. Check the EAL arguments after `--` and that hugepages are set up (scripts/setup.sh)")]
    Eal(DpdkError),
    /// No lcore is left for a worker.
    #[error("no worker lcore: give the EAL at least two lcores, e.g. `-- -l 0,1` (the first runs the control thread, the others forward)")]
    NoWorkers,
    /// A port could not be brought up (or the pool made).
    #[error(transparent)]
    Port(#[from] PortError),
    /// A ring to a worker could not be made.
    #[error("{what}: {source}")]
    Ring {
        /// Which ring.
        what: &'static str,
        /// DPDK's error.
        source: DpdkError,
    },
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

/// Runs the switch until a signal or the duration ends it. Returns the final report.
pub fn run(
    config: &Config,
    source: Source,
    eal_args: &[String],
    opts: &RunOptions,
) -> Result<Report, SwitchError> {
    let signals = StopSignals::install().map_err(SwitchError::Signals)?;
    // The vhost library logs every vhost-user message at INFO (some 160 lines a guest
    // connection): quieter unless the EAL arguments ask for it (a later --log-level wins).
    let mut args = vec!["--log-level=lib.vhost.config:notice".to_owned()];
    args.extend_from_slice(eal_args);
    let eal = Eal::init(&args).map_err(SwitchError::Eal)?;
    signals.unblock_here().map_err(SwitchError::Signals)?;
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

fn run_with_eal(
    eal: &Eal,
    lcores: &[LcoreId],
    config: &Config,
    source: Source,
    opts: &RunOptions,
    signals: &StopSignals,
) -> Result<Report, SwitchError> {
    let nworkers = lcores.len();

    // Probe every port first: the pool is sized from their queues.
    let events = crossbeam_channel::unbounded();
    let mut probed = Vec::with_capacity(config.ports.len());
    for spec in &config.ports {
        probed.push(Probed::new(spec.clone(), nworkers, &events.0)?);
    }
    let pool_size = match config.bridge.mbufs {
        Some(n) => n,
        None => {
            let mut n: u64 = probed
                .iter()
                .filter(|p| p.rx_buffer.is_none())
                .map(Probed::mbufs)
                .sum();
            // Per-lcore caches, every worker's tx batches and rx burst, and headroom.
            n += (nworkers as u64 + 1) * u64::from(MEMPOOL_CACHE) * 3 / 2;
            n += nworkers as u64 * (MAX_PORTS as u64 + 1) * BURST_SIZE as u64;
            n += 4096;
            u32::try_from(n).unwrap_or(u32::MAX)
        }
    };
    let pool = Arc::new(
        Mempool::new_pktmbuf("pmdswitch_mbufs", pool_size, MEMPOOL_CACHE, -1)
            .map_err(PortError::Mempool)?,
    );
    log::info!("mbuf pool: {pool_size} mbufs");
    let mut ports: Vec<SwitchPort> = Vec::with_capacity(probed.len());
    for (i, p) in probed.into_iter().enumerate() {
        // A device that needs a whole large frame in one buffer gets a pool of its own.
        let sp = match p.rx_buffer {
            Some(_) => {
                let own = p.own_pool(&format!("pmdswitch_s{i}"), nworkers)?;
                let mut sp = p.start(&own)?;
                sp.own_pool = Some(own);
                sp
            }
            None => p.start(&pool)?,
        };
        ports.push(sp);
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

    // Every worker gets a sample ring, a move ring and a command channel; sampling runs at
    // rate 0 (one compare per burst) until sFlow is configured.
    let mut workers = Vec::with_capacity(nworkers);
    let mut sample_rings = Vec::with_capacity(nworkers);
    let mut move_rings = Vec::with_capacity(nworkers);
    let mut drop_rings = Vec::with_capacity(nworkers);
    let mut commands = Vec::with_capacity(nworkers);
    // Dropped-packet notifications a second each worker may offer; the runtime sets it.
    let drop_budget = Arc::new(AtomicU32::new(0));
    for (&lcore, st) in lcores.iter().zip(&stats) {
        let ring_err = |what: &'static str| move |source| SwitchError::Ring { what, source };
        let (samples, sample_rx) =
            spsc_ring::<SampleRecord>(&format!("sflow_{lcore}"), SAMPLE_RING)
                .map_err(ring_err("sFlow sample ring"))?;
        let (moves, moves_rx) = spsc_ring::<MoveEvent>(&format!("moves_{lcore}"), MOVE_RING)
            .map_err(ring_err("MAC move ring"))?;
        let (drops, drops_rx) = spsc_ring::<DropRecord>(&format!("drops_{lcore}"), DROP_RING)
            .map_err(ring_err("sFlow drop ring"))?;
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
            drops: Some(DropReporting {
                ring: drops,
                budget: Arc::clone(&drop_budget),
                header_bytes: config
                    .sflow
                    .as_ref()
                    .map_or(128, |s| s.header_bytes as usize),
            }),
            commands: rx,
        });
        sample_rings.push(sample_rx);
        move_rings.push(moves_rx);
        drop_rings.push(drops_rx);
        commands.push(tx);
    }

    // Hand out the queues: rx queue q of the i-th port goes to worker (i + q) mod n, so the
    // queues of one port land on different workers; every worker gets a tx queue on every port.
    let mut rxqs: Vec<RxqAssignment> = Vec::new();
    for (i, sp) in ports.iter_mut().enumerate() {
        let (rx, tx) = sp
            .port
            .queues(nworkers)
            .map_err(|source| PortError::Setup {
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

    let mut rt = Runtime::new(Parts {
        ports,
        pool: Arc::clone(&pool),
        fdb: Arc::clone(&fdb),
        bridge,
        stats: stats.clone(),
        commands,
        sample_rings,
        move_rings,
        drop_rings,
        drop_budget,
        rxqs,
        config: config.clone(),
        source,
        run_seed: started_seed(),
        events,
    });
    // Before the workers start: VM ports whose guests are there already, the snapshot, the
    // samplers and the sFlow agent.
    let ids: Vec<u16> = rt.ports.iter().map(SwitchPort::id).collect();
    for id in ids {
        rt.on_link(id);
    }
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
    rt.mempool_at_start = pool.in_use();
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

    control_loop(&mut rt, opts, signals, &mut ctl_server);

    stop.store(true, Ordering::Release);
    for &l in &launched {
        let ret = eal.wait(l);
        if ret != 0 {
            log::error!("worker on lcore {l} returned {ret}");
        }
    }
    // The workers are gone: what is left in their rings is exported, then the ports close.
    let rep = rt.finish();
    log::info!(
        "{}",
        report::summary_line(&rep.totals(), fdb.len(), fdb.capacity(), rep.elapsed_secs)
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

/// Runs until a stop signal, the duration or `exit` on the control socket; reloads the
/// configuration on SIGHUP, serves the control socket and logs a summary now and then.
fn control_loop(
    rt: &mut Runtime,
    opts: &RunOptions,
    signals: &StopSignals,
    ctl_server: &mut ctl::Server,
) {
    let mut last_summary = Instant::now();
    let mut last_totals = Counters::default();
    log::info!(
        "forwarding on {} ports; Ctrl-C or SIGTERM stops",
        rt.ports.len()
    );
    loop {
        ctl_server.wait(TICK); // sleeps a tick, less when a control client is waiting
        if signals.raised() {
            log::info!("stop requested by signal");
            break;
        }
        if signals.reload_requested() {
            match rt.reload() {
                Ok(_) => log::info!("SIGHUP: configuration reloaded"),
                Err(e) => {
                    log::error!("SIGHUP: configuration not reloaded, running as before: {e}")
                }
            }
        }
        let elapsed = rt.started.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            log::info!("--duration reached");
            break;
        }
        rt.tick();
        if ctl_server.poll(&mut ctl::Context { rt }) == ctl::Flow::Exit {
            log::info!("exit requested on the control socket");
            break;
        }
        if let Some(every) = opts.stats_interval {
            if last_summary.elapsed() >= every {
                let secs = last_summary.elapsed().as_secs_f64();
                last_summary = Instant::now();
                let totals = rt.totals();
                let rx =
                    totals.get(WorkerCounter::Packets) - last_totals.get(WorkerCounter::Packets);
                let mut line = report::summary_line(
                    &totals,
                    rt.fdb.len(),
                    rt.fdb.capacity(),
                    elapsed.as_secs_f64(),
                );
                line.push_str(&format!(" | {:.1} kpps", rx as f64 / secs / 1e3));
                for sp in &rt.ports {
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

/// A per-run seed for the samplers, so that runs do not repeat each other's skips.
fn started_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}
