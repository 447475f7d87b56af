//! The configuration: TOML file and `--port` flags -> a validated model.
//!
//! Every error names where the bad value came from (the file, or the flag), the field, and
//! what is allowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dataplane::forward::{BridgeMode, PortPolicy, RateLimit, StormLimits, VlanMode, MAX_VLAN};
use dataplane::packet::MacAddr;
use serde::Deserialize;

use crate::sflow::encode::DEFAULT_COLLECTOR_PORT as SFLOW_PORT;
use crate::vhost::{VhostMode, VhostUser, MAX_SOCKET_PATH};

/// Port and bridge names: what operators type, and what stats and logs show.
const NAME_MAX: usize = 32;
/// The bridge's name unless `[bridge] name` says otherwise.
pub const DEFAULT_BRIDGE: &str = "br0";

/// Whether `s` is a valid port or bridge name.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
/// IEEE 802.1Q's range for the ageing time, in seconds.
pub const AGING_RANGE: std::ops::RangeInclusive<u32> = 10..=1_000_000;
/// MTUs (bytes of payload after the Ethernet header and its tags): IPv4's minimum up to jumbo
/// frames; a frame larger than one 2 KiB mbuf is received as a chain. A port's device may take
/// less (its driver's limit is checked when the port comes up).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=9600;
/// MAC table capacity.
pub const FDB_CAPACITY_RANGE: std::ops::RangeInclusive<usize> = 1..=16_777_216;
/// Queue descriptors.
pub const DESC_RANGE: std::ops::RangeInclusive<u16> = 64..=8192;
/// Rx queues per port.
pub const RX_QUEUES_RANGE: std::ops::RangeInclusive<u16> = 1..=64;
/// Size of the mbuf pool, when set by hand.
pub const MBUFS_RANGE: std::ops::RangeInclusive<u32> = 1024..=16_777_216;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key, a missing one, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message: line, column, the key, and what was expected.
        message: String,
    },
    /// A value is out of its allowed range or conflicts with another.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The config file, or the command-line flag, it came from.
        origin: String,
        /// The field, e.g. `ports[1].name`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    ports: Vec<PortModel>,
    #[serde(default)]
    bridge: BridgeModel,
    sflow: Option<SflowModel>,
    #[serde(default)]
    fdb: Vec<FdbModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FdbModel {
    port: String,
    #[serde(default)]
    vlan: u16,
    mac: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum VlanModeModel {
    Access,
    Trunk,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RoleModel {
    Vm,
    Uplink,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ModeModel {
    #[default]
    Veb,
    Vepa,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StormModel {
    broadcast_pps: Option<u64>,
    multicast_pps: Option<u64>,
    unknown_unicast_pps: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SflowModel {
    #[serde(default)]
    collectors: Vec<String>,
    agent_address: Option<String>,
    sampling_rate: Option<u32>,
    polling_interval: Option<u32>,
    header_bytes: Option<u32>,
    max_datagram: Option<u32>,
    drop_notifications: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VhostUserModel {
    path: Option<String>,
    mode: Option<String>,
    queues: Option<u16>,
    socket_mode: Option<u32>,
    socket_group: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortModel {
    name: String,
    #[serde(default)]
    devargs: String,
    vhost_user: Option<VhostUserModel>,
    rx_queues: Option<u16>,
    rx_desc: Option<u16>,
    tx_desc: Option<u16>,
    sampling_rate: Option<u32>,
    if_index: Option<u32>,
    mtu: Option<u32>,
    // The edge features: VLANs, role, port security, storm control, policing.
    vlan_mode: Option<VlanModeModel>,
    vlan: Option<u16>,
    trunks: Option<Vec<u16>>,
    native_vlan: Option<u16>,
    role: Option<RoleModel>,
    allowed_macs: Option<Vec<String>>,
    max_macs: Option<u32>,
    enabled: Option<bool>,
    bpdu_guard: Option<bool>,
    bpdu_guard_shutdown: Option<bool>,
    storm_control: Option<StormModel>,
    ingress_policing_rate: Option<u64>,
    ingress_policing_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BridgeModel {
    name: String,
    fdb_capacity: usize,
    fdb_aging_secs: u32,
    mtu: u32,
    mbufs: Option<u32>,
    mode: ModeModel,
    uplink: Option<String>,
    mac_flap_moves: u32,
    mac_flap_window_secs: u32,
    mac_flap_hold_secs: u32,
}

impl Default for BridgeModel {
    fn default() -> Self {
        BridgeModel {
            name: DEFAULT_BRIDGE.to_owned(),
            fdb_capacity: 65_536,
            fdb_aging_secs: 300,
            mtu: 1500,
            mbufs: None,
            mode: ModeModel::Veb,
            uplink: None,
            mac_flap_moves: 4,
            mac_flap_window_secs: 10,
            mac_flap_hold_secs: 60,
        }
    }
}

/// One switch port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Unique name.
    pub name: String,
    /// DPDK device string (a vdev with its arguments, or a PCI address); for a `vhost_user`
    /// port, the net_vhost devargs made from it.
    pub devargs: String,
    /// A VM port given as `vhost_user = { ... }`.
    pub vhost_user: Option<VhostUser>,
    /// Rx queues (default: one per worker, as far as the device allows).
    pub rx_queues: Option<u16>,
    /// Rx descriptors per queue.
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    pub tx_desc: u16,
    /// sFlow 1-in-N sampling rate of this port (None: the [sflow] default; 0: off).
    pub sampling_rate: Option<u32>,
    /// The port's interface index in sFlow: the one it names, else the one it runs with, else
    /// the lowest one free (at start: its position, from 1, when no port names one).
    pub if_index: u32,
    /// The ifIndex the configuration names for it, if any.
    pub if_index_set: Option<u32>,
    /// Its MTU: the largest payload it takes in and sends out (its own, or the bridge's).
    pub mtu: u32,
    /// VLANs, role, port security, storm control and policing.
    pub policy: PortPolicy,
    /// Administratively up (false: the port drops everything, as if shut down).
    pub enabled: bool,
    /// Where the port was defined, for messages.
    pub origin: String,
}

impl PortSpec {
    /// The vhost-user socket of a VM port, given as `vhost_user` or as net_vhost devargs.
    pub fn vhost(&self) -> Option<VhostUser> {
        self.vhost_user
            .clone()
            .or_else(|| VhostUser::from_devargs(&self.devargs))
    }

    /// The DPDK device name: the devargs up to the first comma.
    pub fn device_name(&self) -> &str {
        self.devargs
            .split(',')
            .next()
            .unwrap_or(&self.devargs)
            .trim()
    }
}

/// Bridge-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// The bridge's name, as control commands (`fdb/show br0`) name it.
    pub name: String,
    /// Most MAC table entries.
    pub fdb_capacity: usize,
    /// Seconds after which an address not seen is forgotten.
    pub fdb_aging_secs: u32,
    /// Largest payload forwarded.
    pub mtu: u32,
    /// Mbuf pool size; None sizes it from the ports.
    pub mbufs: Option<u32>,
    /// VEB or VEPA.
    pub mode: BridgeMode,
    /// MAC flap damping: this many moves of one address within `mac_flap_window_secs` hold it
    /// on its first port for `mac_flap_hold_secs` (0 moves: off).
    pub mac_flap_moves: u32,
    /// See `mac_flap_moves`.
    pub mac_flap_window_secs: u32,
    /// See `mac_flap_moves`.
    pub mac_flap_hold_secs: u32,
}

/// A static MAC table entry: never aged, never moved by learning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEntry {
    /// The port's name.
    pub port: String,
    /// VLAN (0: the untagged domain of VLAN-unaware ports).
    pub vlan: u16,
    /// The address.
    pub mac: MacAddr,
}

/// A configuration's source: the file's table (edited by runtime changes) and the `--port`
/// flags.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file read at start (and by config/reload).
    pub file: Option<PathBuf>,
    /// Its contents, with runtime changes applied.
    pub table: toml::Table,
    /// `--port NAME=DEVARGS` flags whose ports are not in `table` yet (a runtime change moves
    /// them there once it edits one).
    pub flags: Vec<String>,
    /// The `--port` flags the switch started with: a reload reads them again with the file.
    pub start_flags: Vec<String>,
    /// Named in errors: the file, or the runtime command that changed it.
    pub origin: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Ports in order: the file's, then the flags'.
    pub ports: Vec<PortSpec>,
    /// Bridge settings.
    pub bridge: BridgeSpec,
    /// sFlow export, when configured.
    pub sflow: Option<SflowSpec>,
    /// Static MAC table entries.
    pub fdb: Vec<StaticEntry>,
}

/// sFlow agent settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SflowSpec {
    /// Where datagrams go (UDP).
    pub collectors: Vec<std::net::SocketAddr>,
    /// The agent address put in every datagram.
    pub agent_address: std::net::IpAddr,
    /// Default 1-in-N sampling rate of every port (0: no sampling).
    pub sampling_rate: u32,
    /// Seconds between counter samples of a port (0: no counter samples).
    pub polling_interval: u32,
    /// Bytes of each sampled frame's header exported.
    pub header_bytes: u32,
    /// Largest datagram sent, in bytes.
    pub max_datagram: u32,
    /// Dropped-packet notifications sent a second, at most (0: none); the drops not reported
    /// are counted in the next notification's `drops`.
    pub drop_notifications: u32,
}

/// Sampling rates: 0 (off) or 1-in-N up to 2^24.
pub const SAMPLING_RANGE: std::ops::RangeInclusive<u32> = 0..=16_777_216;
/// Header bytes per sample.
pub const HEADER_BYTES_RANGE: std::ops::RangeInclusive<u32> = 14..=256;
/// Counter polling interval, seconds (0: off).
pub const POLLING_RANGE: std::ops::RangeInclusive<u32> = 0..=3600;
/// Datagram size: room for one sample with the largest header, up to a jumbo frame.
pub const DATAGRAM_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;
/// Dropped-packet notifications a second (0: off). Each costs a header copy on a worker and
/// a datagram's share on the wire: more than this is a flood of the collector, not a report.
pub const DROP_NOTIFICATIONS_RANGE: std::ops::RangeInclusive<u32> = 0..=10_000;

fn invalid(origin: &str, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    origin: &str,
    field: &str,
    v: T,
    r: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, ConfigError> {
    if r.contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            origin,
            field,
            format!(
                "{v} is out of range: {what} must be from {} to {}",
                r.start(),
                r.end()
            ),
        ))
    }
}

impl Config {
    /// Reads `file` (if any), adds the `--port NAME=DEVARGS` flags, and validates the whole; also
    /// returns the source as a TOML table, to be edited at runtime.
    pub fn load_with_source(
        file: Option<&Path>,
        port_flags: &[String],
    ) -> Result<(Config, Source), ConfigError> {
        let (model, origin, table) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let model = Self::parse_model(&text, path)?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
                (model, path.display().to_string(), table)
            }
            None => (
                FileModel::default(),
                "defaults".to_owned(),
                toml::Table::new(),
            ),
        };
        let config = Self::from_model(model, &origin, port_flags, &HashMap::new())?;
        let source = Source {
            file: file.map(Path::to_owned),
            table,
            flags: port_flags.to_vec(),
            start_flags: port_flags.to_vec(),
            origin,
        };
        Ok((config, source))
    }

    /// Validates an edited source (a runtime change), naming `what` changed it in errors.
    /// `running` holds the sFlow ifIndex of every port running now, by name: each keeps it
    /// unless the source names another.
    pub fn from_source(
        source: &Source,
        running: &HashMap<String, u32>,
    ) -> Result<Config, ConfigError> {
        let model: FileModel = toml::Value::Table(source.table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: PathBuf::from(&source.origin),
                message: e.to_string().trim_end().to_owned(),
            })?;
        Self::from_model(model, &source.origin, &source.flags, running)
    }

    /// Parses and validates TOML text (as if read from `path`), plus `--port` flags.
    #[cfg(test)]
    pub fn from_toml(
        text: &str,
        path: &Path,
        port_flags: &[String],
    ) -> Result<Config, ConfigError> {
        let model = Self::parse_model(text, path)?;
        Self::from_model(
            model,
            &path.display().to_string(),
            port_flags,
            &HashMap::new(),
        )
    }

    fn parse_model(text: &str, path: &Path) -> Result<FileModel, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    fn from_model(
        model: FileModel,
        origin: &str,
        port_flags: &[String],
        running: &HashMap<String, u32>,
    ) -> Result<Config, ConfigError> {
        let b = &model.bridge;
        if !valid_name(&b.name) {
            return Err(invalid(
                origin,
                "bridge.name",
                format!("{:?} is not a valid bridge name: use 1 to {NAME_MAX} letters, digits, '_', '-' or '.'", b.name),
            ));
        }
        let bridge = BridgeSpec {
            name: b.name.clone(),
            fdb_capacity: check_range(
                origin,
                "bridge.fdb_capacity",
                b.fdb_capacity,
                FDB_CAPACITY_RANGE,
                "the MAC table capacity",
            )?,
            fdb_aging_secs: check_range(
                origin,
                "bridge.fdb_aging_secs",
                b.fdb_aging_secs,
                AGING_RANGE,
                "the ageing time in seconds (IEEE 802.1Q)",
            )?,
            mtu: check_range(
                origin,
                "bridge.mtu",
                b.mtu,
                MTU_RANGE,
                "the MTU in bytes of payload",
            )?,
            mbufs: b
                .mbufs
                .map(|n| check_range(origin, "bridge.mbufs", n, MBUFS_RANGE, "the mbuf pool size"))
                .transpose()?,
            mode: match b.mode {
                ModeModel::Veb => BridgeMode::Veb,
                ModeModel::Vepa => BridgeMode::Vepa,
            },
            mac_flap_moves: check_range(
                origin,
                "bridge.mac_flap_moves",
                b.mac_flap_moves,
                0..=1000,
                "moves within the window that hold a flapping address (0: off)",
            )?,
            mac_flap_window_secs: check_range(
                origin,
                "bridge.mac_flap_window_secs",
                b.mac_flap_window_secs,
                1..=3600,
                "the flap detection window in seconds",
            )?,
            mac_flap_hold_secs: check_range(
                origin,
                "bridge.mac_flap_hold_secs",
                b.mac_flap_hold_secs,
                1..=86_400,
                "seconds a flapping address is held on its first port",
            )?,
        };

        let mut ports = Vec::new();
        for (i, p) in model.ports.into_iter().enumerate() {
            let field = format!("ports[{i}]");
            ports.push(Self::port(origin, &field, p, bridge.mtu)?);
        }
        for flag in port_flags {
            let flag_origin = format!("--port {flag}");
            let (name, devargs) = flag.split_once('=').ok_or_else(|| {
                invalid(
                    &flag_origin,
                    "--port",
                    "expected NAME=DEVARGS, e.g. vm1=net_tap0,iface=vm1",
                )
            })?;
            let p = PortModel {
                name: name.trim().to_owned(),
                devargs: devargs.trim().to_owned(),
                ..PortModel::default()
            };
            ports.push(Self::port(&flag_origin, "--port", p, bridge.mtu)?);
        }
        if ports.is_empty() {
            return Err(invalid(
                origin,
                "ports",
                "no ports: add [[ports]] with name and devargs to the config file, or --port NAME=DEVARGS",
            ));
        }
        if ports.len() > dataplane::dpdk::MAX_PORTS {
            return Err(invalid(
                origin,
                "ports",
                format!(
                    "{} ports; this DPDK build supports at most {}",
                    ports.len(),
                    dataplane::dpdk::MAX_PORTS
                ),
            ));
        }
        let mut names: HashMap<&str, &PortSpec> = HashMap::new();
        let mut devices: HashMap<&str, &PortSpec> = HashMap::new();
        for p in &ports {
            if let Some(first) = names.insert(&p.name, p) {
                return Err(invalid(
                    &p.origin,
                    "name",
                    format!(
                        "port name {:?} is already used (defined in {}); port names must be unique",
                        p.name, first.origin
                    ),
                ));
            }
            if let Some(first) = devices.insert(p.device_name(), p) {
                return Err(invalid(
                    &p.origin,
                    "devargs",
                    format!(
                        "port {:?} uses device {:?}, which port {:?} already uses; each port needs its own device (net_tap0, net_tap1, ...)",
                        p.name,
                        p.device_name(),
                        first.name
                    ),
                ));
            }
        }
        assign_if_indexes(&mut ports, running)?;
        Self::uplink(origin, &model.bridge, &mut ports, bridge.mode)?;
        let fdb = Self::static_fdb(origin, &model.fdb, &ports)?;
        let sflow = model.sflow.map(|m| Self::sflow(origin, m)).transpose()?;
        Ok(Config {
            ports,
            bridge,
            sflow,
            fdb,
        })
    }

    /// One uplink at most, named by `[bridge] uplink` or a port's `role = "uplink"`; VEPA
    /// needs one.
    fn uplink(
        origin: &str,
        b: &BridgeModel,
        ports: &mut [PortSpec],
        mode: BridgeMode,
    ) -> Result<(), ConfigError> {
        if let Some(name) = &b.uplink {
            let Some(p) = ports.iter_mut().find(|p| &p.name == name) else {
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                return Err(invalid(
                    origin,
                    "bridge.uplink",
                    format!("{name:?} is not a port; the ports are {names:?}"),
                ));
            };
            p.policy.uplink = true;
        }
        let uplinks: Vec<&PortSpec> = ports.iter().filter(|p| p.policy.uplink).collect();
        if uplinks.len() > 1 {
            return Err(invalid(
                &uplinks[1].origin,
                "role",
                format!(
                    "port {:?} is an uplink, and so is port {:?}: a bridge has at most one uplink",
                    uplinks[1].name, uplinks[0].name
                ),
            ));
        }
        if mode == BridgeMode::Vepa && uplinks.is_empty() {
            return Err(invalid(
                origin,
                "bridge.mode",
                "\"vepa\" sends every frame to the uplink: mark one port role = \"uplink\" (or set bridge.uplink = \"NAME\")",
            ));
        }
        Ok(())
    }

    fn static_fdb(
        origin: &str,
        entries: &[FdbModel],
        ports: &[PortSpec],
    ) -> Result<Vec<StaticEntry>, ConfigError> {
        let mut out: Vec<StaticEntry> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let field = |f: &str| format!("fdb[{i}].{f}");
            let Some(port) = ports.iter().find(|p| p.name == e.port) else {
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                return Err(invalid(
                    origin,
                    field("port"),
                    format!("{:?} is not a port; the ports are {names:?}", e.port),
                ));
            };
            check_range(
                origin,
                &field("vlan"),
                e.vlan,
                0..=MAX_VLAN,
                "the VLAN (0: untagged on VLAN-unaware ports)",
            )?;
            let mac = parse_unicast_mac(origin, &field("mac"), &e.mac)?;
            if !carries(&port.policy.vlan, e.vlan) {
                return Err(invalid(
                    origin,
                    field("vlan"),
                    format!("port {:?} does not carry VLAN {}", port.name, e.vlan),
                ));
            }
            if let Some(j) = out.iter().position(|o| o.vlan == e.vlan && o.mac == mac) {
                return Err(invalid(
                    origin,
                    field("mac"),
                    format!("{mac} in VLAN {} is already in fdb[{j}]", e.vlan),
                ));
            }
            out.push(StaticEntry {
                port: e.port.clone(),
                vlan: e.vlan,
                mac,
            });
        }
        Ok(out)
    }

    fn sflow(origin: &str, m: SflowModel) -> Result<SflowSpec, ConfigError> {
        let mut collectors = Vec::new();
        for (i, c) in m.collectors.iter().enumerate() {
            let field = format!("sflow.collectors[{i}]");
            let with_port = if c.parse::<std::net::IpAddr>().is_ok() {
                // A bare address: sFlow's port. (IPv6 with a port is written [addr]:port.)
                match c.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("[{c}]:{SFLOW_PORT}"),
                    Err(_) => format!("{c}:{SFLOW_PORT}"),
                }
            } else {
                c.clone()
            };
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    invalid(origin, &field, format!("{c:?} is not a collector address: use IP:PORT, [IPv6]:PORT, or an IP (port {SFLOW_PORT})"))
                })?;
            collectors.push(addr);
        }
        let agent_address = match &m.agent_address {
            Some(a) => a.parse().map_err(|_| {
                invalid(origin, "sflow.agent_address", format!("{a:?} is not an IPv4 or IPv6 address"))
            })?,
            None => {
                return Err(invalid(
                    origin,
                    "sflow.agent_address",
                    "missing: sFlow datagrams name their agent by an IP address of this host (e.g. the management address)",
                ))
            }
        };
        Ok(SflowSpec {
            collectors,
            agent_address,
            sampling_rate: check_range(
                origin,
                "sflow.sampling_rate",
                m.sampling_rate.unwrap_or(1024),
                SAMPLING_RANGE,
                "the 1-in-N sampling rate (0: off)",
            )?,
            polling_interval: check_range(
                origin,
                "sflow.polling_interval",
                m.polling_interval.unwrap_or(20),
                POLLING_RANGE,
                "seconds between counter samples (0: off)",
            )?,
            header_bytes: check_range(
                origin,
                "sflow.header_bytes",
                m.header_bytes.unwrap_or(128),
                HEADER_BYTES_RANGE,
                "header bytes per sample",
            )?,
            max_datagram: check_range(
                origin,
                "sflow.max_datagram",
                m.max_datagram.unwrap_or(1400),
                DATAGRAM_RANGE,
                "the datagram size in bytes",
            )?,
            drop_notifications: check_range(
                origin,
                "sflow.drop_notifications",
                m.drop_notifications.unwrap_or(100),
                DROP_NOTIFICATIONS_RANGE,
                "dropped-packet notifications a second (0: off)",
            )?,
        })
    }

    fn port(
        origin: &str,
        field: &str,
        p: PortModel,
        bridge_mtu: u32,
    ) -> Result<PortSpec, ConfigError> {
        let origin = if field == "--port" {
            origin.to_owned()
        } else {
            format!("{origin}: {field}")
        };
        if !valid_name(&p.name) {
            return Err(invalid(
                &origin,
                "name",
                format!("{:?} is not a valid port name: use 1 to {NAME_MAX} letters, digits, '_', '-' or '.'", p.name),
            ));
        }
        let vhost_user = p
            .vhost_user
            .as_ref()
            .map(|v| Self::vhost_user(&origin, &p.name, v))
            .transpose()
            .map_err(|e| naming_port(e, &p.name))?;
        let devargs = match (&vhost_user, p.devargs.trim()) {
            (Some(_), d) if !d.is_empty() => {
                return Err(invalid(
                    &origin,
                    "devargs",
                    format!("port {:?} has both devargs and vhost_user: give one (vhost_user makes the net_vhost devargs itself)", p.name),
                ))
            }
            (Some(v), _) => v.devargs(&p.name),
            (None, "") => {
                return Err(invalid(
                    &origin,
                    "devargs",
                    format!("port {:?} has no devargs: give a DPDK device such as net_tap0,iface={} or a PCI address, or vhost_user = {{ path = \"/run/pmdswitch/{}.sock\", mode = \"client\" }} for a VM", p.name, p.name, p.name),
                ))
            }
            (None, d) => d.to_owned(),
        };
        let rx_queues = p
            .rx_queues
            .map(|q| {
                check_range(
                    &origin,
                    "rx_queues",
                    q,
                    RX_QUEUES_RANGE,
                    "the number of rx queues",
                )
            })
            .transpose()?;
        let rx_desc = check_range(
            &origin,
            "rx_desc",
            p.rx_desc.unwrap_or(1024),
            DESC_RANGE,
            "rx descriptors per queue",
        )?;
        let tx_desc = check_range(
            &origin,
            "tx_desc",
            p.tx_desc.unwrap_or(1024),
            DESC_RANGE,
            "tx descriptors per queue",
        )?;
        let sampling_rate = p
            .sampling_rate
            .map(|r| {
                check_range(
                    &origin,
                    "sampling_rate",
                    r,
                    SAMPLING_RANGE,
                    "the 1-in-N sampling rate (0: off)",
                )
            })
            .transpose()?;
        let if_index_set = p
            .if_index
            .map(|i| {
                check_range(
                    &origin,
                    "if_index",
                    i,
                    IF_INDEX_RANGE,
                    "the sFlow interface index",
                )
            })
            .transpose()?;
        let mtu_set = p
            .mtu
            .map(|m| check_range(&origin, "mtu", m, MTU_RANGE, "the MTU in bytes of payload"))
            .transpose()
            .map_err(|e| naming_port(e, &p.name))?;
        let mut policy = Self::policy(&origin, &p.name, &p).map_err(|e| naming_port(e, &p.name))?;
        policy.mtu = mtu_set;
        Ok(PortSpec {
            policy,
            enabled: p.enabled.unwrap_or(true),
            name: p.name,
            devargs,
            vhost_user,
            rx_queues,
            rx_desc,
            tx_desc,
            sampling_rate,
            // Given by assign_if_indexes once every port is known.
            if_index: 0,
            if_index_set,
            mtu: mtu_set.unwrap_or(bridge_mtu),
            origin,
        })
    }
}

