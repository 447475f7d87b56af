//! Prometheus metrics: `GET /metrics` in the text exposition format 0.0.4, rendered at scrape
//! time from the workers' published counters (summed then, never updated per packet in a
//! shared place), the MAC table, the ports, the sFlow agent and the mbuf pool. Served by the
//! control socket's server on the control thread, non-blocking.

use std::fmt::Write as _;

use dataplane::dpdk::tsc_hz;

use crate::ctl::Context;
use crate::report::WorkerReport;

/// Largest HTTP request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// What the bytes of an HTTP request hold so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not a whole head yet.
    NeedMore,
    /// A request line read.
    Request {
        /// GET, HEAD...
        method: String,
        /// The path, without a query string.
        path: String,
    },
    /// Not HTTP, or too large: answer with this status and close.
    Bad(u16),
}

/// Reads an HTTP/1.x request head.
pub fn parse_http_head(buf: &[u8]) -> Head {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Head::Bad(431)
        } else {
            Head::NeedMore
        };
    };
    if end > MAX_HEAD {
        return Head::Bad(431);
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Head::Bad(400);
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(target), Some(v), None) if v.starts_with("HTTP/1.") && !m.is_empty() => {
            let path = target.split('?').next().unwrap_or(target);
            Head::Request {
                method: m.to_owned(),
                path: path.to_owned(),
            }
        }
        _ => Head::Bad(400),
    }
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body);
    }
    r
}

/// The response to a request that could not be read.
pub fn error_response(status: u16) -> Vec<u8> {
    let reason = match status {
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        format!("{reason}\n").as_bytes(),
        false,
    )
}

