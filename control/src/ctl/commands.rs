//! The commands of the control socket, named like Open vSwitch's where it has one. Each answers
//! text for a person, or JSON when its last argument is `format=json`.
//!
//! A command is one function registered with [`Commands::register`]: its name, its usage, how
//! many arguments it takes, and the handler.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::RangeInclusive;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use dataplane::fdb::{Entry, Learn, VLAN_MASK};
use dataplane::forward::DropReason;
use dataplane::packet::MacAddr;
use dataplane::stats::{cycles_histogram, Counters, WorkerCounter};

use super::Context;
use crate::report::WorkerReport;

/// What the control loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Carry on.
    Continue,
    /// Stop the switch, as on SIGTERM.
    Exit,
}

/// A handler's answer: the text (or JSON) to send, or an error message.
pub type Outcome = Result<String, String>;

/// A command's implementation.
pub type Handler = fn(&mut Call<'_, '_>) -> Outcome;

/// One invocation, as a handler sees it.
pub struct Call<'c, 'a> {
    /// The arguments, without a trailing `format=...`.
    pub args: &'c [String],
    /// `format=json` was given.
    pub json: bool,
    /// The running switch.
    pub ctx: &'c mut Context<'a>,
    /// State the commands keep between calls.
    pub state: &'c mut State,
    /// Every registered command (for `list-commands`).
    pub commands: &'c [Command],
    /// Set by a handler to stop the switch once the reply is sent.
    pub flow: Flow,
}

/// A registered command.
pub struct Command {
    /// Its name, e.g. `fdb/show`.
    pub name: &'static str,
    /// Its arguments, e.g. `[BRIDGE]`.
    pub usage: &'static str,
    /// How many arguments it takes.
    pub args: RangeInclusive<usize>,
    handler: Handler,
}

/// State kept by commands between calls.
#[derive(Default)]
pub struct State {
    /// Per worker lcore: counters and cycles histogram at the last `pmd/stats-clear`.
    pmd_baseline: BTreeMap<u32, (Counters, Histogram<u64>)>,
}

/// The command table.
pub struct Commands {
    list: Vec<Command>,
    state: State,
}

impl Default for Commands {
    fn default() -> Self {
        Self::new()
    }
}

impl Commands {
    /// Every command of the switch.
    pub fn new() -> Commands {
        let mut c = Commands {
            list: Vec::new(),
            state: State::default(),
        };
        c.register("list-commands", "", 0..=0, list_commands);
        c.register("version", "", 0..=0, version);
        c.register("exit", "", 0..=0, exit);
        c.register("fdb/show", "[BRIDGE]", 0..=1, fdb_show);
        c.register("fdb/flush", "[BRIDGE] [PORT]", 0..=2, fdb_flush);
        c.register("fdb/stats-show", "[BRIDGE]", 0..=1, fdb_stats_show);
        c.register("fdb/add", "[BRIDGE] PORT VLAN MAC", 3..=4, fdb_add);
        c.register("fdb/del", "[BRIDGE] [PORT] VLAN MAC", 2..=4, fdb_del);
        c.register("port/show", "[PORT]", 0..=1, port_show);
        c.register("pmd/stats-show", "", 0..=0, pmd_stats_show);
        c.register("pmd/stats-clear", "", 0..=0, pmd_stats_clear);
        c.register("pmd/rxq-show", "", 0..=0, pmd_rxq_show);
        c.register("sflow/show", "", 0..=0, sflow_show);
        c.register("config/show", "", 0..=0, config_show);
        c.register("coverage/show", "", 0..=0, coverage_show);
        c.register(
            "port/add",
            "NAME [DEVARGS] [KEY=VALUE...]",
            2..=64,
            port_add,
        );
        c.register("port/del", "NAME", 1..=1, port_del);
        c.register("port/set", "NAME KEY=VALUE...", 2..=64, port_set);
        c.register("bridge/set", "KEY=VALUE...", 1..=64, bridge_set);
        c.register("sflow/set", "KEY=VALUE...", 1..=64, sflow_set);
        c.register("config/reload", "", 0..=0, config_reload);
        c.register("fdb/moves-show", "", 0..=0, fdb_moves_show);
        c
    }