/// `e` with the port named in its message, not only its position.
fn naming_port(e: ConfigError, name: &str) -> ConfigError {
    match e {
        ConfigError::Invalid {
            origin,
            field,
            message,
        } if !message.contains(&format!("{name:?}")) => ConfigError::Invalid {
            origin,
            field,
            message: format!("port {name:?}: {message}"),
        },
        other => other,
    }
}

/// Queue pairs a vhost-user port offers its guest.
pub const VHOST_QUEUES_RANGE: std::ops::RangeInclusive<u16> = 1..=64;

impl Config {
    /// A VM port's `vhost_user` table, validated: an absolute socket path in a directory that
    /// exists, client or server, queues in range, permissions for server mode only.
    fn vhost_user(origin: &str, name: &str, v: &VhostUserModel) -> Result<VhostUser, ConfigError> {
        let Some(path) = v.path.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Err(invalid(
                origin,
                "vhost_user.path",
                format!("port {name:?} needs the socket's path, e.g. path = \"/run/pmdswitch/{name}.sock\""),
            ));
        };
        let path = PathBuf::from(path.trim());
        if !path.is_absolute() || path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(invalid(
                origin,
                "vhost_user.path",
                format!("{:?} must be an absolute path of at most {MAX_SOCKET_PATH} bytes (a UNIX socket address)", path.display().to_string()),
            ));
        }
        if !crate::vhost::directory_exists(&path) {
            return Err(invalid(
                origin,
                "vhost_user.path",
                format!(
                    "the directory of {:?} does not exist: create it (the socket is made there)",
                    path.display().to_string()
                ),
            ));
        }
        let mode = match v.mode.as_deref().map(str::trim) {
            Some("client") => VhostMode::Client,
            Some("server") => VhostMode::Server,
            Some(other) => {
                return Err(invalid(
                    origin,
                    "vhost_user.mode",
                    format!("{other:?} is neither \"client\" (QEMU serves the socket; the switch connects and reconnects, so it can restart under running VMs) nor \"server\" (the switch creates the socket)"),
                ))
            }
            None => {
                return Err(invalid(
                    origin,
                    "vhost_user.mode",
                    "missing: \"client\" (QEMU serves the socket; the switch connects and reconnects, so it can restart under running VMs) or \"server\" (the switch creates the socket)",
                ))
            }
        };
        let queues = check_range(
            origin,
            "vhost_user.queues",
            v.queues.unwrap_or(1),
            VHOST_QUEUES_RANGE,
            "the queue pairs offered to the guest",
        )?;
        if mode == VhostMode::Client && (v.socket_mode.is_some() || v.socket_group.is_some()) {
            return Err(invalid(
                origin,
                if v.socket_mode.is_some() { "vhost_user.socket_mode" } else { "vhost_user.socket_group" },
                "in client mode QEMU makes the socket: set its permissions there, or use mode = \"server\"",
            ));
        }
        let socket_mode = v
            .socket_mode
            .map(|m| {
                check_range(
                    origin,
                    "vhost_user.socket_mode",
                    m,
                    0..=0o777,
                    "permission bits (write 0o660)",
                )
            })
            .transpose()?;
        let socket_group = match &v.socket_group {
            None => None,
            Some(toml::Value::Integer(gid)) => {
                let gid = u32::try_from(*gid).map_err(|_| {
                    invalid(
                        origin,
                        "vhost_user.socket_group",
                        format!("{gid} is not a group id"),
                    )
                })?;
                Some((gid, gid.to_string()))
            }
            Some(toml::Value::String(g)) => {
                let group = nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        invalid(
                            origin,
                            "vhost_user.socket_group",
                            format!("no group named {g:?} on this host"),
                        )
                    })?;
                Some((group.gid.as_raw(), g.clone()))
            }
            Some(other) => {
                return Err(invalid(
                    origin,
                    "vhost_user.socket_group",
                    format!("{other} is not a group: give its name (\"kvm\") or id"),
                ))
            }
        };
        Ok(VhostUser {
            path,
            mode,
            queues,
            socket_mode,
            socket_group,
        })
    }
}