/// The response to `method path`.
pub fn respond(method: &str, path: &str, ctx: &Context<'_>) -> Vec<u8> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET /metrics\n",
            false,
        );
    }
    if path != "/metrics" {
        return response(
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            b"not found: the metrics are at /metrics\n",
            head_only,
        );
    }
    let body = render(ctx);
    response(
        200,
        "OK",
        "text/plain; version=0.0.4; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

/// A metric family being written: HELP and TYPE once, then its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric, as of now.
pub fn render(ctx: &Context<'_>) -> String {
    let r = ctx.report();
    let mut o = Out(String::with_capacity(8192));
    type PortField = fn(&crate::report::PortReport) -> u64;
    let port_counters: [(&str, &str, PortField); 17] = [
        (
            "rx_packets_total",
            "Frames the switch received on the port.",
            |p| p.rx_packets,
        ),
        (
            "rx_bytes_total",
            "Bytes the switch received on the port.",
            |p| p.rx_bytes,
        ),
        (
            "rx_dropped_total",
            "Frames received on the port that the switch dropped (see pmdswitch_drops_total).",
            |p| p.rx_dropped,
        ),
        (
            "rx_missed_total",
            "Frames the device dropped before the switch saw them (no rx descriptor free).",
            |p| p.rx_missed,
        ),
        (
            "rx_errors_total",
            "Frames the device received in error and dropped (rte_eth_stats ierrors), such as frames larger than its receive buffers.",
            |p| p.rx_errors,
        ),
        (
            "rx_nombuf_total",
            "Frames the device dropped for want of an mbuf to receive into.",
            |p| p.rx_nombuf,
        ),
        (
            "tx_errors_total",
            "Frames the device failed to send (rte_eth_stats oerrors).",
            |p| p.tx_errors,
        ),
        ("tx_packets_total", "Frames sent on the port.", |p| {
            p.tx_packets
        }),
        (
            "tx_bytes_total",
            "Bytes the device sent on the port.",
            |p| p.device.obytes,
        ),
        (
            "tx_dropped_total",
            "Frames for the port that its tx queue refused.",
            |p| p.tx_dropped,
        ),
        (
            "rx_unicast_total",
            "Frames received on the port and forwarded to an individual address (ifInUcastPkts).",
            |p| p.rx_unicast,
        ),
        (
            "rx_multicast_total",
            "Frames received on the port and forwarded to a multicast group (ifInMulticastPkts).",
            |p| p.rx_multicast,
        ),
        (
            "rx_broadcast_total",
            "Frames received on the port and forwarded to the broadcast address (ifInBroadcastPkts).",
            |p| p.rx_broadcast,
        ),
        (
            "tx_unicast_total",
            "Frames to an individual address given the port to send, sent or dropped (ifOutUcastPkts).",
            |p| p.tx_unicast,
        ),
        (
            "tx_multicast_total",
            "Frames to a multicast group given the port to send, sent or dropped (ifOutMulticastPkts).",
            |p| p.tx_multicast,
        ),
        (
            "tx_broadcast_total",
            "Frames to the broadcast address given the port to send, sent or dropped (ifOutBroadcastPkts).",
            |p| p.tx_broadcast,
        ),
        (
            "sflow_samples_taken_total",
            "Frames received on the port that the sFlow sampler took.",
            |p| p.samples_taken,
        ),
    ];
    for (suffix, help, get) in port_counters {
        let name = format!("pmdswitch_port_{suffix}");
        o.family(&name, "counter", help);
        for p in &r.ports {
            o.sample(&name, &[("port", &p.name)], get(p));
        }
    }
    type VlanGet = fn(&crate::report::VlanReport) -> u64;
    let vlan_counters: [(&str, &str, VlanGet); 5] = [
        (
            "octets_total",
            "Bytes of the frames the bridge forwarded in the VLAN.",
            |v| v.octets,
        ),
        (
            "unicast_total",
            "Frames forwarded in the VLAN to an individual address.",
            |v| v.unicast,
        ),
        (
            "multicast_total",
            "Frames forwarded in the VLAN to a multicast group.",
            |v| v.multicast,
        ),
        (
            "broadcast_total",
            "Frames forwarded in the VLAN to the broadcast address.",
            |v| v.broadcast,
        ),
        (
            "discards_total",
            "Frames admitted into the VLAN and dropped.",
            |v| v.discards,
        ),
    ];
    for (suffix, help, get) in vlan_counters {
        let name = format!("pmdswitch_vlan_{suffix}");
        o.family(&name, "counter", help);
        for (vlan, v) in &r.vlans {
            o.sample(&name, &[("vlan", &vlan.to_string())], get(v));
        }
    }
    o.family(
        "pmdswitch_port_sflow_samples_lost_total",
        "counter",
        "sFlow samples of the port lost to a full sample ring.",
    );
    for p in &r.ports {
        o.sample(
            "pmdswitch_port_sflow_samples_lost_total",
            &[("port", &p.name)],
            p.samples_lost,
        );
    }
    o.family(
        "pmdswitch_port_device_xstat_total",
        "counter",
        "The driver's extended counters (rte_eth_xstats_get), by port and name.",
    );
    for p in &r.ports {
        for (name, v) in &p.xstats {
            o.sample(
                "pmdswitch_port_device_xstat_total",
                &[("port", &p.name), ("xstat", name)],
                v,
            );
        }
    }
    o.family(
        "pmdswitch_port_link_up",
        "gauge",
        "1 when the port's link is up.",
    );
    for sp in ctx.ports() {
        o.sample(
            "pmdswitch_port_link_up",
            &[("port", &sp.spec.name)],
            u8::from(sp.port.link().up),
        );
    }

    o.family(
        "pmdswitch_drops_total",
        "counter",
        "Frames dropped by the switch, by reason.",
    );
    for (reason, n) in &r.drops {
        o.sample("pmdswitch_drops_total", &[("reason", reason)], n);
    }

    type WorkerField = fn(&WorkerReport) -> f64;
    let worker_metrics: [(&str, &str, &str, WorkerField); 9] = [
        (
            "packets_total",
            "counter",
            "Frames received by the worker, all its queues.",
            |w| w.packets as f64,
        ),
        (
            "flow_cache_hits_total",
            "counter",
            "Frames the worker sent by a decision held in its flow cache.",
            |w| w.flow_cache_hits as f64,
        ),
        (
            "fdb_lookups_total",
            "counter",
            "MAC-table lookups of the worker's full path (source learning, destination lookup).",
            |w| w.fdb_lookups as f64,
        ),
        (
            "fdb_line_reads_total",
            "counter",
            "MAC-table cache lines read by those lookups: one each for keys in their first line.",
            |w| w.fdb_line_reads as f64,
        ),
        (
            "bursts_total",
            "counter",
            "Non-empty rx bursts of the worker.",
            |w| w.bursts as f64,
        ),
        (
            "busy_cycles_total",
            "counter",
            "TSC cycles in iterations that received frames.",
            |w| w.busy_cycles as f64,
        ),
        (
            "idle_cycles_total",
            "counter",
            "TSC cycles in iterations that received nothing.",
            |w| w.idle_cycles as f64,
        ),
        (
            "cycles_per_packet",
            "gauge",
            "Busy TSC cycles per received frame, since start.",
            |w| w.cycles_per_packet,
        ),
        (
            "busy_ratio",
            "gauge",
            "Share of the worker's cycles spent on frames, 0 to 1, since start.",
            WorkerReport::busy_ratio,
        ),
    ];
    for (suffix, kind, help, get) in worker_metrics {
        let name = format!("pmdswitch_worker_{suffix}");
        o.family(&name, kind, help);
        for w in &r.workers {
            o.sample(&name, &[("lcore", &w.lcore.to_string())], get(w));
        }
    }
    o.family(
        "pmdswitch_worker_cycles_per_burst",
        "gauge",
        "Percentiles of TSC cycles spent on one rx burst, since start (100: the largest).",
    );
    for w in &r.workers {
        let l = w.lcore.to_string();
        let q = &w.cycles_per_burst;
        for (pct, v) in [
            ("50", q.p50),
            ("99", q.p99),
            ("99.9", q.p999),
            ("100", q.max),
        ] {
            o.sample(
                "pmdswitch_worker_cycles_per_burst",
                &[("lcore", &l), ("percentile", pct)],
                v,
            );
        }
    }

    let f = &r.fdb;
    o.single(
        "pmdswitch_fdb_entries",
        "gauge",
        "Entries in the MAC table.",
        f.entries,
    );
    o.single(
        "pmdswitch_fdb_capacity",
        "gauge",
        "Most entries the MAC table holds.",
        f.capacity,
    );
    o.single(
        "pmdswitch_fdb_learned_total",
        "counter",
        "Addresses learned.",
        f.learned,
    );
    o.single(
        "pmdswitch_fdb_moved_total",
        "counter",
        "Addresses that moved to another port.",
        f.moved,
    );
    o.single(
        "pmdswitch_fdb_aged_total",
        "counter",
        "Entries aged out.",
        f.aged,
    );
    o.single(
        "pmdswitch_fdb_full_total",
        "counter",
        "Source addresses not learned because the table was full.",
        f.full,
    );
    o.single(
        "pmdswitch_fdb_static_conflicts_total",
        "counter",
        "Sources that contradicted a static entry.",
        f.static_conflicts,
    );

    let s = r.sflow.unwrap_or_default();
    let (taken, lost) = r.ports.iter().fold((0, 0), |(a, b), p| {
        (a + p.samples_taken, b + p.samples_lost)
    });
    o.single(
        "pmdswitch_sflow_samples_taken_total",
        "counter",
        "Frames the sFlow samplers took, all ports.",
        taken,
    );
    o.single(
        "pmdswitch_sflow_samples_lost_total",
        "counter",
        "sFlow samples lost to a full sample ring, all ports.",
        lost,
    );
    o.single(
        "pmdswitch_sflow_flow_samples_sent_total",
        "counter",
        "sFlow flow samples exported.",
        s.flow_samples,
    );
    o.single(
        "pmdswitch_sflow_interface_samples_sent_total",
        "counter",
        "sFlow counter samples (interface counters) exported.",
        s.counter_samples,
    );
    o.single(
        "pmdswitch_sflow_datagrams_total",
        "counter",
        "sFlow datagrams sent (once per collector).",
        s.datagrams,
    );
    o.single(
        "pmdswitch_sflow_send_errors_total",
        "counter",
        "sFlow datagram sends that failed.",
        s.send_errors,
    );

    o.single(
        "pmdswitch_mempool_in_use",
        "gauge",
        "Mbufs of the pool in use (rx rings, caches, frames in flight).",
        ctx.pool().in_use(),
    );
    o.single(
        "pmdswitch_mempool_size",
        "gauge",
        "Mbufs in the pool.",
        r.mempool.size,
    );
    o.single(
        "pmdswitch_uptime_seconds",
        "gauge",
        "Seconds since the workers started.",
        format!("{:.3}", r.elapsed_secs),
    );
    o.single(
        "pmdswitch_tsc_hz",
        "gauge",
        "TSC frequency: cycles per second.",
        tsc_hz(),
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_heads() {
        assert_eq!(
            parse_http_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Request {
                method: "GET".into(),
                path: "/metrics".into()
            }
        );
        assert_eq!(
            parse_http_head(b"GET /metrics HTTP/1.1\r\nHost"),
            Head::NeedMore
        );
        assert_eq!(parse_http_head(b"garbage\r\n\r\n"), Head::Bad(400));
        assert_eq!(parse_http_head(&vec![b'a'; MAX_HEAD + 1]), Head::Bad(431));
        assert_eq!(
            parse_http_head(b"\xff\xff / HTTP/1.1\r\n\r\n"),
            Head::Bad(400)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
