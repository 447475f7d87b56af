//! The configuration: TOML file and `--port` flags -> a validated model.
//!
//! Every error names where the bad value came from (the file, or the flag), the field, and
//! what is allowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sflow::encode::DEFAULT_COLLECTOR_PORT as SFLOW_PORT;

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
/// Largest MTU that fits one default mbuf (2048 data bytes) with an Ethernet header and two tags.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=2026;
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

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    ports: Vec<PortModel>,
    #[serde(default)]
    bridge: BridgeModel,
    #[serde(skip_serializing_if = "Option::is_none")]
    sflow: Option<SflowModel>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SflowModel {
    #[serde(default)]
    collectors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    polling_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_datagram: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PortModel {
    name: String,
    devargs: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rx_queues: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rx_desc: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tx_desc: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_index: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BridgeModel {
    name: String,
    fdb_capacity: usize,
    fdb_aging_secs: u32,
    mtu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    mbufs: Option<u32>,
}

impl Default for BridgeModel {
    fn default() -> Self {
        BridgeModel {
            name: DEFAULT_BRIDGE.to_owned(),
            fdb_capacity: 65_536,
            fdb_aging_secs: 300,
            mtu: 1500,
            mbufs: None,
        }
    }
}

/// One switch port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Unique name.
    pub name: String,
    /// DPDK device string (a vdev with its arguments, or a PCI address).
    pub devargs: String,
    /// Rx queues (default: one per worker, as far as the device allows).
    pub rx_queues: Option<u16>,
    /// Rx descriptors per queue.
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    pub tx_desc: u16,
    /// sFlow 1-in-N sampling rate of this port (None: the [sflow] default; 0: off).
    pub sampling_rate: Option<u32>,
    /// The port's interface index in sFlow (default: its position in the configuration, from 1).
    pub if_index: u32,
    /// Where the port was defined, for messages.
    pub origin: String,
}

impl PortSpec {
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
}

/// Sampling rates: 0 (off) or 1-in-N up to 2^24.
pub const SAMPLING_RANGE: std::ops::RangeInclusive<u32> = 0..=16_777_216;
/// Header bytes per sample.
pub const HEADER_BYTES_RANGE: std::ops::RangeInclusive<u32> = 14..=256;
/// Counter polling interval, seconds (0: off).
pub const POLLING_RANGE: std::ops::RangeInclusive<u32> = 0..=3600;
/// Datagram size: room for one sample with the largest header, up to a jumbo frame.
pub const DATAGRAM_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;

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
    /// Reads `file` (if any), adds the `--port NAME=DEVARGS` flags, and validates the whole.
    pub fn load(file: Option<&Path>, port_flags: &[String]) -> Result<Config, ConfigError> {
        let (model, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (Self::parse_model(&text, path)?, path.display().to_string())
            }
            None => (FileModel::default(), "defaults".to_owned()),
        };
        Self::from_model(model, &origin, port_flags)
    }

    /// Parses and validates TOML text (as if read from `path`), plus `--port` flags.
    #[cfg(test)]
    pub fn from_toml(
        text: &str,
        path: &Path,
        port_flags: &[String],
    ) -> Result<Config, ConfigError> {
        let model = Self::parse_model(text, path)?;
        Self::from_model(model, &path.display().to_string(), port_flags)
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
                "the MTU (one 2 KiB mbuf per frame)",
            )?,
            mbufs: b
                .mbufs
                .map(|n| check_range(origin, "bridge.mbufs", n, MBUFS_RANGE, "the mbuf pool size"))
                .transpose()?,
        };

        let mut ports = Vec::new();
        for (i, p) in model.ports.into_iter().enumerate() {
            let field = format!("ports[{i}]");
            ports.push(Self::port(origin, &field, p, i)?);
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
                rx_queues: None,
                rx_desc: None,
                tx_desc: None,
                sampling_rate: None,
                if_index: None,
            };
            let position = ports.len();
            ports.push(Self::port(&flag_origin, "--port", p, position)?);
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
        let mut if_indexes: HashMap<u32, &PortSpec> = HashMap::new();
        for p in &ports {
            if let Some(first) = if_indexes.insert(p.if_index, p) {
                return Err(invalid(
                    &p.origin,
                    "if_index",
                    format!("port {:?} has if_index {}, which port {:?} already has; each port needs its own", p.name, p.if_index, first.name),
                ));
            }
        }
        let sflow = model.sflow.map(|m| Self::sflow(origin, m)).transpose()?;
        Ok(Config {
            ports,
            bridge,
            sflow,
        })
    }

    /// The effective configuration as a config file: every value spelled out, defaults
    /// included, ports from flags among the others. Loading it gives this configuration back.
    pub fn to_toml(&self) -> String {
        let b = &self.bridge;
        let model = FileModel {
            ports: self
                .ports
                .iter()
                .map(|p| PortModel {
                    name: p.name.clone(),
                    devargs: p.devargs.clone(),
                    rx_queues: p.rx_queues,
                    rx_desc: Some(p.rx_desc),
                    tx_desc: Some(p.tx_desc),
                    sampling_rate: p.sampling_rate,
                    if_index: Some(p.if_index),
                })
                .collect(),
            bridge: BridgeModel {
                name: b.name.clone(),
                fdb_capacity: b.fdb_capacity,
                fdb_aging_secs: b.fdb_aging_secs,
                mtu: b.mtu,
                mbufs: b.mbufs,
            },
            sflow: self.sflow.as_ref().map(|s| SflowModel {
                collectors: s.collectors.iter().map(|c| c.to_string()).collect(),
                agent_address: Some(s.agent_address.to_string()),
                sampling_rate: Some(s.sampling_rate),
                polling_interval: Some(s.polling_interval),
                header_bytes: Some(s.header_bytes),
                max_datagram: Some(s.max_datagram),
            }),
        };
        toml::to_string(&model)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
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
        })
    }

    fn port(
        origin: &str,
        field: &str,
        p: PortModel,
        position: usize,
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
        if p.devargs.trim().is_empty() {
            return Err(invalid(
                &origin,
                "devargs",
                format!("port {:?} has empty devargs: give a DPDK device such as net_tap0,iface={} or a PCI address", p.name, p.name),
            ));
        }
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
        let default_index = u32::try_from(position + 1).unwrap_or(u32::MAX);
        let if_index = check_range(
            &origin,
            "if_index",
            p.if_index.unwrap_or(default_index),
            1..=0x00ff_ffff,
            "the sFlow interface index",
        )?;
        Ok(PortSpec {
            name: p.name,
            devargs: p.devargs.trim().to_owned(),
            rx_queues,
            rx_desc,
            tx_desc,
            sampling_rate,
            if_index,
            origin,
        })
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
        let c = Config::load(None, &["a=net_null0".to_string()]).unwrap();
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
        assert!(e.contains("missing field `devargs`"), "{e}");
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
        let e = err("[bridge]\nmtu = 9000\n", &["a=net_null0"]);
        assert!(e.contains("bridge.mtu") && e.contains("2026"), "{e}");
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
        assert_eq!(c.ports[0].sampling_rate, Some(0));
        assert_eq!((c.ports[0].if_index, c.ports[1].if_index), (7, 2));
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
            "[[ports]]\nname = \"a\"\ndevargs = \"net_null0\"\nif_index = 2\n",
            &["b=net_null1"],
        );
        assert!(e.contains("if_index") && e.contains("\"a\""), "{e}");
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
        let text = c.to_toml();
        let back = load(&text, &[]).unwrap();
        let strip = |c: &Config| {
            let mut c = c.clone();
            for p in &mut c.ports {
                p.origin.clear();
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
}