    /// Adds a command. A name registered twice is a programming error.
    pub fn register(
        &mut self,
        name: &'static str,
        usage: &'static str,
        args: RangeInclusive<usize>,
        handler: Handler,
    ) {
        assert!(
            self.list.iter().all(|c| c.name != name),
            "command {name} registered twice"
        );
        self.list.push(Command {
            name,
            usage,
            args,
            handler,
        });
    }

    /// Runs `method` with `params`: its reply, and what the control loop does next.
    pub fn run(
        &mut self,
        method: &str,
        params: &[String],
        ctx: &mut Context<'_>,
    ) -> (Outcome, Flow) {
        let Some(cmd) = self.list.iter().find(|c| c.name == method) else {
            return (
                Err(format!(
                    "\"{method}\" is not a valid command (use \"list-commands\" to see a list of valid commands)"
                )),
                Flow::Continue,
            );
        };
        let (args, json) = match params.split_last() {
            Some((last, rest)) if last == "format=json" => (rest, true),
            Some((last, rest)) if last == "format=text" => (rest, false),
            _ => (params, false),
        };
        if !cmd.args.contains(&args.len()) {
            let want = if cmd.args.start() == cmd.args.end() {
                format!("{}", cmd.args.start())
            } else {
                format!("{} to {}", cmd.args.start(), cmd.args.end())
            };
            return (
                Err(format!(
                    "\"{}\" takes {want} argument(s), got {}; usage: {} {} [format=json]",
                    cmd.name,
                    args.len(),
                    cmd.name,
                    cmd.usage
                )),
                Flow::Continue,
            );
        }
        let mut call = Call {
            args,
            json,
            ctx,
            state: &mut self.state,
            commands: &self.list,
            flow: Flow::Continue,
        };
        let out = (cmd.handler)(&mut call).map_err(|e| format!("{}: {e}", cmd.name));
        (out, call.flow)
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

impl Call<'_, '_> {
    /// Checks that `name` is this switch's bridge.
    fn bridge(&self, name: &str) -> Result<(), String> {
        if name == self.ctx.bridge() {
            Ok(())
        } else {
            Err(format!(
                "no bridge named {name:?}: this switch's bridge is {:?}",
                self.ctx.bridge()
            ))
        }
    }

    /// The arguments after an optional leading bridge name, when `full` arguments mean the
    /// first one is the bridge (Open vSwitch's form).
    fn after_bridge(&self, full: usize) -> Result<&[String], String> {
        if self.args.len() == full {
            self.bridge(&self.args[0])?;
            Ok(&self.args[1..])
        } else {
            Ok(self.args)
        }
    }

    fn port_id(&self, name: &str) -> Result<u16, String> {
        self.ctx.port(name).map(|p| p.port.id().0)
    }
}

fn parse_vlan(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|v| *v <= VLAN_MASK)
        .ok_or_else(|| format!("VLAN {s:?} is not a number from 0 to 4095"))
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = s
        .parse()
        .map_err(|e: dataplane::packet::MacParseError| e.to_string())?;
    if !mac.is_individual() {
        return Err(format!(
            "{mac} is not a station's address (a group address, or all zeros); a MAC table entry needs an individual unicast address"
        ));
    }
    Ok(mac)
}

fn list_commands(c: &mut Call<'_, '_>) -> Outcome {
    if c.json {
        let v: Vec<Value> = c
            .commands
            .iter()
            .map(|k| json!({"name": k.name, "usage": k.usage}))
            .collect();
        return Ok(pretty(&json!({ "commands": v })));
    }
    let mut s = String::from("The available commands are:\n");
    for k in c.commands {
        let _ = writeln!(s, "  {:<23} {}", k.name, k.usage);
    }
    Ok(s)
}

fn version(c: &mut Call<'_, '_>) -> Outcome {
    let ours = env!("CARGO_PKG_VERSION");
    let dpdk = dataplane::dpdk::runtime_version();
    if c.json {
        return Ok(pretty(
            &json!({"pmdswitch": ours, "dpdk": dpdk, "built_against": dpdk_sys::BUILD_VERSION}),
        ));
    }
    Ok(format!(
        "pmdswitch {ours} ({dpdk}, built against {})\n",
        dpdk_sys::BUILD_VERSION
    ))
}

fn exit(c: &mut Call<'_, '_>) -> Outcome {
    log::info!("stop requested on the control socket (exit)");
    c.flow = Flow::Exit;
    Ok(String::new())
}

fn fdb_show(c: &mut Call<'_, '_>) -> Outcome {
    if let Some(b) = c.args.first() {
        c.bridge(b)?;
    }
    let fdb = c.ctx.fdb();
    let mut entries: Vec<Entry> = Vec::with_capacity(fdb.len() + 64);
    fdb.for_each(|e| entries.push(e));
    // Ports in configuration order, then VLAN, then address.
    let mut order = [usize::MAX; dataplane::dpdk::MAX_PORTS];
    for (i, p) in c.ctx.ports().iter().enumerate() {
        order[p.port.id().index()] = i;
    }
    entries.sort_unstable_by_key(|e| (order[usize::from(e.port)], e.vlan, e.mac.to_u64()));
    let now = fdb.now();
    let names: Vec<&str> = (0..dataplane::dpdk::MAX_PORTS)
        .map(|id| c.ctx.port_name(u16::try_from(id).unwrap_or(u16::MAX)))
        .collect();
    if c.json {
        // Typed rows, written compactly: a million entries take a fraction of the time and
        // memory of a tree of JSON values.
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Age {
            Secs(u32),
            Static(&'static str),
        }
        #[derive(serde::Serialize)]
        struct Row<'n> {
            port: &'n str,
            vlan: u16,
            mac: String,
            age: Age,
        }
        #[derive(serde::Serialize)]
        struct Table<'n> {
            bridge: &'n str,
            entries: Vec<Row<'n>>,
        }
        let table = Table {
            bridge: c.ctx.bridge(),
            entries: entries
                .iter()
                .map(|e| Row {
                    port: names[usize::from(e.port)],
                    vlan: e.vlan,
                    mac: e.mac.to_string(),
                    age: if e.is_static {
                        Age::Static("static")
                    } else {
                        Age::Secs(now.wrapping_sub(e.last_seen))
                    },
                })
                .collect(),
        };
        return serde_json::to_string(&table)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string());
    }
    let mut s = String::with_capacity(40 + entries.len() * 40);
    s.push_str(" port  VLAN  MAC                Age\n");
    for e in &entries {
        let _ = write!(
            s,
            "{:>5}  {:>4}  {}  ",
            names[usize::from(e.port)],
            e.vlan,
            e.mac
        );
        if e.is_static {
            s.push_str("static\n");
        } else {
            let _ = writeln!(s, "{:>3}", now.wrapping_sub(e.last_seen));
        }
    }
    Ok(s)
}

