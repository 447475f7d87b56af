//! The running switch as the control thread holds it: ports, MAC table, the snapshot the
//! workers forward by, their command channels, the configuration in force and its source,
//! sFlow export and the edge's state. The control socket reads and changes it; `switch.rs`
//! builds it and tears it down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{EventSender, Mempool, PortEvent, RingConsumer};
use dataplane::fdb::Fdb;
use dataplane::sample::{DropRecord, SampleRecord, Sampler};
use dataplane::stats::{Counters, VlanCounts, WorkerStats};
use dataplane::worker::{BridgeCell, MoveEvent, WorkerCommand};

use crate::config::{Config, PortSpec, Source};
use crate::edge::{BpduWatch, MoveTracker};
use crate::port::{PortError, Probed, SwitchPort};
use crate::report::{self, Report};
use crate::sflow::agent::{Agent, AgentPort, AgentStats};

/// Control ticks (10 ms each) over which one aging pass of the MAC table is spread.
const AGE_SLICES_PER_PASS: usize = 100;

/// How long a worker may take to acknowledge a change (it looks every ~1024 poll rounds).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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
    Port(#[from] PortError),
    /// The sFlow agent could not take the new settings.
    #[error("sFlow agent: {0}")]
    Sflow(String),
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

/// Which worker polls which rx queue (`pmd/rxq-show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxqAssignment {
    /// The worker's lcore.
    pub lcore: u32,
    /// The port's name.
    pub port: String,
    /// The rx queue.
    pub queue: u16,
}

/// What the switch's start hands the runtime: everything built before the workers run.
pub struct Parts {
    /// The started ports, in configuration order.
    pub ports: Vec<SwitchPort>,
    /// The start's mbuf pool.
    pub pool: Arc<Mempool>,
    /// The MAC table.
    pub fdb: Arc<Fdb>,
    /// The snapshot cell the workers read.
    pub bridge: Arc<BridgeCell>,
    /// Every worker's published counters, in worker order.
    pub stats: Vec<Arc<WorkerStats>>,
    /// Every worker's command channel, in worker order.
    pub commands: Vec<crossbeam_channel::Sender<WorkerCommand>>,
    /// The control thread's ends of the workers' sample rings.
    pub sample_rings: Vec<RingConsumer<SampleRecord>>,
    /// The control thread's ends of the workers' MAC move rings.
    pub move_rings: Vec<RingConsumer<MoveEvent>>,
    /// The control thread's ends of the workers' drop rings (sFlow drop notifications).
    pub drop_rings: Vec<RingConsumer<DropRecord>>,
    /// Drop notifications a second each worker may offer (0 while sFlow or they are off).
    pub drop_budget: Arc<AtomicU32>,
    /// Who polls which rx queue.
    pub rxqs: Vec<RxqAssignment>,
    /// The configuration at start.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Seeds the samplers, so that runs do not repeat each other's skips.
    pub run_seed: u64,
    /// Where the ports' drivers post link and queue events, and where they are read.
    pub events: (EventSender, crossbeam_channel::Receiver<PortEvent>),
}

/// The running switch, as the control thread holds it: ports, table, snapshot, the workers'
/// command channels, configuration and its source, sFlow and edge state.
pub struct Runtime {
    nworkers: usize,
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
    last_age_pass: u32,
    /// The next fdb bucket to age.
    age_cursor: usize,
    events: (EventSender, crossbeam_channel::Receiver<PortEvent>),
    /// Entries aged out so far.
    pub aged: u64,
    /// When the workers started.
    pub started: Instant,
}

impl Runtime {
    /// The runtime of a switch whose ports are started and whose workers are about to run.
    pub fn new(p: Parts) -> Runtime {
        let nworkers = p.stats.len();
        Runtime {
            nworkers,
            ports: p.ports,
            pool: p.pool,
            fdb: p.fdb,
            bridge: p.bridge,
            stats: p.stats,
            commands: p.commands,
            sent: vec![0; nworkers],
            sflow: SflowExport {
                agent: None,
                rings: p.sample_rings,
                buf: vec![SampleRecord::default(); 256],
                drop_rings: p.drop_rings,
                drop_buf: vec![DropRecord::default(); 64],
                drop_budget: p.drop_budget,
            },
            edge: EdgeState {
                moves: MoveTracker::new(&p.config.bridge),
                rings: p.move_rings,
                buf: vec![MoveEvent::default(); 256],
                bpdu: BpduWatch::default(),
            },
            config: p.config,
            source: p.source,
            bpdu_shut: Vec::new(),
            rxqs: p.rxqs,
            mempool_at_start: 0,
            run_seed: p.run_seed,
            pool_seq: 0,
            last_age_pass: 0,
            age_cursor: 0,
            events: p.events,
            aged: 0,
            started: Instant::now(),
        }
    }

