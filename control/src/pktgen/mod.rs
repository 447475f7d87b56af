//! `pmdswitch pktgen`: a traffic generator on the switch's own DPDK layer, for measuring a
//! switch (this one or another) the way operators compare them: RFC 2544 zero-loss throughput
//! (and CSIT-style PDR), loss, duplicates, reordering and one-way latency percentiles.
//!
//! Every port sends one stream and receives; ports pair up (0 with 1, 2 with 3), so a port's
//! frames go to the addresses its partner sends from. A lone port sends to an address set that
//! a wire or a reflector brings back. The generator can also play a VM (`--reflect`): its
//! virtio ports are polled in the same loop, for the PVP topology on a machine with few CPUs.

mod engine;
pub mod frame;
mod output;
pub mod rx;
pub mod search;

use std::path::PathBuf;
use std::time::Duration;

use dataplane::dpdk::Eal;
use serde::Serialize;

use crate::signals::StopSignals;
use engine::{Engine, Load, ReflectMode, TrialReport};
use frame::SizeMix;
use search::{SearchSettings, TrialOutcome};

/// Command-line arguments of `pmdswitch pktgen`.
#[derive(clap::Args, Debug)]
pub struct PktgenArgs {
    /// A port to send and receive on: NAME=DEVARGS, or DEVARGS (named p0, p1, ...). Ports pair
    /// up, 0 with 1 and 2 with 3: each sends to the addresses its partner sends from.
    #[arg(long = "port", value_name = "[NAME=]DEVARGS", required = true)]
    ports: Vec<String>,
    /// Frame sizes in bytes, FCS included (64 to 9022), or imix (7:4:1 of 64/570/1518);
    /// a comma-separated list runs each in turn.
    #[arg(
        long = "size",
        value_name = "BYTES|imix",
        value_delimiter = ',',
        default_value = "64"
    )]
    sizes: Vec<SizeMix>,
    /// Flows per stream: distinct source/destination MAC pairs (1 to 16777216).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    flows: u32,
    /// Tag every frame with this 802.1Q VLAN id (1 to 4094).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4094))]
    vlan: Option<u16>,
    /// Priority code point of the tag (0 to 7; needs --vlan).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=7), requires = "vlan")]
    pcp: u8,
    /// Rate over all ports: frames/s (2000000, 2.5M, 800k) or a share of --line-gbps (50%).
    /// Without it the generator sends as fast as it can.
    #[arg(long, value_name = "PPS|N%")]
    rate: Option<String>,
    /// Line rate per port in Gbit/s, for --rate N% and the Gbit/s columns (preamble and
    /// inter-frame gap counted, 20 bytes a frame).
    #[arg(long, value_name = "GBPS")]
    line_gbps: Option<f64>,
    /// Seconds of sending, per frame size (without --rfc2544).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = crate::parse_secs)]
    duration: Duration,
    /// Find the zero-loss throughput (RFC 2544 binary search) and the rate at --pdr-loss,
    /// then measure latency at --latency-loads of the zero-loss rate.
    #[arg(long)]
    rfc2544: bool,
    /// Seconds of each search trial.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = crate::parse_secs)]
    trial_secs: Duration,
    /// Seconds of each latency trial (default: --trial-secs).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    latency_secs: Option<Duration>,
    /// The search stops when its bounds are this close, percent of the upper one.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.5)]
    resolution: f64,
    /// Loss the second throughput figure (PDR) allows, percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.5)]
    pdr_loss: f64,
    /// Loads for the latency trials, percent of the zero-loss rate.
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        default_value = "10,50,90"
    )]
    latency_loads: Vec<f64>,
    /// Most trials of a frame size's searches, NDR's and PDR's together (after the unpaced
    /// first one, repeats included).
    #[arg(long, default_value_t = 20)]
    max_trials: usize,
    /// Run a failed search trial again up to N times before its rate counts as failed (loss
    /// verification, as OPNFV VSPERF does; 0 is RFC 2544's single trial).
    #[arg(long, value_name = "N", default_value_t = 0)]
    trial_retries: usize,
    /// Do not send learning frames before each trial.
    #[arg(long)]
    no_learn: bool,
    /// Rate of the learning frames, frames/s over all ports.
    #[arg(long, value_name = "PPS", default_value = "1M", value_parser = parse_pps)]
    learn_rate: f64,
    /// Rx queues per port, all polled: for a peer that sends on a queue other than the first
    /// (OVS-DPDK transmits on queue 1 of a memif port whose partner it serves).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    rx_queues: u16,
    /// Play a VM on these ports, polled in the generator's loop: one port swaps MAC addresses
    /// and sends back (macswap), two ports pass frames across (io). For PVP on few CPUs.
    #[arg(long = "reflect", value_name = "DEVARGS")]
    reflect: Vec<String>,
    /// Seconds to wait for every port's link (peers connecting) before the first trial.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = crate::parse_secs)]
    link_wait: Duration,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the results as a PNG: throughput per frame size and latency percentiles.
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// EAL arguments, e.g. -l 0 --no-pci --in-memory --file-prefix gen
    #[arg(last = true, value_name = "EAL ARGS")]
    eal: Vec<String>,
}