/// sFlow interface indexes: what a flow sample's source_id (class 0) holds in 24 bits.
pub const IF_INDEX_RANGE: std::ops::RangeInclusive<u32> = 1..=0x00ff_ffff;

/// Gives every port its sFlow ifIndex: the one it names; else, for a port running now, the
/// one it runs with (collectors key a port's history by it, so no change renumbers a port);
/// else the lowest one free, in configuration order. Two ports with one index are refused.
fn assign_if_indexes(
    ports: &mut [PortSpec],
    running: &HashMap<String, u32>,
) -> Result<(), ConfigError> {
    // Index -> the port holding it, and whether it holds it by running with it.
    let mut holder: HashMap<u32, (usize, bool)> = HashMap::new();
    let kept = |p: &PortSpec| match p.if_index_set {
        None => running.get(&p.name).copied(),
        Some(_) => None,
    };
    let named = |p: &PortSpec| p.if_index_set;
    for (pass, by_running) in [
        (&kept as &dyn Fn(&PortSpec) -> Option<u32>, true),
        (&named, false),
    ] {
        for i in 0..ports.len() {
            let Some(index) = pass(&ports[i]) else {
                continue;
            };
            if let Some(&(first, first_runs)) = holder.get(&index) {
                let (p, first) = (&ports[i], &ports[first]);
                return Err(invalid(
                    &p.origin,
                    "if_index",
                    format!(
                        "port {:?} has if_index {index}, which port {:?} already has{}; each port needs its own",
                        p.name,
                        first.name,
                        if first_runs { " (it runs with it)" } else { "" }
                    ),
                ));
            }
            holder.insert(index, (i, by_running));
            ports[i].if_index = index;
        }
    }
    let mut next = *IF_INDEX_RANGE.start();
    for (i, p) in ports.iter_mut().enumerate() {
        if p.if_index != 0 {
            continue;
        }
        while holder.contains_key(&next) {
            next += 1;
        }
        holder.insert(next, (i, false));
        p.if_index = next;
    }
    Ok(())
}