fn fdb_flush(c: &mut Call<'_, '_>) -> Outcome {
    let port = match c.args {
        [] => None,
        [one] if *one == c.ctx.bridge() => None,
        [one] => Some(one.clone()),
        [bridge, port] => {
            c.bridge(bridge)?;
            Some(port.clone())
        }
        _ => unreachable!("checked by the registry"),
    };
    let id = port.as_deref().map(|p| c.port_id(p)).transpose()?;
    let n = c.ctx.fdb().flush(id);
    if c.json {
        return Ok(pretty(&json!({"flushed": n, "port": port})));
    }
    Ok(format!(
        "table successfully flushed: {n} learned entries removed\n"
    ))
}

fn fdb_stats_show(c: &mut Call<'_, '_>) -> Outcome {
    if let Some(b) = c.args.first() {
        c.bridge(b)?;
    }
    let mut statics = 0usize;
    c.ctx
        .fdb()
        .for_each(|e| statics += usize::from(e.is_static));
    let r = c.ctx.report().fdb;
    if c.json {
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        v["static_entries"] = json!(statics);
        v["bridge"] = json!(c.ctx.bridge());
        return Ok(pretty(&v));
    }
    Ok(format!(
        "Statistics for bridge \"{}\":\n  Current/maximum MAC entries in the table: {}/{}\n  Current static MAC entries in the table : {statics}\n  Total number of learned MAC entries     : {}\n  Total number of expired MAC entries     : {}\n  Total number of port moved MAC entries  : {}\n  Total number of not learned (table full): {}\n  Total number of static conflicts        : {}\n  Table memory                            : {} bytes\n",
        c.ctx.bridge(), r.entries, r.capacity, r.learned, r.aged, r.moved, r.full, r.static_conflicts, r.memory_bytes
    ))
}

