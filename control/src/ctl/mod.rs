//! The control socket: Open vSwitch's unixctl protocol (so the stock `ovs-appctl -t SOCKET`
//! works), its commands, our own client (`pmdswitch ctl`), and the server the control thread
//! polls every tick. The same server answers Prometheus scrapes (see [`crate::metrics`]).

pub mod client;
pub mod commands;
pub mod protocol;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dataplane::dpdk::Mempool;
use dataplane::fdb::Fdb;
use dataplane::stats::WorkerStats;

use crate::config::Config;
use crate::report::{self, Report};
use crate::sflow::agent::AgentStats;
use crate::switch::SwitchPort;

pub use commands::Flow;
pub use server::{CtlOptions, Server};

/// The control socket's default path.
pub const DEFAULT_SOCKET: &str = "/run/pmdswitch/pmdswitch.ctl";

/// Why the control socket or the metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Creating, binding or securing the socket failed.
    #[error("control socket {path}: {what}: {source}. Choose another path with --ctl PATH")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A live switch already answers there.
    #[error("control socket {0}: another pmdswitch is running there (it answers); stop it or give this one another path with --ctl PATH")]
    InUse(PathBuf),
    /// Something else than a socket is at the path.
    #[error("control socket {0}: the path exists and is not a socket; remove it or choose another path with --ctl PATH")]
    NotASocket(PathBuf),
    /// The metrics address could not be bound.
    #[error("metrics endpoint {addr}: cannot listen: {source}. Give a free ADDR:PORT to --metrics, e.g. 127.0.0.1:9417")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Which worker polls which rx queue, as handed out at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxqAssignment {
    /// The worker's lcore.
    pub lcore: u32,
    /// The port's name.
    pub port: String,
    /// The rx queue.
    pub queue: u16,
}

/// What commands and metrics read: the running switch, as the control loop holds it.
pub struct Context<'a> {
    /// The bridge's name (`[bridge] name`).
    pub bridge: &'a str,
    /// The ports, in configuration order.
    pub ports: &'a [SwitchPort],
    /// The MAC table.
    pub fdb: &'a Fdb,
    /// Every worker's published counters.
    pub workers: &'a [Arc<WorkerStats>],
    /// The effective configuration.
    pub config: &'a Config,
    /// The mbuf pool.
    pub pool: &'a Mempool,
    /// Mbufs in use when the workers started.
    pub mempool_at_start: u32,
    /// Who polls which queue.
    pub rxqs: &'a [RxqAssignment],
    /// When the workers started.
    pub started: Instant,
    /// Entries aged out so far (updated by the control loop).
    pub aged: u64,
    /// The sFlow agent's counts (updated by the control loop), when sFlow is configured.
    pub sflow: Option<AgentStats>,
}

impl Context<'_> {
    /// The stats report as of now (the same figures `--stats-json` writes on exit).
    pub fn report(&self) -> Report {
        let mut r = report::build(report::Inputs {
            elapsed: self.started.elapsed(),
            ports: self.ports,
            workers: self.workers,
            fdb: self.fdb,
            aged: self.aged,
            pool: self.pool,
            mempool_at_start: self.mempool_at_start,
            mempool_at_stop: self.pool.in_use(),
        });
        r.sflow = self.sflow;
        r
    }

    /// The port with this name.
    pub fn port(&self, name: &str) -> Result<&SwitchPort, String> {
        self.ports
            .iter()
            .find(|p| p.spec.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.ports.iter().map(|p| p.spec.name.as_str()).collect();
                format!(
                    "no port {name:?} on bridge {}: the ports are {}",
                    self.bridge,
                    names.join(", ")
                )
            })
    }

    /// The name of the port with DPDK id `id`.
    pub fn port_name(&self, id: u16) -> &str {
        self.ports
            .iter()
            .find(|p| p.port.id().0 == id)
            .map_or("?", |p| p.spec.name.as_str())
    }
}