/// Policing and rate limits: bits per second.
pub const RATE_RANGE: std::ops::RangeInclusive<u64> = 8_000..=400_000_000_000;
/// Policing and rate-limit bursts: bytes.
pub const BURST_RANGE: std::ops::RangeInclusive<u64> = 64..=1_000_000_000;
/// Storm-control rates: frames per second.
pub const PPS_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000_000;
/// Port security's address limit.
pub const MAX_MACS_RANGE: std::ops::RangeInclusive<u32> = 1..=16_777_216;

fn parse_unicast_mac(origin: &str, field: &str, text: &str) -> Result<MacAddr, ConfigError> {
    let mac: MacAddr = text.parse().map_err(|_| {
        invalid(
            origin,
            field,
            format!("{text:?} is not a MAC address: write six hex bytes, e.g. 02:00:00:00:00:01"),
        )
    })?;
    if mac.is_multicast() {
        return Err(invalid(
            origin,
            field,
            format!("{mac} is a group address: a station's address must be unicast"),
        ));
    }
    if mac == MacAddr::ZERO {
        return Err(invalid(
            origin,
            field,
            format!("{mac} names no station: a station's address is never all zeros"),
        ));
    }
    Ok(mac)
}

/// True when a port in `mode` carries `vlan` (0: the untagged domain of VLAN-unaware trunks).
fn carries(mode: &VlanMode, vlan: u16) -> bool {
    match mode {
        VlanMode::Access { vlan: v } => *v == vlan,
        VlanMode::Trunk { trunks, native } => {
            if vlan == 0 {
                trunks.is_empty() && native.is_none()
            } else {
                trunks.is_empty() || trunks.contains(&vlan) || *native == Some(vlan)
            }
        }
    }
}