    /// (port id, spec) of every port.
    pub fn port_ids(&self) -> Vec<(u16, &PortSpec)> {
        self.ports.iter().map(|p| (p.id(), &p.spec)).collect()
    }

    /// Every worker's counters, summed.
    pub fn totals(&self) -> Counters {
        sum_counters(&self.stats)
    }

    /// Every worker's per-VLAN counts, summed.
    pub fn vlan_totals(&self) -> VlanCounts {
        let mut all = VlanCounts::default();
        for s in &self.stats {
            all.accumulate(&s.vlan_snapshot());
        }
        all
    }

    /// The sFlow agent's counts, when sFlow is on.
    pub fn sflow_stats(&self) -> Option<AgentStats> {
        self.sflow.agent.as_ref().map(|a| a.stats())
    }

    /// The stats report as of now: the figures `--stats-json` writes on exit.
    pub fn report(&self) -> Report {
        let view = self.bridge.load_full();
        let enabled = |id: u16| view.is_enabled(id);
        let mut r = report::build(report::Inputs {
            enabled: Some(&enabled),
            elapsed: self.started.elapsed(),
            ports: &self.ports,
            workers: &self.stats,
            fdb: &self.fdb,
            aged: self.aged,
            pool: &self.pool,
            mempool_at_start: self.mempool_at_start,
            mempool_at_stop: self.pool.in_use(),
        });
        r.sflow = self.sflow_stats();
        r.fdb.flap_holds = self.edge.moves.holds;
        r.fdb.recent_moves = self.edge.moves.history().cloned().collect();
        r.fdb.held = self.edge.moves.held();
        r
    }

    /// The 1-in-N sampling rate of a port under the configuration in force (0: off).
    pub fn sampling_rate_of(&self, spec: &PortSpec) -> u32 {
        match &self.config.sflow {
            Some(s) => spec.sampling_rate.unwrap_or(s.sampling_rate),
            None => 0,
        }
    }

    /// A sampler for `port` on worker `worker`, seeded apart from every other.
    pub fn sampler(&self, worker: usize, port: u16, rate: u32) -> Sampler {
        let lcore = self.stats[worker].lcore();
        let seed = (u64::from(lcore) << 32) ^ (u64::from(port) << 16) ^ self.run_seed;
        Sampler::new(rate, seed)
    }

