//! The sFlow agent on the control thread: turns the workers' sample records into flow samples
//! and their drop records into dropped-packet notifications (rate-limited), polls port and
//! VLAN counters into counter samples, packs them into datagrams and sends them by UDP to
//! every collector. A collector that is down changes nothing here but a counter.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::dpdk::{Link, MAX_PORTS};
use dataplane::sample::{DropRecord, SampleRecord, SampledOutput, NO_PORT};
use dataplane::stats::{Counters, PortCounter, VlanCounter, VlanCounts};

use super::encode::{
    CounterSample, Datagram, DropNotification, EthernetCounters, FlowSample, GenericIfCounters,
    Output, Sample, VlanCounterSample, SOURCE_IFINDEX, UNKNOWN32,
};
use crate::config::SflowSpec;
use crate::port::IfCounters;

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
    /// Its name in the configuration (sent in the port name record).
    pub name: String,
}

#[derive(Debug, Default, Clone)]
struct PortState {
    if_index: u32,
    sampling_rate: u32,
    name: String,
    flow_sequence: u32,
    counter_sequence: u32,
    drop_sequence: u32,
    next_poll: Option<Instant>,
    /// Latest sample pool reported by each worker's sampler for this port.
    pool_by_worker: Vec<u64>,
}

/// A VLAN's counter polling.
#[derive(Debug, Clone, Copy)]
struct VlanState {
    sequence: u32,
    next_poll: Instant,
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
    /// Dropped-packet notifications exported.
    pub drop_notifications: u64,
    /// Drop records the workers offered that the rate limit held back.
    pub drop_notifications_limited: u64,
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
    vlans: BTreeMap<u16, VlanState>,
    /// The drop-notification budget's current second, and what is left of it.
    drop_window: Instant,
    drop_budget_left: u32,
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
                name: p.name.clone(),
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
            drop_budget_left: spec.drop_notifications,
            spec,
            ports: states,
            started: now,
            datagram_sequence: 0,
            pending: None,
            stats: AgentStats::default(),
            vlans: BTreeMap::new(),
            drop_window: now,
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
                new.drop_sequence = old.drop_sequence;
                new.pool_by_worker = old.pool_by_worker.clone();
            }
        }
        next.started = self.started;
        next.datagram_sequence = self.datagram_sequence;
        next.stats = self.stats;
        next.vlans = std::mem::take(&mut self.vlans);
        next.drop_window = self.drop_window;
        next.drop_budget_left = self.drop_budget_left.min(next.spec.drop_notifications);
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

    /// Turns drop records into dropped-packet notifications, at most `drop_notifications` a
    /// second; the rest are counted. `dropped` is every frame the switch has dropped so far
    /// (all reasons): what was not reported of it goes in each notification's `drops`.
    pub fn on_drops(&mut self, records: &[DropRecord], dropped: u64) {
        for r in records {
            if self.drop_window.elapsed() >= Duration::from_secs(1) {
                self.drop_window = Instant::now();
                self.drop_budget_left = self.spec.drop_notifications;
            }
            if self.drop_budget_left == 0 {
                self.stats.drop_notifications_limited += 1;
                continue;
            }
            let Some(reason) = r.reason() else {
                continue;
            };
            let input = self.if_index(r.input).unwrap_or(0);
            let output = self.if_index(r.output).unwrap_or(0);
            // The port that saw the drop: where it came in, else where it was to leave.
            let source = if r.input != NO_PORT {
                r.input
            } else {
                r.output
            };
            let Some(state) = self
                .ports
                .get_mut(usize::from(source))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            self.drop_budget_left -= 1;
            state.drop_sequence = state.drop_sequence.wrapping_add(1);
            let n = DropNotification {
                sequence: state.drop_sequence,
                source_class: SOURCE_IFINDEX,
                source_index: state.if_index,
                // This one is reported too: counted in `dropped` but not yet in the stats.
                drops: dropped.saturating_sub(self.stats.drop_notifications + 1) as u32,
                input,
                output,
                reason: u32::from(reason.sflow_code()),
                // DPDK frames carry no FCS; the wire had 4 more bytes.
                frame_length: r.frame_len + 4,
                stripped: 4,
                header: r.header(),
            };
            self.add(&Sample::Drop(n));
            self.stats.drop_notifications += 1;
        }
    }

    /// Time-driven work: counter samples of ports and VLANs that are due, and a datagram that
    /// has waited long enough. `port_info` gives a port's interface counters and link by port
    /// id; `vlans` every VLAN's counts.
    pub fn tick(
        &mut self,
        vlans: &VlanCounts,
        port_info: impl Fn(u16) -> Option<(IfCounters, Link)>,
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
                let Some((counters, link)) = port_info(port_id) else {
                    continue;
                };
                let Some(state) = self.ports[id].as_mut() else {
                    continue;
                };
                state.next_poll = state.next_poll.map(|t| t + every);
                state.counter_sequence = state.counter_sequence.wrapping_add(1);
                let (sequence, if_index) = (state.counter_sequence, state.if_index);
                let name = std::mem::take(&mut state.name);
                let sample = counter_sample(sequence, if_index, &counters, link, &name);
                self.add(&Sample::Counters(sample));
                if let Some(state) = self.ports[id].as_mut() {
                    state.name = name;
                }
                self.stats.counter_samples += 1;
            }
            self.poll_vlans(vlans, now, every);
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() >= MAX_DATAGRAM_AGE)
        {
            self.flush();
        }
    }

    /// VLAN counter samples that are due; a VLAN seen for the first time is polled within an
    /// interval, at a point of its own.
    fn poll_vlans(&mut self, vlans: &VlanCounts, now: Instant, every: Duration) {
        for (&vlan, counts) in &vlans.0 {
            if !(1..=4094).contains(&vlan) {
                continue;
            }
            let state = self.vlans.entry(vlan).or_insert_with(|| VlanState {
                sequence: 0,
                next_poll: now + every * (u32::from(vlan) % 16 + 1) / 16,
            });
            if state.next_poll > now {
                continue;
            }
            state.next_poll += every;
            state.sequence = state.sequence.wrapping_add(1);
            let get = |c: VlanCounter| counts[c as usize];
            let sample = VlanCounterSample {
                sequence: state.sequence,
                vlan: u32::from(vlan),
                octets: get(VlanCounter::Octets),
                ucast: get(VlanCounter::Unicast) as u32,
                multicast: get(VlanCounter::Multicast) as u32,
                broadcast: get(VlanCounter::Broadcast) as u32,
                discards: get(VlanCounter::Discards) as u32,
            };
            self.add(&Sample::Vlan(sample));
            self.stats.counter_samples += 1;
        }
    }
}

fn counter_sample<'a>(
    sequence: u32,
    if_index: u32,
    c: &IfCounters,
    link: Link,
    name: &'a str,
) -> CounterSample<'a> {
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
            in_octets: c.in_octets,
            // 32-bit counters wrap, as SNMP's Counter32 does.
            in_ucast: c.in_ucast as u32,
            in_multicast: c.in_multicast as u32,
            in_broadcast: c.in_broadcast as u32,
            in_discards: c.in_discards as u32,
            in_errors: c.in_errors as u32,
            // A switch forwards every protocol: none is unknown to it, but it does not count.
            in_unknown_protos: UNKNOWN32,
            out_octets: c.out_octets,
            out_ucast: c.out_ucast as u32,
            out_multicast: c.out_multicast as u32,
            out_broadcast: c.out_broadcast as u32,
            out_discards: c.out_discards as u32,
            out_errors: c.out_errors as u32,
            promiscuous: 1,
        },
        ethernet: EthernetCounters::unknown(),
        name: (!name.is_empty()).then_some(name),
    }
}