/// A rate limit from its two fields: the rate is required, the burst defaults to a tenth of a
/// second at the rate (at least two full frames).
fn rate_limit(
    origin: &str,
    rate_field: &str,
    burst_field: &str,
    rate: Option<u64>,
    burst: Option<u64>,
) -> Result<Option<RateLimit>, ConfigError> {
    match (rate, burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(invalid(
            origin,
            burst_field,
            format!("a burst without a rate: set {rate_field} (bits per second) too"),
        )),
        (Some(r), b) => {
            let bits_per_sec = check_range(
                origin,
                rate_field,
                r,
                RATE_RANGE,
                "the rate in bits per second",
            )?;
            let burst_bytes = match b {
                Some(b) => check_range(origin, burst_field, b, BURST_RANGE, "the burst in bytes")?,
                None => (bits_per_sec / 80).max(3036),
            };
            Ok(Some(RateLimit {
                bits_per_sec,
                burst_bytes,
            }))
        }
    }
}

impl Config {
    /// The port's edge features, validated: VLAN mode and ids, role, port security, storm
    /// control, policing.
    fn policy(origin: &str, name: &str, e: &PortModel) -> Result<PortPolicy, ConfigError> {
        let vid = |field: &str, v: u16| {
            check_range(
                origin,
                field,
                v,
                1..=MAX_VLAN,
                "a VLAN id (0 and 4095 are reserved)",
            )
        };
        let mode = e.vlan_mode.unwrap_or(if e.vlan.is_some() {
            VlanModeModel::Access
        } else {
            VlanModeModel::Trunk
        });
        let vlan = match mode {
            VlanModeModel::Access => {
                if e.trunks.is_some() || e.native_vlan.is_some() {
                    return Err(invalid(
                        origin,
                        if e.trunks.is_some() { "trunks" } else { "native_vlan" },
                        format!("port {name:?} is an access port: trunks and native_vlan belong to vlan_mode = \"trunk\""),
                    ));
                }
                let Some(v) = e.vlan else {
                    return Err(invalid(
                        origin,
                        "vlan",
                        format!("port {name:?} is an access port: set vlan = N (1 to {MAX_VLAN})"),
                    ));
                };
                VlanMode::Access {
                    vlan: vid("vlan", v)?,
                }
            }
            VlanModeModel::Trunk => {
                if e.vlan.is_some() {
                    return Err(invalid(
                        origin,
                        "vlan",
                        format!("port {name:?} is a trunk: use trunks = [..] and native_vlan, or vlan_mode = \"access\" with vlan"),
                    ));
                }
                let trunks = e.trunks.clone().unwrap_or_default();
                let mut seen = std::collections::HashSet::new();
                for (i, &t) in trunks.iter().enumerate() {
                    vid(&format!("trunks[{i}]"), t)?;
                    if !seen.insert(t) {
                        return Err(invalid(
                            origin,
                            format!("trunks[{i}]"),
                            format!("VLAN {t} is listed twice in port {name:?}'s trunks"),
                        ));
                    }
                }
                let native = e.native_vlan.map(|n| vid("native_vlan", n)).transpose()?;
                VlanMode::Trunk { trunks, native }
            }
        };
        let mut allowed_macs = Vec::new();
        for (i, m) in e.allowed_macs.iter().flatten().enumerate() {
            allowed_macs.push(parse_unicast_mac(origin, &format!("allowed_macs[{i}]"), m)?);
        }
        if e.allowed_macs.as_ref().is_some_and(|a| a.is_empty()) {
            return Err(invalid(
                origin,
                "allowed_macs",
                format!("an empty list would drop everything port {name:?} sends: list its addresses, or leave the field out"),
            ));
        }
        let max_macs = e
            .max_macs
            .map(|n| {
                check_range(
                    origin,
                    "max_macs",
                    n,
                    MAX_MACS_RANGE,
                    "the most addresses learned on the port",
                )
            })
            .transpose()?;
        let bpdu_guard = e.bpdu_guard.unwrap_or(false);
        let bpdu_guard_shutdown = e.bpdu_guard_shutdown.unwrap_or(false);
        if bpdu_guard_shutdown && !bpdu_guard {
            return Err(invalid(
                origin,
                "bpdu_guard_shutdown",
                format!("port {name:?}: shutting down on a BPDU needs bpdu_guard = true"),
            ));
        }
        let pps = |field: &str, v: Option<u64>| {
            v.map(|n| check_range(origin, field, n, PPS_RANGE, "frames per second"))
                .transpose()
        };
        let storm = match &e.storm_control {
            Some(s) => StormLimits {
                broadcast_pps: pps("storm_control.broadcast_pps", s.broadcast_pps)?,
                multicast_pps: pps("storm_control.multicast_pps", s.multicast_pps)?,
                unknown_unicast_pps: pps(
                    "storm_control.unknown_unicast_pps",
                    s.unknown_unicast_pps,
                )?,
            },
            None => StormLimits::default(),
        };
        Ok(PortPolicy {
            vlan,
            uplink: e.role == Some(RoleModel::Uplink),
            allowed_macs,
            max_macs,
            bpdu_guard,
            bpdu_guard_shutdown,
            storm,
            ingress_policing: rate_limit(
                origin,
                "ingress_policing_rate",
                "ingress_policing_burst",
                e.ingress_policing_rate,
                e.ingress_policing_burst,
            )?,
            egress_rate: rate_limit(
                origin,
                "egress_rate",
                "egress_burst",
                e.egress_rate,
                e.egress_burst,
            )?,
            // Set by the caller, with the rest of the port.
            mtu: None,
        })
    }
}