/// Share of offered frames a port may refuse in an unpaced trial for its rate to still count
/// as the generator's own (see [`Throughput::generator_bound`]).
const PUSHBACK_LIMIT: f64 = 0.01;

/// A rate given as "2000000", "2.5M", "800k".
fn parse_pps(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.chars().last() {
        Some('M' | 'm') => (&s[..s.len() - 1], 1e6),
        Some('K' | 'k') => (&s[..s.len() - 1], 1e3),
        Some('G' | 'g') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate: give frames/s, e.g. 2000000, 2.5M or 800k"))?;
    let v = v * mult;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("rate {s:?} must be above 0 frames/s"));
    }
    Ok(v)
}

/// The rate a user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RateSpec {
    Pps(f64),
    /// Percent of the line rate.
    Percent(f64),
}

fn parse_rate(s: &str) -> Result<RateSpec, String> {
    if let Some(p) = s.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("rate {s} is out of range: above 0% to 100%"));
        }
        return Ok(RateSpec::Percent(v));
    }
    parse_pps(s).map(RateSpec::Pps)
}

/// Errors that end a pktgen run, for a person.
#[derive(Debug, thiserror::Error)]
pub enum PktgenError {
    #[error("--rate {0}: a percentage needs --line-gbps")]
    PercentWithoutLine(String),
    #[error("--rate: {0}")]
    Rate(String),
    #[error("--line-gbps {0}: give a line rate above 0 Gbit/s")]
    LineRate(f64),
    #[error("--resolution and --pdr-loss are percentages from 0 to 100 (got {0})")]
    Percent(f64),
    #[error("--port {0:?}: give NAME=DEVARGS or DEVARGS")]
    PortSpec(String),
    #[error("at most 254 ports (got {0})")]
    TooManyPorts(usize),
    #[error("--reflect takes one port (MAC swap) or two (cross-connected), got {0}")]
    ReflectCount(usize),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("EAL: {0}")]
    Eal(dataplane::dpdk::DpdkError),
    #[error("{0}")]
    Engine(#[from] engine::EngineError),
    #[error("ports whose link never came up: {0}")]
    LinksDown(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// A fixed-rate run of one frame size.
#[derive(Debug, Serialize)]
pub struct FixedRun {
    pub size: String,
    pub mean_frame_bytes: f64,
    pub trial: TrialReport,
}

/// A throughput figure of the search.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Frames/s over all ports.
    pub pps: f64,
    /// Gbit/s of line over all ports (preamble and gap counted).
    pub gbps: f64,
    /// Loss share the figure allows (0 for NDR).
    pub loss_allowed: f64,
    /// The unpaced trial passed and the ports took nearly every frame offered at once (under
    /// 1% pushed back): the generator's CPU, not the device, set this figure. An unpaced pass
    /// with pushback is the device's rate (a virtual port refuses what its peer cannot take).
    pub generator_bound: bool,
}

/// Latency at a share of the zero-loss rate.
#[derive(Debug, Serialize)]
pub struct LatencyAtLoad {
    pub load_percent: f64,
    pub trial: TrialReport,
}

/// The RFC 2544 results of one frame size.
#[derive(Debug, Serialize)]
pub struct SizeResult {
    pub size: String,
    pub mean_frame_bytes: f64,
    /// The generator's unpaced rate in this topology, frames/s.
    pub generator_pps: f64,
    pub ndr: Throughput,
    pub pdr: Throughput,
    pub search_trials: Vec<TrialReport>,
    pub latency: Vec<LatencyAtLoad>,
}

/// Everything a run measured, as `--json` writes it.
#[derive(Debug, Serialize)]
pub struct Results {
    pub ports: Vec<String>,
    /// The VM role, if played: "mac_swap" or "cross".
    pub reflect: Option<ReflectMode>,
    pub flows: u32,
    pub vlan: Option<u16>,
    pub pcp: u8,
    pub line_gbps: Option<f64>,
    pub tsc_hz: u64,
    /// Fixed-rate runs (without --rfc2544).
    pub runs: Vec<FixedRun>,
    /// RFC 2544 results (with --rfc2544).
    pub rfc2544: Vec<SizeResult>,
}

fn port_specs(ports: &[String]) -> Result<Vec<(String, String)>, PktgenError> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // NAME=DEVARGS when the part before '=' has no comma (devargs have name,k=v).
            match p.split_once('=') {
                Some((name, devargs)) if !name.contains(',') && !devargs.is_empty() => {
                    if name.is_empty() {
                        Err(PktgenError::PortSpec(p.clone()))
                    } else {
                        Ok((name.to_owned(), devargs.to_owned()))
                    }
                }
                _ if p.is_empty() => Err(PktgenError::PortSpec(p.clone())),
                _ => Ok((format!("p{i}"), p.clone())),
            }
        })
        .collect()
}