fn fdb_add(c: &mut Call<'_, '_>) -> Outcome {
    let [port, vlan, mac] = c.after_bridge(4)? else {
        unreachable!("3 or 4 arguments")
    };
    let id = c.port_id(port)?;
    let vlan = parse_vlan(vlan)?;
    let mac = parse_mac(mac)?;
    match c.ctx.fdb().add_static(vlan, mac, id) {
        Learn::Full => Err(format!(
            "the MAC table is full ({} entries): {mac} VLAN {vlan} not added",
            c.ctx.fdb().len()
        )),
        Learn::Contended => Err(format!(
            "{mac} VLAN {vlan} was being learned at that instant; try again"
        )),
        _ => {
            if c.json {
                return Ok(pretty(
                    &json!({"added": {"port": port, "vlan": vlan, "mac": mac.to_string()}}),
                ));
            }
            Ok(format!("static entry {mac} VLAN {vlan} on port {port}\n"))
        }
    }
}

fn fdb_del(c: &mut Call<'_, '_>) -> Outcome {
    // VLAN MAC | PORT VLAN MAC | BRIDGE VLAN MAC | BRIDGE PORT VLAN MAC
    let rest: &[String] = match c.args.len() {
        4 => c.after_bridge(4)?,
        3 if c.args[0] == c.ctx.bridge() => &c.args[1..],
        _ => c.args,
    };
    let (port, vlan, mac) = match rest {
        [p, v, m] => (Some(p.as_str()), v, m),
        [v, m] => (None, v, m),
        _ => unreachable!("2 to 4 arguments"),
    };
    let vlan = parse_vlan(vlan)?;
    let mac = parse_mac(mac)?;
    if let Some(p) = port {
        let id = c.port_id(p)?;
        match c.ctx.fdb().lookup(vlan, mac) {
            Some(on) if on != id => {
                return Err(format!(
                    "{mac} VLAN {vlan} is on port {}, not {p}",
                    c.ctx.port_name(on)
                ))
            }
            _ => {}
        }
    }
    if !c.ctx.fdb().remove(vlan, mac) {
        return Err(format!("no entry for {mac} VLAN {vlan}"));
    }
    if c.json {
        return Ok(pretty(
            &json!({"deleted": {"vlan": vlan, "mac": mac.to_string()}}),
        ));
    }
    Ok(format!("entry {mac} VLAN {vlan} deleted\n"))
}

