//! The sFlow agent on the control thread: turns the workers' sample records into flow samples,
//! polls port counters into counter samples, packs both into datagrams and sends them by UDP
//! to every collector. A collector that is down changes nothing here but a counter.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::dpdk::{Link, PortStats, MAX_PORTS};
use dataplane::sample::{SampleRecord, SampledOutput};
use dataplane::stats::{Counters, PortCounter};

use super::encode::{
    CounterSample, Datagram, EthernetCounters, FlowSample, GenericIfCounters, Output, Sample,
    UNKNOWN32,
};
use crate::config::SflowSpec;

/// IEEE 802.1Q's default port VLAN: what an untagged frame on a VLAN-unaware port belongs to.
const DEFAULT_VLAN: u32 = 1;
/// A datagram waits at most this long for more samples.
const MAX_DATAGRAM_AGE: Duration = Duration::from_secs(1);

/// What the agent knows of one port.
#[derive(Debug, Clone)]
pub struct AgentPort {
    /// DPDK port id.
    pub port_id: u16,
    /// sFlow interface index.
    pub if_index: u32,
    /// 1-in-N sampling rate (0: not sampled).
    pub sampling_rate: u32,
}

#[derive(Debug, Default, Clone)]
struct PortState {
    if_index: u32,
    sampling_rate: u32,
    flow_sequence: u32,
    counter_sequence: u32,
    next_poll: Option<Instant>,
    /// Latest sample pool reported by each worker's sampler for this port.
    pool_by_worker: Vec<u64>,
}

/// Counts of what the agent did, for stats.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct AgentStats {
    /// Flow samples exported.
    pub flow_samples: u64,
    /// Counter samples exported.
    pub counter_samples: u64,
    /// Datagrams sent (to each collector once).
    pub datagrams: u64,
    /// Sends that failed (collector unreachable, no route...).
    pub send_errors: u64,
}

/// The agent.
pub struct Agent {
    spec: SflowSpec,
    ports: Vec<Option<PortState>>,
    socket_v4: Option<UdpSocket>,
    socket_v6: Option<UdpSocket>,
    started: Instant,
    datagram_sequence: u32,
    pending: Option<(Datagram, Instant)>,
    stats: AgentStats,
}

impl Agent {
    /// An agent for these ports and `workers` sampling workers. Opens its UDP sockets.
    pub fn new(spec: SflowSpec, ports: &[AgentPort], workers: usize) -> std::io::Result<Agent> {
        let mut states: Vec<Option<PortState>> = vec![None; MAX_PORTS];
        let now = Instant::now();
        let n = ports.len().max(1) as u32;
        for (i, p) in ports.iter().enumerate() {
            // Counter polls are spread over the interval rather than all at once.
            let first = (spec.polling_interval > 0).then(|| {
                now + Duration::from_secs(u64::from(spec.polling_interval)) * (i as u32 + 1) / n
            });
            states[usize::from(p.port_id)] = Some(PortState {
                if_index: p.if_index,
                sampling_rate: p.sampling_rate,
                next_poll: first,
                pool_by_worker: vec![0; workers],
                ..PortState::default()
            });
        }
        let wants_v4 = spec.collectors.iter().any(SocketAddr::is_ipv4);
        let wants_v6 = spec.collectors.iter().any(SocketAddr::is_ipv6);
        let open = |bind: &str| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind(bind)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        Ok(Agent {
            socket_v4: if wants_v4 {
                Some(open("0.0.0.0:0")?)
            } else {
                None
            },
            socket_v6: if wants_v6 {
                Some(open("[::]:0")?)
            } else {
                None
            },
            spec,
            ports: states,
            started: now,
            datagram_sequence: 0,
            pending: None,
            stats: AgentStats::default(),
        })
    }

    /// Applies new settings and ports while running. Ports kept keep their sequence numbers
    /// and sample pools; new ones start afresh; the datagram sequence and uptime go on, so a
    /// collector sees one agent throughout.
    pub fn reconfigure(
        &mut self,
        spec: SflowSpec,
        ports: &[AgentPort],
        workers: usize,
    ) -> std::io::Result<()> {
        self.flush();
        let mut next = Agent::new(spec, ports, workers)?;
        for (id, slot) in next.ports.iter_mut().enumerate() {
            if let (Some(new), Some(Some(old))) = (slot.as_mut(), self.ports.get(id)) {
                new.flow_sequence = old.flow_sequence;
                new.counter_sequence = old.counter_sequence;
                new.pool_by_worker = old.pool_by_worker.clone();
            }
        }
        next.started = self.started;
        next.datagram_sequence = self.datagram_sequence;
        next.stats = self.stats;
        *self = next;
        Ok(())
    }

    /// What the agent did so far.
    pub fn stats(&self) -> AgentStats {
        self.stats
    }

