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

use dataplane::dpdk::Mempool;
use dataplane::fdb::Fdb;
use dataplane::stats::WorkerStats;

use crate::config::Config;
use crate::port::SwitchPort;
use crate::report::Report;
use crate::runtime::{Runtime, RxqAssignment};
use crate::sflow::agent::AgentStats;

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

/// What commands and metrics read and change: the running switch, as the control loop holds it.
pub struct Context<'a> {
    /// The switch.
    pub rt: &'a mut Runtime,
}

impl Context<'_> {
    /// The bridge's name (`[bridge] name`).
    pub fn bridge(&self) -> &str {
        &self.rt.config.bridge.name
    }

    /// The ports, in configuration order.
    pub fn ports(&self) -> &[SwitchPort] {
        &self.rt.ports
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.rt.fdb
    }

    /// Every worker's published counters.
    pub fn workers(&self) -> &[Arc<WorkerStats>] {
        &self.rt.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.rt.config
    }

    /// The start's mbuf pool.
    pub fn pool(&self) -> &Mempool {
        &self.rt.pool
    }

    /// Who polls which queue.
    pub fn rxqs(&self) -> &[RxqAssignment] {
        &self.rt.rxqs
    }

    /// The sFlow agent's counts, when sFlow is on.
    pub fn sflow(&self) -> Option<AgentStats> {
        self.rt.sflow_stats()
    }

    /// The stats report as of now (the same figures `--stats-json` writes on exit).
    pub fn report(&self) -> Report {
        self.rt.report()
    }

    /// The port with this name.
    pub fn port(&self, name: &str) -> Result<&SwitchPort, String> {
        self.ports()
            .iter()
            .find(|p| p.spec.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.ports().iter().map(|p| p.spec.name.as_str()).collect();
                format!(
                    "no port {name:?} on bridge {}: the ports are {}",
                    self.bridge(),
                    names.join(", ")
                )
            })
    }

    /// The name of the port with DPDK id `id`.
    pub fn port_name(&self, id: u16) -> &str {
        self.ports()
            .iter()
            .find(|p| p.port.id().0 == id)
            .map_or("?", |p| p.spec.name.as_str())
    }
}