fn port_show(c: &mut Call<'_, '_>) -> Outcome {
    if let Some(p) = c.args.first() {
        c.ctx.port(p)?;
    }
    let report = c.ctx.report();
    let selected = |name: &str| c.args.first().is_none_or(|p| p == name);
    let mut json_ports = Vec::new();
    let mut s = String::new();
    for (p, sp) in report
        .ports
        .iter()
        .zip(c.ctx.ports())
        .filter(|(p, _)| selected(&p.name))
    {
        let link = sp.port.link();
        if c.json {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["link"] = json!({"up": link.up, "speed_mbps": link.speed_mbps, "full_duplex": link.full_duplex});
            json_ports.push(v);
            continue;
        }
        let _ = write!(
            s,
            "port {}: id {}, driver {}, devargs {}\n  link: {}, {} Mbit/s, {}\n  rx: packets {}, bytes {}, dropped {}; unicast {}, multicast {}, broadcast {}\n  tx: packets {}, dropped {}; unicast {}, multicast {}, broadcast {}\n  device: rx missed {}, rx errors {}, rx no mbuf {}, tx errors {}\n  sflow: ifIndex {}, samples taken {}, lost {}\n",
            p.name, p.port_id, p.driver, p.devargs,
            if link.up { "up" } else { "down" }, link.speed_mbps,
            if link.full_duplex { "full-duplex" } else { "half-duplex" },
            p.rx_packets, p.rx_bytes, p.rx_dropped, p.rx_unicast, p.rx_multicast, p.rx_broadcast,
            p.tx_packets, p.tx_dropped, p.tx_unicast, p.tx_multicast, p.tx_broadcast,
            p.rx_missed, p.rx_errors, p.rx_nombuf, p.tx_errors,
            p.if_index, p.samples_taken, p.samples_lost
        );
        if let Some(v) = &p.vhost {
            let _ = writeln!(
                s,
                "  vhost-user: {} ({}), {} queue pairs offered; {}",
                v.socket,
                v.mode,
                v.queues,
                if v.connected {
                    format!(
                        "guest connected: {} set up, rx queues enabled {:?}, tx queues enabled {:?}, features {}",
                        v.guest_queues,
                        v.rx_enabled,
                        v.tx_enabled,
                        v.features.join(" ")
                    )
                } else {
                    "no guest".to_owned()
                }
            );
        }
        // The driver's own counters, those that moved (a driver may have dozens).
        let moved: Vec<String> = p
            .xstats
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !moved.is_empty() {
            let _ = writeln!(s, "  xstats: {}", moved.join(", "));
        }
    }
    if c.json {
        return Ok(pretty(&json!({ "ports": json_ports })));
    }
    Ok(s)
}

/// Per worker: the counters since the last `pmd/stats-clear`.
fn pmd_reports(c: &Call<'_, '_>) -> Vec<WorkerReport> {
    c.ctx
        .workers()
        .iter()
        .map(|w| {
            let mut counters = w.snapshot();
            let mut hist = w.cycles_per_burst();
            if let Some((base, base_hist)) = c.state.pmd_baseline.get(&w.lcore()) {
                counters = counters.since(base);
                // The histogram only grows, so the baseline is always contained in it.
                if hist.subtract(base_hist).is_err() {
                    hist = cycles_histogram();
                }
            }
            WorkerReport::new(w.lcore(), &counters, &hist)
        })
        .collect()
}

fn pmd_stats_show(c: &mut Call<'_, '_>) -> Outcome {
    let reports = pmd_reports(c);
    if c.json {
        let v: Vec<Value> = reports
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["busy_ratio"] = json!(r.busy_ratio());
                v
            })
            .collect();
        return Ok(pretty(&json!({ "pmds": v })));
    }
    let mut s = String::new();
    for r in &reports {
        let all = r.busy_cycles + r.idle_cycles;
        let per = |x: u64| {
            if r.packets > 0 {
                x as f64 / r.packets as f64
            } else {
                0.0
            }
        };
        let q = &r.cycles_per_burst;
        let _ = write!(
            s,
            "pmd thread lcore {}:\n  packets received: {}\n  bursts: {}\n  unicast: {} ({} by the flow cache)\n  flooded: {} ({} copies)\n  MAC-table lookups: {} ({:.2} per packet, {:.2} cache lines each)\n  idle cycles: {} ({:.2}%)\n  processing cycles: {} ({:.2}%)\n  avg cycles per packet: {:.2} ({all}/{})\n  avg processing cycles per packet: {:.2} ({}/{})\n  cycles per burst: p50 {}, p99 {}, p99.9 {}, max {} ({} bursts)\n",
            r.lcore, r.packets, r.bursts, r.unicast, r.flow_cache_hits, r.flooded, r.flood_copies,
            r.fdb_lookups, r.fdb_lookups_per_packet, r.fdb_lines_per_lookup,
            r.idle_cycles, if all > 0 { 100.0 - 100.0 * r.busy_ratio() } else { 0.0 },
            r.busy_cycles, 100.0 * r.busy_ratio(),
            per(all), r.packets, per(r.busy_cycles), r.busy_cycles, r.packets,
            q.p50, q.p99, q.p999, q.max, q.count
        );
    }
    Ok(s)
}