    fn uptime_ms(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    fn if_index(&self, port: u16) -> Option<u32> {
        self.ports
            .get(usize::from(port))?
            .as_ref()
            .map(|p| p.if_index)
    }

    /// Adds one sample to the pending datagram, sending it first if the sample does not fit.
    fn add(&mut self, sample: &Sample<'_>) {
        for _ in 0..2 {
            if self.pending.is_none() {
                self.datagram_sequence = self.datagram_sequence.wrapping_add(1);
                let d = Datagram::new(
                    self.spec.agent_address,
                    0,
                    self.datagram_sequence,
                    self.uptime_ms(),
                    self.spec.max_datagram as usize,
                );
                self.pending = Some((d, Instant::now()));
            }
            if let Some((d, _)) = self.pending.as_mut() {
                if d.push(sample) {
                    return;
                }
                if d.is_empty() {
                    // Larger than an empty datagram: cannot be sent at this size.
                    return;
                }
            }
            self.flush();
        }
    }

    /// Sends the pending datagram, if any, to every collector.
    pub fn flush(&mut self) {
        let Some((d, _)) = self.pending.take() else {
            return;
        };
        if d.is_empty() {
            return;
        }
        let bytes = d.finish();
        for c in &self.spec.collectors {
            let socket = if c.is_ipv4() {
                &self.socket_v4
            } else {
                &self.socket_v6
            };
            match socket.as_ref().map(|s| s.send_to(&bytes, c)) {
                Some(Ok(_)) => self.stats.datagrams += 1,
                _ => self.stats.send_errors += 1,
            }
        }
    }

    /// Turns sample records taken by `worker` into flow samples. `totals` are the workers'
    /// summed counters (for the `drops` of each source).
    pub fn on_samples(&mut self, worker: usize, records: &[SampleRecord], totals: &Counters) {
        for r in records {
            let input = r.input;
            let Some(state) = self
                .ports
                .get_mut(usize::from(input))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            if let Some(slot) = state.pool_by_worker.get_mut(worker) {
                *slot = r.pool;
            }
            state.flow_sequence = state.flow_sequence.wrapping_add(1);
            let sequence = state.flow_sequence;
            let source_index = state.if_index;
            let sampling_rate = state.sampling_rate;
            let sample_pool = state.pool_by_worker.iter().sum::<u64>() as u32;
            let output = match r.output() {
                SampledOutput::Port(p) => {
                    self.if_index(p).map_or(Output::Multiple(0), Output::Port)
                }
                SampledOutput::Flood(n) => Output::Multiple(u32::from(n)),
                SampledOutput::Dropped(reason) => Output::Discarded(u32::from(reason)),
            };
            let vlan = if r.vlan == 0 {
                DEFAULT_VLAN
            } else {
                u32::from(r.vlan)
            };
            let flow = FlowSample {
                sequence,
                source_index,
                sampling_rate,
                sample_pool,
                drops: totals.port(usize::from(input), PortCounter::SamplesLost) as u32,
                input: source_index,
                output,
                // DPDK frames carry no FCS; the wire had 4 more bytes.
                frame_length: r.frame_len + 4,
                stripped: 4,
                header: r.header(),
                src_vlan: vlan,
                src_priority: u32::from(r.priority),
                dst_vlan: vlan,
                dst_priority: u32::from(r.priority),
            };
            self.add(&Sample::Flow(flow));
            self.stats.flow_samples += 1;
        }
    }

    /// Time-driven work: counter samples that are due, and a datagram that has waited long
    /// enough. `port_info` gives a port's device counters and link by port id.
    pub fn tick(
        &mut self,
        totals: &Counters,
        port_info: impl Fn(u16) -> Option<(PortStats, Link)>,
    ) {
        let now = Instant::now();
        if self.spec.polling_interval > 0 {
            let every = Duration::from_secs(u64::from(self.spec.polling_interval));
            for id in 0..self.ports.len() {
                let due =
                    matches!(&self.ports[id], Some(s) if s.next_poll.is_some_and(|t| t <= now));
                if !due {
                    continue;
                }
                let port_id = id as u16;
                let Some((dev, link)) = port_info(port_id) else {
                    continue;
                };
                let Some(state) = self.ports[id].as_mut() else {
                    continue;
                };
                state.next_poll = state.next_poll.map(|t| t + every);
                state.counter_sequence = state.counter_sequence.wrapping_add(1);
                let sample = counter_sample(
                    state.counter_sequence,
                    state.if_index,
                    &dev,
                    link,
                    totals,
                    id,
                );
                self.add(&Sample::Counters(sample));
                self.stats.counter_samples += 1;
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() >= MAX_DATAGRAM_AGE)
        {
            self.flush();
        }
    }
}

fn counter_sample(
    sequence: u32,
    if_index: u32,
    dev: &PortStats,
    link: Link,
    totals: &Counters,
    port: usize,
) -> CounterSample {
    let up = u32::from(link.up);
    CounterSample {
        sequence,
        source_index: if_index,
        generic: GenericIfCounters {
            if_index,
            if_type: 6, // ethernetCsmacd
            if_speed: u64::from(link.speed_mbps) * 1_000_000,
            if_direction: if link.full_duplex { 1 } else { 2 },
            // bit 0 admin up (a started port is), bit 1 operational (the link).
            if_status: 1 | (up << 1),
            in_octets: dev.ibytes,
            // The switch does not split received frames by cast: unknown, not a guess.
            in_ucast: UNKNOWN32,
            in_multicast: UNKNOWN32,
            in_broadcast: UNKNOWN32,
            // Frames dropped with no error: the device's for want of a descriptor or an
            // mbuf, and the switch's own by every reason.
            in_discards: (dev.imissed + dev.rx_nombuf + totals.port(port, PortCounter::RxDropped))
                as u32,
            in_errors: dev.ierrors as u32,
            in_unknown_protos: UNKNOWN32,
            out_octets: dev.obytes,
            out_ucast: UNKNOWN32,
            out_multicast: UNKNOWN32,
            out_broadcast: UNKNOWN32,
            out_discards: totals.port(port, PortCounter::TxDropped) as u32,
            out_errors: dev.oerrors as u32,
            promiscuous: 1,
        },
        ethernet: EthernetCounters::unknown(),
    }
}