/// Parses a value typed by an operator (`vlan=10`, `trunks=[10,20]`, `role=uplink`): TOML if it
/// is TOML, a string otherwise.
pub fn parse_value(text: &str) -> toml::Value {
    let text = text.trim();
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

impl Source {
    /// The configuration in force as a config file: the file's contents with runtime changes,
    /// ports given by `--port` flags as `[[ports]]` tables, and every port's sFlow ifIndex
    /// as `config` has it (runtime changes keep them where positions would not). Loading it
    /// gives `config` back.
    pub fn to_toml(&self, config: &Config) -> String {
        let mut s = self.clone();
        s.adopt_flags();
        for p in s.ports_mut().iter_mut() {
            let toml::Value::Table(t) = p else { continue };
            let name = t.get("name").and_then(toml::Value::as_str);
            if let Some(port) = config.ports.iter().find(|c| Some(c.name.as_str()) == name) {
                t.insert(
                    "if_index".into(),
                    toml::Value::Integer(i64::from(port.if_index)),
                );
            }
        }
        toml::to_string(&s.table)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }

    fn ports_mut(&mut self) -> &mut Vec<toml::Value> {
        let ports = self
            .table
            .entry("ports")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if !ports.is_array() {
            *ports = toml::Value::Array(Vec::new());
        }
        match ports {
            toml::Value::Array(a) => a,
            _ => unreachable!("made an array above"),
        }
    }

    /// Moves the ports given by `--port` flags into the table, in order, once one of them is
    /// to be edited there (moving one alone would change their order).
    fn adopt_flag(&mut self, name: &str) {
        if self
            .flags
            .iter()
            .any(|f| f.split_once('=').is_some_and(|(n, _)| n.trim() == name))
        {
            self.adopt_flags();
        }
    }

    /// Moves every port given by a `--port` flag into the table, after the file's, in order.
    fn adopt_flags(&mut self) {
        for flag in std::mem::take(&mut self.flags) {
            let (n, d) = flag.split_once('=').unwrap_or((flag.as_str(), ""));
            self.push_port(n.trim(), d.trim());
        }
    }

    fn push_port(&mut self, name: &str, devargs: &str) {
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(name.to_owned()));
        if !devargs.is_empty() {
            t.insert("devargs".into(), toml::Value::String(devargs.to_owned()));
        }
        self.ports_mut().push(toml::Value::Table(t));
    }

    /// Adds a port at the end, after the ports of `--port` flags too.
    pub fn add_port(&mut self, name: &str, devargs: &str) {
        self.adopt_flags();
        self.push_port(name, devargs);
    }

    /// Removes a port by name. False if there is none.
    pub fn remove_port(&mut self, name: &str) -> bool {
        self.adopt_flag(name);
        let ports = self.ports_mut();
        let before = ports.len();
        ports.retain(|p| p.get("name").and_then(toml::Value::as_str) != Some(name));
        ports.len() != before
    }

    /// Sets (or, with an empty value, removes) `key` of port `name`; a dotted key reaches into
    /// a sub-table (`storm_control.broadcast_pps`). False if there is no such port.
    pub fn set_port(&mut self, name: &str, key: &str, value: &str) -> bool {
        self.adopt_flag(name);
        let Some(toml::Value::Table(t)) = self
            .ports_mut()
            .iter_mut()
            .find(|p| p.get("name").and_then(toml::Value::as_str) == Some(name))
        else {
            return false;
        };
        set_path(t, key, value);
        true
    }

    /// Sets (or removes) `key` of the top-level table `section` (bridge, sflow).
    pub fn set_in(&mut self, section: &str, key: &str, value: &str) {
        let t = self
            .table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !t.is_table() {
            *t = toml::Value::Table(toml::Table::new());
        }
        if let toml::Value::Table(t) = t {
            set_path(t, key, value);
        }
    }
}