fn pmd_stats_clear(c: &mut Call<'_, '_>) -> Outcome {
    for w in c.ctx.workers() {
        c.state
            .pmd_baseline
            .insert(w.lcore(), (w.snapshot(), w.cycles_per_burst()));
    }
    let n = c.ctx.workers().len();
    if c.json {
        return Ok(pretty(&json!({ "cleared": n })));
    }
    Ok(format!("statistics cleared for {n} pmd threads\n"))
}

fn pmd_rxq_show(c: &mut Call<'_, '_>) -> Outcome {
    let mut by_lcore: BTreeMap<u32, Vec<(&str, u16)>> = c
        .ctx
        .workers()
        .iter()
        .map(|w| (w.lcore(), Vec::new()))
        .collect();
    for a in c.ctx.rxqs() {
        by_lcore
            .entry(a.lcore)
            .or_default()
            .push((&a.port, a.queue));
    }
    if c.json {
        let v: Vec<Value> = by_lcore
            .iter()
            .map(|(l, qs)| {
                let q: Vec<Value> = qs
                    .iter()
                    .map(|(p, q)| json!({"port": p, "queue": q}))
                    .collect();
                json!({"lcore": l, "rxqs": q})
            })
            .collect();
        return Ok(pretty(&json!({ "pmds": v })));
    }
    let mut s = String::new();
    for (l, qs) in &by_lcore {
        let _ = writeln!(s, "pmd thread lcore {l}:");
        for (p, q) in qs {
            let _ = writeln!(s, "  port: {p:<16} queue-id: {q:>2}");
        }
    }
    Ok(s)
}

fn sflow_show(c: &mut Call<'_, '_>) -> Outcome {
    let Some(spec) = &c.ctx.config().sflow else {
        if c.json {
            return Ok(pretty(&json!({ "enabled": false })));
        }
        return Ok("sFlow is not configured (add an [sflow] section to the config file)\n".into());
    };
    let agent = c.ctx.sflow().unwrap_or_default();
    let report = c.ctx.report();
    let rate = |name: &str| {
        c.ctx
            .config()
            .ports
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.sampling_rate)
            .unwrap_or(spec.sampling_rate)
    };
    if c.json {
        let ports: Vec<Value> = report
            .ports
            .iter()
            .map(|p| json!({"port": p.name, "sampling_rate": rate(&p.name), "samples_taken": p.samples_taken, "samples_lost": p.samples_lost}))
            .collect();
        let collectors: Vec<String> = spec.collectors.iter().map(|a| a.to_string()).collect();
        return Ok(pretty(&json!({
            "enabled": true, "agent_address": spec.agent_address.to_string(), "collectors": collectors,
            "sampling_rate": spec.sampling_rate, "polling_interval": spec.polling_interval,
            "header_bytes": spec.header_bytes, "max_datagram": spec.max_datagram,
            "agent": agent, "ports": ports,
        })));
    }
    let collectors: Vec<String> = spec.collectors.iter().map(|a| a.to_string()).collect();
    let mut s = format!(
        "sFlow agent {}\n  collectors: {}\n  sampling rate: 1-in-{}, polling interval: {} s, header bytes: {}, max datagram: {}\n  flow samples: {}, counter samples: {}, datagrams: {}, send errors: {}\n",
        spec.agent_address, collectors.join(", "), spec.sampling_rate, spec.polling_interval,
        spec.header_bytes, spec.max_datagram,
        agent.flow_samples, agent.counter_samples, agent.datagrams, agent.send_errors
    );
    for p in &report.ports {
        let _ = writeln!(
            s,
            "  port {}: 1-in-{}, samples taken {}, lost {}",
            p.name,
            rate(&p.name),
            p.samples_taken,
            p.samples_lost
        );
    }
    Ok(s)
}