    /// Builds the snapshot from the configuration and the ports, and publishes it.
    /// `except`: a port still open but already out of the bridge (being removed).
    pub fn publish_view(&self, except: Option<u16>) {
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
            u16::try_from(self.nworkers).unwrap_or(u16::MAX),
        );
        for p in ports {
            if !p.spec.enabled || self.bpdu_shut.contains(&p.spec.name) {
                view = view.with_port_enabled(p.id(), false);
            }
            if p.vm.as_ref().is_some_and(|vm| vm.guest.is_none()) {
                view = view.with_port_link(p.id(), false);
            }
        }
        self.bridge.store(Arc::new(view));
    }

    /// (Re)starts the sFlow agent for the configuration in force.
    pub fn start_agent(&mut self) -> Result<(), String> {
        let Some(spec) = self.config.sflow.clone() else {
            self.sflow.drop_budget.store(0, Ordering::Relaxed);
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
                name: sp.spec.name.clone(),
            })
            .collect();
        let result = match self.sflow.agent.as_mut() {
            Some(agent) => agent.reconfigure(spec.clone(), &ports, self.nworkers),
            None => Agent::new(spec.clone(), &ports, self.nworkers).map(|a| {
                self.sflow.agent = Some(a);
            }),
        };
        result.map_err(|e| e.to_string())?;
        self.sflow
            .drop_budget
            .store(spec.drop_notifications, Ordering::Relaxed);
        log::info!(
            "sFlow: agent {}, collectors {:?}, sampling 1-in-{} (per-port overrides apply), counters every {} s, up to {} drop notifications a second",
            spec.agent_address,
            spec.collectors,
            spec.sampling_rate,
            spec.polling_interval,
            spec.drop_notifications
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
        let probed = Probed::new(spec, self.nworkers, &self.events.0)?;
        self.pool_seq += 1;
        let pool = probed.own_pool(&format!("pmdswitch_p{}", self.pool_seq), self.nworkers)?;
        let mut sp = probed.start(&pool)?;
        sp.own_pool = Some(pool);
        sp.base = self.totals();
        let (rx, tx) = sp
            .port
            .queues(self.nworkers)
            .map_err(|source| PortError::Setup {
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
        // A VM port whose guest was already waiting (client mode) is up at once.
        self.on_link(id);
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
        let running: HashMap<String, u32> = self
            .ports
            .iter()
            .map(|p| (p.spec.name.clone(), p.spec.if_index))
            .collect();
        let new = Config::from_source(&source, &running)?;
        let old = self.config.clone();
        if new.bridge.fdb_capacity != old.bridge.fdb_capacity {
            return Err(ChangeError::NeedsRestart("bridge.fdb_capacity"));
        }
        if new.bridge.mbufs != old.bridge.mbufs {
            return Err(ChangeError::NeedsRestart("bridge.mbufs"));
        }
        let mut done = Vec::new();
        // What the device is set up with: a change brings the port up again (an MTU too:
        // its buffers, scatter and device MTU are chosen for it).
        let same_device = |a: &PortSpec, b: &PortSpec| {
            a.devargs == b.devargs
                && a.rx_queues == b.rx_queues
                && a.rx_desc == b.rx_desc
                && a.tx_desc == b.tx_desc
                && a.mtu == b.mtu
        };
        // An MTU the running device cannot take is refused before anything is taken down.
        for spec in &new.ports {
            if let Some(sp) = self.ports.iter().find(|p| {
                p.spec.name == spec.name && p.spec.devargs == spec.devargs && p.spec.mtu != spec.mtu
            }) {
                crate::port::check_mtu(spec, &sp.info)?;
            }
        }
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
            self.start_agent().map_err(ChangeError::Sflow)?;
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
            Config::load_with_source(self.source.file.as_deref(), &self.source.start_flags)?;
        self.apply(source)
    }

    /// Takes the link and queue events the ports' drivers posted: a guest that connected or
    /// went away, queues it enabled or disabled.
    fn on_port_events(&mut self) {
        let mut links = Vec::new();
        while let Ok(ev) = self.events.1.try_recv() {
            match ev {
                PortEvent::Link(id) => links.push(id.0),
                PortEvent::QueueState(id) => self.on_queues(id.0),
            }
        }
        links.dedup();
        let changed = links.into_iter().fold(false, |c, id| self.on_link(id) | c);
        if changed {
            self.publish_view(None);
        }
    }

    /// Opens and closes a VM port's queues as its guest enabled or disabled them.
    fn on_queues(&mut self, id: u16) {
        let Some(sp) = self.ports.iter().find(|p| p.id() == id) else {
            return;
        };
        for ev in sp.port.vhost_queue_events() {
            sp.port.set_queue_enabled(ev.rx, ev.queue, ev.enable);
            log::info!(
                "port {}: guest {} {} queue {}",
                sp.spec.name,
                if ev.enable { "enabled" } else { "disabled" },
                if ev.rx { "rx" } else { "tx" },
                ev.queue
            );
        }
    }

    /// Follows a VM port's link: when its guest connects, logs what it negotiated; when it
    /// goes, closes its queues and flushes the addresses learned on it (so that traffic to
    /// them floods rather than going into a hole). True when the link changed (the snapshot
    /// must follow).
    pub fn on_link(&mut self, id: u16) -> bool {
        let Some(i) = self.ports.iter().position(|p| p.id() == id) else {
            return false;
        };
        let up = self.ports[i].port.link().up;
        let guest = if up {
            self.ports[i].port.vhost_guest()
        } else {
            None
        };
        let sp = &mut self.ports[i];
        let Some(vm) = sp.vm.as_mut() else {
            return false;
        };
        if vm.guest.is_some() == guest.is_some() {
            return false;
        }
        vm.guest = guest;
        match guest {
            Some(g) => {
                let name = sp.spec.name.clone();
                let (path, mode, offered) = (
                    vm.socket.path.display().to_string(),
                    vm.socket.mode.name(),
                    vm.socket.queues,
                );
                self.on_queues(id);
                let enabled = self.ports[i].port.enabled_queues().unwrap_or_default();
                log::info!(
                    "port {name}: guest connected on {path} ({mode} mode): {} of {offered} queue pairs set up, rx queues {:?} and tx queues {:?} enabled; features: {}",
                    g.vrings / 2,
                    enabled.rx,
                    enabled.tx,
                    crate::vhost::feature_names(g.features).join(" ")
                );
            }
            None => {
                sp.port.close_queues();
                let gone = self.fdb.flush(Some(id));
                log::info!(
                    "port {}: guest gone from {}: link down, {gone} learned addresses flushed",
                    sp.spec.name,
                    vm.socket.path.display()
                );
            }
        }
        true
    }

    /// The control thread's periodic work, every tick: the table's clock and aging, sample
    /// records into sFlow datagrams and counter samples, MAC move reports, BPDU shutdowns,
    /// VM ports' guests coming and going.
    pub fn tick(&mut self) {
        self.on_port_events();
        let now = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        self.fdb.set_now(now);
        let totals = self.totals();
        self.sflow.drain(&totals);
        let vlans = if self.sflow.agent.is_some() {
            self.vlan_totals()
        } else {
            VlanCounts::default()
        };
        if let Some(agent) = self.sflow.agent.as_mut() {
            let ports = &self.ports;
            agent.tick(&vlans, |id| {
                let sp = ports.iter().find(|sp| sp.id() == id)?;
                let dev = sp.port.stats().ok()?;
                Some((sp.if_counters(&totals, &dev), sp.port.link()))
            });
        }
        self.edge.drain(&self.ports, &self.fdb);
        for name in self.edge.bpdu.check(&self.bridge, &totals, &self.ports) {
            if !self.bpdu_shut.contains(&name) {
                self.bpdu_shut.push(name);
            }
        }
        // Aging a slice of the table per tick, a whole pass about each second: a pass in one go
        // held this thread (and whatever shares its CPU) for milliseconds on a big table.
        let buckets = self.fdb.bucket_count();
        let slice = buckets.div_ceil(AGE_SLICES_PER_PASS);
        let from = self.age_cursor;
        self.aged +=
            self.fdb
                .age_buckets(now, self.config.bridge.fdb_aging_secs, from..from + slice)
                as u64;
        self.age_cursor = if from + slice >= buckets {
            0
        } else {
            from + slice
        };
        if now != self.last_age_pass {
            self.last_age_pass = now;
            self.edge.moves.expire(&self.fdb);
        }
    }

    /// After the workers have stopped: exports what is left in their rings (and the last
    /// datagram), takes the last MAC move reports, and closes every port. Returns the final
    /// report, read before the ports closed.
    pub fn finish(&mut self) -> Report {
        self.sflow.drain(&self.totals());
        if let Some(agent) = self.sflow.agent.as_mut() {
            agent.flush();
        }
        self.edge.drain(&self.ports, &self.fdb);
        let mut rep = self.report();
        for mut sp in std::mem::take(&mut self.ports) {
            if let Err(e) = sp.port.close() {
                log::error!("closing port {}: {e}", sp.spec.name);
            }
        }
        rep.mempool.in_use_after_close = self.pool.in_use();
        rep
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
            drain_ring(ring, &mut self.buf, |events| {
                self.moves.on_moves(events, fdb, &name_of)
            });
        }
    }
}