/// Runs `pmdswitch pktgen`; prints the table on stdout, progress on stderr.
pub fn run(args: &PktgenArgs) -> Result<Results, PktgenError> {
    let rate = args
        .rate
        .as_deref()
        .map(parse_rate)
        .transpose()
        .map_err(PktgenError::Rate)?;
    if let Some(g) = args.line_gbps {
        if !(g > 0.0 && g.is_finite()) {
            return Err(PktgenError::LineRate(g));
        }
    }
    if matches!(rate, Some(RateSpec::Percent(_))) && args.line_gbps.is_none() {
        return Err(PktgenError::PercentWithoutLine(
            args.rate.clone().unwrap_or_default(),
        ));
    }
    for p in [args.resolution, args.pdr_loss] {
        if !(0.0..=100.0).contains(&p) {
            return Err(PktgenError::Percent(p));
        }
    }
    for &p in &args.latency_loads {
        if !(p > 0.0 && p <= 100.0) {
            return Err(PktgenError::Percent(p));
        }
    }
    let ports = port_specs(&args.ports)?;
    if ports.len() > 254 {
        return Err(PktgenError::TooManyPorts(ports.len()));
    }
    if args.reflect.len() > 2 {
        return Err(PktgenError::ReflectCount(args.reflect.len()));
    }
    let max_size = args.sizes.iter().map(SizeMix::max_size).max().unwrap_or(64);

    let signals = StopSignals::install().map_err(PktgenError::Signals)?;
    let eal = Eal::init(&args.eal).map_err(PktgenError::Eal)?;
    signals.unblock_here().map_err(PktgenError::Signals)?;
    if !eal.worker_lcores().is_empty() {
        log::info!("pktgen runs on the main lcore alone; the other lcores of -l stay idle");
    }
    let mut engine = Engine::open(
        &ports,
        &args.reflect,
        max_size,
        args.rx_queues,
        signals.stop_flag(),
    )?;
    let down = engine.wait_for_links(args.link_wait);
    if !down.is_empty() {
        return Err(PktgenError::LinksDown(down.join(", ")));
    }
    let mut results = Results {
        ports: engine.port_names(),
        reflect: engine.reflect_mode(),
        flows: args.flows,
        vlan: args.vlan,
        pcp: args.pcp,
        line_gbps: args.line_gbps,
        tsc_hz: dataplane::dpdk::tsc_hz(),
        runs: Vec::new(),
        rfc2544: Vec::new(),
    };
    let nports = ports.len() as f64;
    for sizes in &args.sizes {
        let load = Load {
            sizes: sizes.clone(),
            flows: args.flows,
            vlan: args.vlan.map(|v| (v, args.pcp)),
            learn: !args.no_learn,
            learn_pps: args.learn_rate,
        };
        // A percentage is of every port's line together.
        let pps = rate.map(|r| match r {
            RateSpec::Pps(p) => p,
            RateSpec::Percent(p) => {
                sizes.line_rate_pps(args.line_gbps.unwrap_or(0.0)) * nports * p / 100.0
            }
        });
        if args.rfc2544 {
            let Some(r) = rfc2544(&mut engine, &load, args, !args.quiet) else {
                break;
            };
            results.rfc2544.push(r);
        } else {
            if !args.quiet {
                eprintln!(
                    "pktgen: {} bytes, {} for {:.1} s",
                    sizes.label(),
                    pps.map_or("unpaced".into(), |p| format!("{:.3} Mpps", p / 1e6)),
                    args.duration.as_secs_f64()
                );
            }
            let Some(trial) = engine.trial(&load, pps, args.duration) else {
                break;
            };
            results.runs.push(FixedRun {
                size: sizes.label(),
                mean_frame_bytes: sizes.mean_size(),
                trial,
            });
        }
    }
    print!("{}", output::table(&results));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialise");
        std::fs::write(path, text + "\n").map_err(|source| PktgenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(path) = &args.png {
        output::draw_png(&results, path).map_err(|message| PktgenError::Draw {
            path: path.clone(),
            message,
        })?;
    }
    drop(engine);
    drop(eal);
    Ok(results)
}

fn outcome(t: &TrialReport) -> TrialOutcome {
    TrialOutcome {
        offered_pps: t.offered_pps,
        sent_pps: t.sent_pps,
        loss_ratio: t.loss_ratio,
        shortfall_ratio: t.shortfall_ratio,
    }
}

fn rfc2544(
    engine: &mut Engine,
    load: &Load,
    args: &PktgenArgs,
    progress: bool,
) -> Option<SizeResult> {
    let label = load.sizes.label();
    let mut reports: Vec<TrialReport> = Vec::new();
    let settings = SearchSettings {
        resolution: args.resolution / 100.0,
        pdr_loss: args.pdr_loss / 100.0,
        max_trials: args.max_trials,
        retries: args.trial_retries,
    };
    let result = search::search(settings, |rate| {
        let t = engine.trial(load, rate, args.trial_secs)?;
        if progress {
            eprintln!(
                "pktgen: {label} bytes, trial {}: offered {}, sent {:.3} Mpps ({:.2}% short), loss {:.4}%",
                reports.len() + 1,
                rate.map_or("unpaced".into(), |r| format!("{:.3} Mpps", r / 1e6)),
                t.sent_pps / 1e6,
                t.shortfall_ratio * 100.0,
                t.loss_ratio * 100.0
            );
        }
        let o = outcome(&t);
        reports.push(t);
        Some(o)
    });
    if reports.is_empty() {
        return None;
    }
    let unpaced_pushback = reports.first().map_or(0.0, |t| t.pushback_ratio);
    let generator_set = |bound: bool| bound && unpaced_pushback < PUSHBACK_LIMIT;
    let gbps = |pps: f64| pps * (load.sizes.mean_size() + frame::WIRE_OVERHEAD as f64) * 8.0 / 1e9;
    let mut latency = Vec::new();
    if result.ndr.pps > 0.0 {
        for &p in &args.latency_loads {
            let pps = result.ndr.pps * p / 100.0;
            let secs = args.latency_secs.unwrap_or(args.trial_secs);
            let t = engine.trial(load, Some(pps), secs)?;
            if progress {
                eprintln!(
                    "pktgen: {label} bytes, latency at {p}% ({:.3} Mpps): p50 {} ns, p99 {} ns, loss {}",
                    pps / 1e6,
                    t.latency.p50_ns,
                    t.latency.p99_ns,
                    t.lost
                );
            }
            latency.push(LatencyAtLoad {
                load_percent: p,
                trial: t,
            });
        }
    }
    Some(SizeResult {
        size: label,
        mean_frame_bytes: load.sizes.mean_size(),
        generator_pps: result.generator_pps,
        ndr: Throughput {
            pps: result.ndr.pps,
            gbps: gbps(result.ndr.pps),
            loss_allowed: 0.0,
            generator_bound: generator_set(result.ndr.generator_bound),
        },
        pdr: Throughput {
            pps: result.pdr.pps,
            gbps: gbps(result.pdr.pps),
            loss_allowed: settings.pdr_loss,
            generator_bound: generator_set(result.pdr.generator_bound),
        },
        search_trials: reports,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_percentages() {
        assert_eq!(parse_rate("2.5M"), Ok(RateSpec::Pps(2.5e6)));
        assert_eq!(parse_rate("800k"), Ok(RateSpec::Pps(8e5)));
        assert_eq!(parse_rate("1000"), Ok(RateSpec::Pps(1000.0)));
        assert_eq!(parse_rate("50%"), Ok(RateSpec::Percent(50.0)));
        assert!(parse_rate("150%").unwrap_err().contains("100%"));
        assert!(parse_rate("fast").unwrap_err().contains("frames/s"));
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn ports_are_named_or_numbered() {
        let p = port_specs(&[
            "a=net_ring0".into(),
            "net_memif0,role=client,socket=/x".into(),
        ])
        .unwrap();
        assert_eq!(p[0], ("a".into(), "net_ring0".into()));
        assert_eq!(
            p[1],
            ("p1".into(), "net_memif0,role=client,socket=/x".into())
        );
        assert!(port_specs(&["=x".into()]).is_err());
    }
}