fn config_show(c: &mut Call<'_, '_>) -> Outcome {
    let toml = c.ctx.rt.source.to_toml(&c.ctx.rt.config);
    if c.json {
        return Ok(pretty(&json!({ "toml": toml })));
    }
    Ok(toml)
}

fn coverage_show(c: &mut Call<'_, '_>) -> Outcome {
    let r = c.ctx.report();
    let t = r.totals();
    let events: Vec<(&str, u64)> = DropReason::ALL
        .iter()
        .map(|&d| (d.name(), t.drops(d)))
        .chain([
            ("fdb_learned", t.get(WorkerCounter::Learned)),
            ("fdb_moved", t.get(WorkerCounter::Moved)),
            ("fdb_aged", r.fdb.aged),
            ("fdb_full", t.get(WorkerCounter::FdbFull)),
            ("fdb_static_conflict", t.get(WorkerCounter::StaticConflict)),
        ])
        .collect();
    if c.json {
        let drops: BTreeMap<&str, u64> = DropReason::ALL
            .iter()
            .map(|&d| (d.name(), t.drops(d)))
            .collect();
        let all: BTreeMap<&str, u64> = events.iter().copied().collect();
        return Ok(pretty(&json!({ "drops": drops, "events": all })));
    }
    let mut s = String::from("Drops by reason and table events, since start:\n");
    for (name, n) in events {
        let _ = writeln!(s, "{name:<24} total: {n}");
    }
    Ok(s)
}

/// Splits `KEY=VALUE` arguments; a bare KEY is an error naming it.
fn key_values(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    args.iter()
        .map(|a| {
            a.split_once('=').map(|(k, v)| (k.trim(), v.trim())).ok_or_else(|| {
                format!("{a:?}: expected KEY=VALUE, e.g. vlan=10, trunks=[10,20], role=uplink (KEY= removes the key)")
            })
        })
        .collect()
}

/// Applies an edited copy of the running configuration's source: validated as a whole, then
/// applied while the workers forward; on an error the switch runs on as it was.
fn apply_source(
    c: &mut Call<'_, '_>,
    what: &str,
    edit: impl FnOnce(&mut crate::config::Source) -> Result<(), String>,
) -> Outcome {
    let mut source = c.ctx.rt.source.clone();
    edit(&mut source)?;
    source.origin = what.to_owned();
    let done = c.ctx.rt.apply(source).map_err(|e| match e {
        crate::runtime::ChangeError::Partly(..) => format!("partly applied: {e}"),
        e => format!("not applied, running as before: {e}"),
    })?;
    if c.json {
        return Ok(pretty(&json!({ "changed": done })));
    }
    Ok(done.join("\n") + "\n")
}

/// True when `arg` is a `KEY=VALUE` setting (`vlan=10`, `vhost_user.path=/x`), not DEVARGS
/// (`net_tap0,iface=vm1` has a comma before its first `=`; `net_null0` has none).
fn is_setting(arg: &str) -> bool {
    arg.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    })
}

fn port_add(c: &mut Call<'_, '_>) -> Outcome {
    let name = c.args[0].clone();
    // DEVARGS may be left out when the settings make the device (vhost_user.*).
    let (devargs, settings) = match c.args.get(1) {
        Some(a) if !is_setting(a) => (a.clone(), &c.args[2..]),
        _ => (String::new(), &c.args[1..]),
    };
    let kv: Vec<(String, String)> = key_values(settings)?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if c.ctx.ports().iter().any(|p| p.spec.name == name) {
        return Err(format!(
            "port {name:?} exists already; port/del it first, or port/set it"
        ));
    }
    apply_source(c, &format!("port/add {name}"), |s| {
        s.add_port(&name, &devargs);
        for (k, v) in &kv {
            s.set_port(&name, k, v);
        }
        Ok(())
    })
}

