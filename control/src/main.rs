//! `pmdswitch`: the switch's binary. `run` starts it; the rest of the control plane lives in
//! the modules below.
#![forbid(unsafe_code)]

mod config;
mod edge;
mod pcap;
mod report;
mod sflow;
mod switch;

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
    };
    match switch::run(&config, source, &args.eal, &opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmdswitch: {e}");
            ExitCode::from(1)
        }
    }
}