/// The sFlow agent (when on), the control thread's ends of the workers' sample and drop rings,
/// and the buffers records are drained into (allocated once, reused every tick).
struct SflowExport {
    agent: Option<Agent>,
    rings: Vec<RingConsumer<SampleRecord>>,
    buf: Vec<SampleRecord>,
    drop_rings: Vec<RingConsumer<DropRecord>>,
    drop_buf: Vec<DropRecord>,
    drop_budget: Arc<AtomicU32>,
}

impl SflowExport {
    /// Moves every waiting sample and drop record from the workers' rings into the agent.
    fn drain(&mut self, totals: &Counters) {
        let agent = &mut self.agent;
        for (w, ring) in self.rings.iter_mut().enumerate() {
            drain_ring(ring, &mut self.buf, |records| {
                if let Some(a) = agent.as_mut() {
                    a.on_samples(w, records, totals);
                }
            });
        }
        for (w, ring) in self.drop_rings.iter_mut().enumerate() {
            drain_ring(ring, &mut self.drop_buf, |records| {
                if let Some(a) = agent.as_mut() {
                    a.on_drops(w, records);
                }
            });
        }
    }
}

/// Dequeues `ring` into `buf` a burst at a time until it is empty, handing each burst to `f`.
fn drain_ring<T: Copy + Send>(ring: &mut RingConsumer<T>, buf: &mut [T], mut f: impl FnMut(&[T])) {
    loop {
        let n = ring.dequeue_burst(buf);
        if n == 0 {
            break;
        }
        f(&buf[..n]);
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
