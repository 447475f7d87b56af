//! `pmdswitch`: the switch's binary. `run` starts it; the rest of the control plane lives in
//! the modules below.
#![forbid(unsafe_code)]

mod config;
mod ctl;
mod edge;
mod metrics;
mod pcap;
mod pktgen;
mod port;
mod report;
mod runtime;
mod sflow;
mod signals;
mod switch;
mod vhost;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pmdswitch", version, about = "A DPDK poll-mode virtual switch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the switch: ports from the config file and --port flags, EAL arguments after `--`.
    Run(RunArgs),
    /// Send a command to a running switch (like `ovs-appctl -t SOCKET COMMAND ARGS...`).
    Ctl(CtlArgs),
    /// Generate traffic and measure what comes back: loss, reordering, latency, and RFC 2544
    /// zero-loss throughput (--rfc2544). EAL arguments after `--`.
    Pktgen(Box<pktgen::PktgenArgs>),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The switch's control socket.
    #[arg(long, value_name = "PATH", default_value = ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Ask for the answer as JSON (appends format=json).
    #[arg(long)]
    json: bool,
    /// The command, e.g. fdb/show (list-commands lists them).
    command: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Add a port: NAME=DEVARGS (any DPDK device string), after those of the config file.
    #[arg(long = "port", value_name = "NAME=DEVARGS")]
    ports: Vec<String>,
    /// Run this many seconds, then stop as on SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Write the stats as JSON to FILE on exit.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Seconds between one-line stats summaries in the log (0: none).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    stats_interval: Duration,
    /// The control socket (OVS unixctl protocol: `ovs-appctl -t PATH` and `pmdswitch ctl` use it).
    #[arg(long = "ctl", value_name = "PATH", default_value = ctl::DEFAULT_SOCKET)]
    ctl_socket: PathBuf,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// EAL arguments, e.g. -l 0,1 --no-pci --in-memory --file-prefix sw1
    #[arg(last = true, value_name = "EAL ARGS")]
    eal: Vec<String>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("{v} is out of range: 0 to 1e9 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Ctl(args) => ctl_command(args),
        Command::Pktgen(args) => match pktgen::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pmdswitch pktgen: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `pmdswitch ctl`: exit 0 with the answer on stdout, 2 with the switch's error message on
/// stderr (as ovs-appctl), 1 when the switch cannot be reached.
fn ctl_command(args: CtlArgs) -> ExitCode {
    use std::io::Write;
    match ctl::client::call(&args.socket, &args.command, &args.args, args.json) {
        Ok(reply) => match reply.outcome {
            Ok(text) => {
                let mut out = std::io::stdout().lock();
                // A closed pipe (`| head`) is not an error of ours.
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprint!("{message}");
                if !message.ends_with('\n') {
                    eprintln!();
                }
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("pmdswitch ctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let (config, source) =
        match config::Config::load_with_source(args.config.as_deref(), &args.ports) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pmdswitch: configuration error: {e}");
                return ExitCode::from(2);
            }
        };
    let opts = switch::RunOptions {
        duration: args.duration,
        stats_json: args.stats_json,
        stats_interval: (!args.stats_interval.is_zero()).then_some(args.stats_interval),
        ctl: ctl::CtlOptions {
            socket: args.ctl_socket,
            metrics: args.metrics,
        },
    };
    match switch::run(&config, source, &args.eal, &opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmdswitch: {e}");
            ExitCode::from(1)
        }
    }
}