fn port_del(c: &mut Call<'_, '_>) -> Outcome {
    let name = c.args[0].clone();
    c.ctx.port(&name)?;
    apply_source(c, &format!("port/del {name}"), |s| {
        if s.remove_port(&name) {
            Ok(())
        } else {
            Err(format!("port {name:?} is not in the configuration"))
        }
    })
}

fn port_set(c: &mut Call<'_, '_>) -> Outcome {
    let name = c.args[0].clone();
    c.ctx.port(&name)?;
    let kv: Vec<(String, String)> = key_values(&c.args[1..])?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some((k, _)) = kv.iter().find(|(k, _)| k == "name") {
        return Err(format!("{k}: a port is renamed by port/del and port/add"));
    }
    let back = kv.iter().any(|(k, v)| k == "enabled" && v == "true")
        && c.ctx.rt.clear_bpdu_shutdown(&name);
    let out = apply_source(c, &format!("port/set {name}"), |s| {
        for (k, v) in &kv {
            s.set_port(&name, k, v);
        }
        Ok(())
    })?;
    if back && !c.json {
        return Ok(
            format!("port {name} is back from its BPDU-guard shutdown\n{out}")
                .replace("\nnothing changed\n", "\n"),
        );
    }
    Ok(out)
}

fn bridge_set(c: &mut Call<'_, '_>) -> Outcome {
    let kv: Vec<(String, String)> = key_values(c.args)?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    apply_source(c, "bridge/set", |s| {
        for (k, v) in &kv {
            s.set_in("bridge", k, v);
        }
        Ok(())
    })
}

fn sflow_set(c: &mut Call<'_, '_>) -> Outcome {
    let kv: Vec<(String, String)> = key_values(c.args)?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    apply_source(c, "sflow/set", |s| {
        for (k, v) in &kv {
            s.set_in("sflow", k, v);
        }
        Ok(())
    })
}

fn config_reload(c: &mut Call<'_, '_>) -> Outcome {
    let done = c.ctx.rt.reload().map_err(|e| match e {
        crate::runtime::ChangeError::Partly(..) => format!("configuration partly reloaded: {e}"),
        e => format!("configuration not reloaded, running as before: {e}"),
    })?;
    if c.json {
        return Ok(pretty(&json!({ "changed": done })));
    }
    Ok(done.join("\n") + "\n")
}

fn fdb_moves_show(c: &mut Call<'_, '_>) -> Outcome {
    let report = c.ctx.report();
    if c.json {
        return Ok(pretty(&json!({
            "moves": report.fdb.recent_moves,
            "held": report.fdb.held,
            "moved": report.fdb.moved,
            "flap_holds": report.fdb.flap_holds,
            "per_port": report.ports.iter().map(|p| json!({"port": p.name, "mac_moves_in": p.mac_moves_in})).collect::<Vec<_>>(),
        })));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} moves in all, {} addresses held for flapping",
        report.fdb.moved, report.fdb.flap_holds
    );
    for p in &report.ports {
        let _ = writeln!(out, "  {:<12} moves in {}", p.name, p.mac_moves_in);
    }
    let _ = writeln!(
        out,
        " MAC                VLAN  from         to           when (unix)"
    );
    for m in &report.fdb.recent_moves {
        let _ = writeln!(
            out,
            " {:<18} {:>4}  {:<12} {:<12} {:.3}",
            m.mac, m.vlan, m.from, m.to, m.at_unix
        );
    }
    for h in &report.fdb.held {
        let _ = writeln!(
            out,
            " held: {} VLAN {} on {} for {} s more",
            h.mac,
            h.vlan,
            c.ctx.port_name(h.port_id),
            h.secs_left
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::is_setting;

    #[test]
    fn settings_are_told_from_devargs() {
        for a in [
            "vlan=10",
            "vhost_user.path=/run/vm1.sock",
            "trunks=[10,20]",
            "vlan=",
        ] {
            assert!(is_setting(a), "{a}");
        }
        for a in ["net_tap0,iface=vm1", "net_null0", "0000:3b:02.0", "=x"] {
            assert!(!is_setting(a), "{a}");
        }
    }
}