fn set_path(t: &mut toml::Table, key: &str, value: &str) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let sub = t
                .entry(head)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !sub.is_table() {
                *sub = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(sub) = sub {
                set_path(sub, rest, value);
            }
        }
        None if value.trim().is_empty() => {
            t.remove(key);
        }
        None => {
            t.insert(key.to_owned(), parse_value(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, flags: &[&str]) -> Result<Config, ConfigError> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        Config::from_toml(text, Path::new("switch.toml"), &flags)
    }

    fn err(text: &str, flags: &[&str]) -> String {
        load(text, flags).unwrap_err().to_string()
    }

    #[test]
    fn reads_ports_and_bridge() {
        let c = load(
            r#"
            [[ports]]
            name = "vm1"
            devargs = "net_tap0,iface=vm1"
            [[ports]]
            name = "vm2"
            devargs = "net_tap1,iface=vm2"
            rx_queues = 2
            [bridge]
            fdb_capacity = 1024
            fdb_aging_secs = 60
            "#,
            &["vm3=net_tap2,iface=vm3"],
        )
        .unwrap();
        let names: Vec<_> = c.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["vm1", "vm2", "vm3"]);
        assert_eq!(c.ports[2].devargs, "net_tap2,iface=vm3");
        assert_eq!(c.ports[1].rx_queues, Some(2));
        assert_eq!(c.ports[0].device_name(), "net_tap0");
        assert_eq!(c.bridge.fdb_capacity, 1024);
        assert_eq!(c.bridge.fdb_aging_secs, 60);
        assert_eq!(c.bridge.mtu, 1500);
    }

    #[test]
    fn flags_alone_are_enough() {
        let c = Config::load_with_source(None, &["a=net_null0".to_string()])
            .unwrap()
            .0;
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.bridge.fdb_aging_secs, 300);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_allowed_ones() {
        let e = err(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nspeed = 10\n",
            &[],
        );
        assert!(e.contains("switch.toml"), "{e}");
        assert!(e.contains("speed"), "{e}");
        assert!(e.contains("devargs"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = err("[bridge]\nfdb_size = 10\n", &["a=net_null0"]);
        assert!(e.contains("fdb_size") && e.contains("fdb_capacity"), "{e}");
    }

    #[test]
    fn missing_devargs_is_named() {
        let e = err("[[ports]]\nname = \"vm1\"\n", &[]);
        assert!(e.contains("devargs") && e.contains("vhost_user"), "{e}");
        let e = err("[[ports]]\nname = \"vm1\"\ndevargs = \" \"\n", &[]);
        assert!(
            e.contains("ports[0]") && e.contains("devargs") && e.contains("vm1"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_and_devices_are_refused() {
        let file = "[[ports]]\nname = \"vm1\"\ndevargs = \"net_tap0\"\n";
        let e = err(file, &["vm1=net_tap1"]);
        assert!(
            e.contains("\"vm1\" is already used") && e.contains("ports[0]"),
            "{e}"
        );
        let e = err(file, &["vm2=net_tap0,iface=x"]);
        assert!(
            e.contains("net_tap0") && e.contains("vm1") && e.contains("vm2"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_values_say_what_is_allowed() {
        let e = err("[bridge]\nfdb_aging_secs = 5\n", &["a=net_null0"]);
        assert!(
            e.contains("bridge.fdb_aging_secs") && e.contains("from 10 to 1000000"),
            "{e}"
        );
        let e = err("[bridge]\nmtu = 9601\n", &["a=net_null0"]);
        assert!(e.contains("bridge.mtu") && e.contains("68 to 9600"), "{e}");
        // A port's own MTU, or the bridge's.
        let c = load(
            "[bridge]\nmtu = 9000\n[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nmtu = 1500\n",
            &["b=net_null1"],
        )
        .unwrap();
        assert_eq!((c.ports[0].mtu, c.ports[1].mtu), (1500, 9000));
        assert_eq!(c.ports[0].policy.mtu, Some(1500));
        assert_eq!(c.ports[1].policy.mtu, None);
        let e = err(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nmtu = 67\n",
            &[],
        );
        assert!(
            e.contains("ports[0]")
                && e.contains("mtu")
                && e.contains("\"a\"")
                && e.contains("68 to 9600"),
            "{e}"
        );
        let e = err("[bridge]\nfdb_capacity = 0\n", &["a=net_null0"]);
        assert!(e.contains("bridge.fdb_capacity"), "{e}");
        let e = err(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nrx_desc = 1\n",
            &[],
        );
        assert!(
            e.contains("ports[0]") && e.contains("rx_desc") && e.contains("64 to 8192"),
            "{e}"
        );
        let e = err("[bridge]\nfdb_capacity = -1\n", &["a=net_null0"]);
        assert!(e.contains("fdb_capacity"), "{e}");
    }

    #[test]
    fn bad_names_and_flags() {
        let e = err("", &["bad name=net_null0"]);
        assert!(
            e.contains("--port bad name=net_null0") && e.contains("valid port name"),
            "{e}"
        );
        let e = err("", &["net_null0"]);
        assert!(e.contains("NAME=DEVARGS"), "{e}");
        let e = err("", &[]);
        assert!(e.contains("no ports"), "{e}");
    }

    #[test]
    fn sflow_section() {
        let c = load(
            "[sflow]\ncollectors = [\"127.0.0.1:6343\", \"::1\", \"10.0.0.9\"]\nagent_address = \"192.0.2.1\"\nsampling_rate = 256\n[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nsampling_rate = 0\nif_index = 7\n",
            &["b=net_null1"],
        )
        .unwrap();
        let s = c.sflow.unwrap();
        assert_eq!(s.collectors.len(), 3);
        assert_eq!(s.collectors[1], "[::1]:6343".parse().unwrap());
        assert_eq!(s.collectors[2], "10.0.0.9:6343".parse().unwrap());
        assert_eq!(
            (
                s.sampling_rate,
                s.polling_interval,
                s.header_bytes,
                s.max_datagram
            ),
            (256, 20, 128, 1400)
        );
        assert_eq!(s.drop_notifications, 100, "the default");
        assert_eq!(c.ports[0].sampling_rate, Some(0));
        assert_eq!(
            (c.ports[0].if_index, c.ports[1].if_index),
            (7, 1),
            "b takes the lowest index free"
        );
        let e = err(
            "[sflow]\ncollectors = [\"127.0.0.1:6343\"]\n",
            &["a=net_null0"],
        );
        assert!(
            e.contains("sflow.agent_address") && e.contains("missing"),
            "{e}"
        );
        let e = err(
            "[sflow]\ncollectors = [\"not an address\"]\nagent_address = \"192.0.2.1\"\n",
            &["a=net_null0"],
        );
        assert!(e.contains("sflow.collectors[0]"), "{e}");
        let e = err(
            "[sflow]\nagent_address = \"192.0.2.1\"\nheader_bytes = 4\n",
            &["a=net_null0"],
        );
        assert!(
            e.contains("sflow.header_bytes") && e.contains("14 to 256"),
            "{e}"
        );
        let e = err(
            "[sflow]\nagent_address = \"192.0.2.1\"\ndrop_notifications = 1000000\n",
            &["a=net_null0"],
        );
        assert!(
            e.contains("sflow.drop_notifications") && e.contains("0 to 10000"),
            "{e}"
        );
        let e = err(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nif_index = 2\n[[ports]]\nname = \"b\"\ndevargs = \"net_null1\"\nif_index = 2\n",
            &[],
        );
        assert!(
            e.contains("ports[1]") && e.contains("if_index") && e.contains("\"a\""),
            "{e}"
        );
        // A port that names no index gets the lowest one free.
        let c = load(
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nif_index = 2\n",
            &["b=net_null1", "c=net_null2"],
        )
        .unwrap();
        let got: Vec<u32> = c.ports.iter().map(|p| p.if_index).collect();
        assert_eq!(got, [2, 1, 3]);
    }

    #[test]
    fn bridge_name_is_validated() {
        let c = load("[bridge]\nname = \"edge-1\"\n", &["a=net_null0"]).unwrap();
        assert_eq!(c.bridge.name, "edge-1");
        assert_eq!(load("", &["a=net_null0"]).unwrap().bridge.name, "br0");
        let e = err("[bridge]\nname = \"b r\"\n", &["a=net_null0"]);
        assert!(
            e.contains("bridge.name") && e.contains("valid bridge name"),
            "{e}"
        );
    }

    #[test]
    fn shown_config_loads_back_the_same() {
        let c = load(
            "[sflow]\ncollectors = [\"127.0.0.1:6343\", \"[::1]:7000\"]\nagent_address = \"192.0.2.1\"\n[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nrx_queues = 2\n[bridge]\nname = \"edge\"\nmbufs = 4096\n",
            &["b=net_null1,x=1"],
        )
        .unwrap();
        let flags = vec!["b=net_null1,x=1".to_string()];
        let (c2, source) = {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("switch.toml");
            std::fs::write(
                &f,
                "[sflow]\ncollectors = [\"127.0.0.1:6343\", \"[::1]:7000\"]\nagent_address = \"192.0.2.1\"\n[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nrx_queues = 2\nvlan = 7\n[bridge]\nname = \"edge\"\nmbufs = 4096\n",
            )
            .unwrap();
            Config::load_with_source(Some(&f), &flags).unwrap()
        };
        assert_eq!(c2.ports.len(), c.ports.len());
        let text = source.to_toml(&c2);
        let back = load(&text, &[]).unwrap();
        let c = c2;
        // The shown file names each ifIndex the start gave by position.
        let strip = |c: &Config| {
            let mut c = c.clone();
            for p in &mut c.ports {
                p.origin.clear();
                p.if_index_set = None;
            }
            c
        };
        assert_eq!(strip(&back), strip(&c), "{text}");
    }

    #[test]
    fn not_toml_at_all() {
        let e = err("this is not toml\n", &[]);
        assert!(e.starts_with("switch.toml: "), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn edge_features_are_read_and_checked() {
        let ok = load(
            r#"
[bridge]
mode = "vepa"
[[ports]]
name = "up"
devargs = "net_tap0"
role = "uplink"
trunks = [10, 20]
native_vlan = 30
[[ports]]
name = "vm1"
devargs = "net_tap1"
vlan = 10
allowed_macs = ["02:00:00:00:00:01"]
max_macs = 4
bpdu_guard = true
bpdu_guard_shutdown = true
storm_control = { broadcast_pps = 100 }
ingress_policing_rate = 10000000
egress_rate = 20000000
egress_burst = 50000
[[fdb]]
port = "vm1"
vlan = 10
mac = "02:00:00:00:00:01"
"#,
            &[],
        )
        .unwrap();
        assert_eq!(ok.bridge.mode, BridgeMode::Vepa);
        let up = &ok.ports[0].policy;
        assert!(up.uplink);
        assert_eq!(
            up.vlan,
            VlanMode::Trunk {
                trunks: vec![10, 20],
                native: Some(30)
            }
        );
        let vm = &ok.ports[1].policy;
        assert_eq!(vm.vlan, VlanMode::Access { vlan: 10 });
        assert_eq!(vm.max_macs, Some(4));
        assert_eq!(vm.storm.broadcast_pps, Some(100));
        assert_eq!(
            vm.ingress_policing.unwrap().burst_bytes,
            125_000,
            "default burst: 0.1 s"
        );
        assert_eq!(vm.egress_rate.unwrap().burst_bytes, 50_000);
        assert_eq!(ok.fdb.len(), 1);

        let port =
            |extra: &str| format!("[[ports]]\nname = \"p\"\ndevargs = \"net_null0\"\n{extra}\n");
        for (extra, field, says) in [
            (
                "vlan_mode = \"access\"\nvlan = 0",
                "vlan",
                "0 is out of range",
            ),
            ("vlan = 4095", "vlan", "4095 is out of range"),
            ("vlan_mode = \"access\"", "vlan", "set vlan"),
            ("trunks = [5, 6, 5]", "trunks[2]", "listed twice"),
            ("vlan = 5\ntrunks = [6]", "trunks", "access port"),
            (
                "allowed_macs = [\"01:00:5e:00:00:01\"]",
                "allowed_macs[0]",
                "group address",
            ),
            (
                "allowed_macs = [\"nonsense\"]",
                "allowed_macs[0]",
                "not a MAC",
            ),
            (
                "allowed_macs = [\"02:00:00:00:00:01\", \"00:00:00:00:00:00\"]",
                "allowed_macs[1]",
                "names no station",
            ),
            (
                "bpdu_guard_shutdown = true",
                "bpdu_guard_shutdown",
                "bpdu_guard = true",
            ),
            (
                "ingress_policing_burst = 1000",
                "ingress_policing_burst",
                "without a rate",
            ),
            (
                "storm_control = { broadcast_pps = 0 }",
                "storm_control.broadcast_pps",
                "out of range",
            ),
        ] {
            let e = err(&port(extra), &[]);
            assert!(e.contains(field) && e.contains(says), "{extra:?}: {e}");
            assert!(e.contains("ports[0]"), "names the port: {e}");
        }
        let e = err(&port("vlan_mode = \"hybrid\""), &[]);
        assert!(
            e.contains("line 4") && e.contains("expected `access` or `trunk`"),
            "{e}"
        );
        let two = format!(
            "{}{}",
            port("role = \"uplink\""),
            port("role = \"uplink\"")
                .replace("\"p\"", "\"q\"")
                .replace("null0", "null1")
        );
        assert!(err(&two, &[]).contains("at most one uplink"));
        let e = err(&format!("[bridge]\nuplink = \"nope\"\n{}", port("")), &[]);
        assert!(
            e.contains("bridge.uplink") && e.contains("not a port"),
            "{e}"
        );
        let e = err(&format!("[bridge]\nmode = \"vepa\"\n{}", port("")), &[]);
        assert!(e.contains("bridge.mode") && e.contains("uplink"), "{e}");
        let e = err(
            &format!(
                "{}[[fdb]]\nport = \"p\"\nvlan = 7\nmac = \"02:00:00:00:00:09\"\n",
                port("vlan = 8")
            ),
            &[],
        );
        assert!(
            e.contains("fdb[0].vlan") && e.contains("does not carry VLAN 7"),
            "{e}"
        );
    }

    #[test]
    fn runtime_edits_keep_if_indexes_and_flag_order() {
        let (c, mut src) = Config::load_with_source(
            None,
            &[
                "a=net_null0".into(),
                "b=net_null1".into(),
                "c=net_null2".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.ports.iter().map(|p| p.if_index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let running: HashMap<String, u32> = c
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.if_index))
            .collect();
        assert!(src.remove_port("b"));
        src.set_port("c", "vlan", "7");
        let c = Config::from_source(&src, &running).unwrap();
        let got: Vec<(&str, u32)> = c
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.if_index))
            .collect();
        assert_eq!(got, [("a", 1), ("c", 3)], "no renumbering, no reordering");
        // A new port goes last, after the flags' ports, with the lowest index free.
        src.add_port("d", "net_null3");
        let c = Config::from_source(&src, &running).unwrap();
        let got: Vec<(&str, u32)> = c
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.if_index))
            .collect();
        assert_eq!(got, [("a", 1), ("c", 3), ("d", 2)]);
        // Naming a running port's index for another is refused, naming both.
        let mut clash = src.clone();
        clash.set_port("d", "if_index", "3");
        let e = Config::from_source(&clash, &running)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"d\"") && e.contains("\"c\"") && e.contains("if_index 3"),
            "{e}"
        );
        let running: HashMap<String, u32> = c
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.if_index))
            .collect();
        assert_eq!(c.ports[1].policy.vlan, VlanMode::Access { vlan: 7 });
        src.set_port("c", "vlan", "");
        src.set_port("c", "storm_control.broadcast_pps", "100");
        let c = Config::from_source(&src, &running).unwrap();
        assert_eq!(c.ports[1].policy.vlan, VlanMode::default());
        assert_eq!(c.ports[1].policy.storm.broadcast_pps, Some(100));
        assert!(matches!(parse_value("[10, 20]"), toml::Value::Array(_)));
        assert_eq!(parse_value("uplink"), toml::Value::String("uplink".into()));
        src.set_port("c", "vlan", "0");
        let e = Config::from_source(&src, &running).unwrap_err().to_string();
        assert!(e.contains("\"c\"") && e.contains("vlan"), "{e}");
    }

    #[test]
    fn vm_ports_from_vhost_user_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("vm1.sock");
        let vm = |v: &str| format!("[[ports]]\nname = \"vm1\"\nvhost_user = {{ {v} }}\n");
        let c = load(
            &vm(&format!(
                "path = \"{}\", mode = \"client\", queues = 2",
                sock.display()
            )),
            &[],
        )
        .unwrap();
        let p = &c.ports[0];
        assert_eq!(
            p.devargs,
            format!("net_vhost_vm1,iface={},queues=2,client=1", sock.display())
        );
        let v = p.vhost().unwrap();
        assert_eq!((v.mode, v.queues), (VhostMode::Client, 2));
        let c = load(
            &vm(&format!(
                "path = \"{}\", mode = \"server\", socket_mode = 0o660, socket_group = 0",
                sock.display()
            )),
            &[],
        )
        .unwrap();
        let v = c.ports[0].vhost().unwrap();
        assert_eq!(
            (v.socket_mode, v.socket_group),
            (Some(0o660), Some((0, "0".into())))
        );
        // The devargs form is a VM port too.
        let c = load(
            "[[ports]]\nname = \"vm2\"\ndevargs = \"net_vhost0,iface=/tmp/x.sock,client=1\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.ports[0].vhost().unwrap().mode, VhostMode::Client);

        let path = sock.display().to_string();
        for (v, field, says) in [
            (
                "mode = \"client\"".to_owned(),
                "vhost_user.path",
                "needs the socket",
            ),
            (
                "path = \"vm1.sock\", mode = \"client\"".to_owned(),
                "vhost_user.path",
                "absolute",
            ),
            (
                "path = \"/nonexistent-dir/vm1.sock\", mode = \"client\"".to_owned(),
                "vhost_user.path",
                "does not exist",
            ),
            (
                format!("path = \"/{}.sock\", mode = \"client\"", "d".repeat(120)),
                "vhost_user.path",
                "at most 107",
            ),
            (format!("path = \"{path}\""), "vhost_user.mode", "missing"),
            (
                format!("path = \"{path}\", mode = \"both\""),
                "vhost_user.mode",
                "neither",
            ),
            (
                format!("path = \"{path}\", mode = \"client\", queues = 0"),
                "vhost_user.queues",
                "1 to 64",
            ),
            (
                format!("path = \"{path}\", mode = \"client\", queues = 65"),
                "vhost_user.queues",
                "1 to 64",
            ),
            (
                format!("path = \"{path}\", mode = \"client\", socket_mode = 0o600"),
                "vhost_user.socket_mode",
                "QEMU makes the socket",
            ),
            (
                format!("path = \"{path}\", mode = \"server\", socket_mode = 0o1777"),
                "vhost_user.socket_mode",
                "out of range",
            ),
            (
                format!("path = \"{path}\", mode = \"server\", socket_group = \"no-such-group-x\""),
                "vhost_user.socket_group",
                "no group",
            ),
        ] {
            let e = err(&vm(&v), &[]);
            assert!(
                e.contains(field) && e.contains(says) && e.contains("vm1"),
                "{v}: {e}"
            );
        }
        let e = err(
            &format!(
                "[[ports]]\nname = \"vm1\"\ndevargs = \"net_null0\"\nvhost_user = {{ path = \"{path}\", mode = \"client\" }}\n"
            ),
            &[],
        );
        assert!(e.contains("devargs") && e.contains("both"), "{e}");
    }
}
