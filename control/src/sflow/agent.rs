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
    /// Datagrams being filled, and since when: flow and counter samples in one, dropped-packet
    /// notifications in the other (a collector that predates them, such as pmacct's, drops
    /// the rest of a datagram at a sample format it does not know).
    pending: [Option<(Datagram, Instant)>; 2],
    stats: AgentStats,
    vlans: BTreeMap<u16, VlanState>,
    /// The drop-notification budget's current second, and what is left of it.
    drop_window: Instant,
    drop_budget_left: u32,
    /// Per worker, the drops it did not offer, as its latest record said.
    unreported_by_worker: Vec<u64>,
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
            pending: [None, None],
            stats: AgentStats::default(),
            vlans: BTreeMap::new(),
            drop_window: now,
            unreported_by_worker: vec![0; workers],
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
        next.unreported_by_worker = std::mem::take(&mut self.unreported_by_worker);
        next.unreported_by_worker.resize(workers, 0);
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

    /// Adds one sample to its pending datagram, sending that first if the sample does not fit.
    fn add(&mut self, sample: &Sample<'_>) {
        let slot = usize::from(matches!(sample, Sample::Drop(_)));
        for _ in 0..2 {
            if self.pending[slot].is_none() {
                self.datagram_sequence = self.datagram_sequence.wrapping_add(1);
                let d = Datagram::new(
                    self.spec.agent_address,
                    0,
                    self.datagram_sequence,
                    self.uptime_ms(),
                    self.spec.max_datagram as usize,
                );
                self.pending[slot] = Some((d, Instant::now()));
            }
            if let Some((d, _)) = self.pending[slot].as_mut() {
                if d.push(sample) {
                    return;
                }
                if d.is_empty() {
                    // Larger than an empty datagram: cannot be sent at this size.
                    return;
                }
            }
            self.send(slot);
        }
    }

    /// Sends the pending datagrams, if any, to every collector.
    pub fn flush(&mut self) {
        self.send(0);
        self.send(1);
    }

    /// Sends pending datagram `slot`, if any, to every collector.
    fn send(&mut self, slot: usize) {
        let Some((d, _)) = self.pending[slot].take() else {
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
            // A sampler's pool only grows: a record never takes it back.
            if let Some(slot) = state.pool_by_worker.get_mut(worker) {
                *slot = (*slot).max(r.pool);
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

    /// Turns drop records from `worker` into dropped-packet notifications, at most
    /// `drop_notifications` a second; the rest are counted. Each notification's `drops` is
    /// every drop not reported before it: those the workers did not offer (their records
    /// say how many) and those held back here.
    pub fn on_drops(&mut self, worker: usize, records: &[DropRecord]) {
        for r in records {
            if let Some(u) = self.unreported_by_worker.get_mut(worker) {
                *u = (*u).max(r.unreported);
            }
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
                // Cumulative, wrapping as sFlow's 32-bit counters do.
                drops: (self.unreported_by_worker.iter().sum::<u64>()
                    + self.stats.drop_notifications_limited) as u32,
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
        for slot in 0..2 {
            if self.pending[slot]
                .as_ref()
                .is_some_and(|(_, t)| t.elapsed() >= MAX_DATAGRAM_AGE)
            {
                self.send(slot);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::forward::DropReason;
    use pmdswitch_tests::sflow::{decode, Decoded};

    fn spec(collector: SocketAddr, budget: u32) -> SflowSpec {
        SflowSpec {
            collectors: vec![collector],
            agent_address: "192.0.2.1".parse().unwrap(),
            sampling_rate: 0,
            polling_interval: 0,
            header_bytes: 128,
            max_datagram: 1400,
            drop_notifications: budget,
        }
    }

    fn port(port_id: u16, if_index: u32) -> AgentPort {
        AgentPort {
            port_id,
            if_index,
            sampling_rate: 0,
            name: format!("p{port_id}"),
        }
    }

    /// A collector socket on loopback that gives up reading after 100 ms of silence.
    fn listener() -> UdpSocket {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        sock
    }

    /// Every datagram the socket has: decoded strictly, and as bytes.
    fn received(sock: &UdpSocket) -> (Decoded, Vec<Vec<u8>>) {
        let mut d = Decoded::default();
        let mut all = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            decode(&buf[..n], &mut d);
            all.push(buf[..n].to_vec());
        }
        (d, all)
    }

    #[test]
    fn drop_notifications_are_rate_limited_and_the_rest_counted() {
        let sock = listener();
        let mut agent = Agent::new(
            spec(sock.local_addr().unwrap(), 100),
            &[port(0, 7), port(1, 8)],
            1,
        )
        .unwrap();
        let frame: Vec<u8> = (0..200u8).collect();
        let mut same = DropRecord::new(&frame[..128], 200, 0, NO_PORT, DropReason::SameSegment);
        let mut full = DropRecord::new(&frame[..64], 64, 0, 1, DropReason::TxFull);
        // 250 offered in one second by a worker that could not offer 900 others: 100 go out.
        same.unreported = 900;
        full.unreported = 900;
        let records: Vec<DropRecord> = (0..250)
            .map(|i| if i % 2 == 0 { same } else { full })
            .collect();
        agent.on_drops(0, &records);
        agent.flush();
        let s = agent.stats();
        assert_eq!(
            (s.drop_notifications, s.drop_notifications_limited),
            (100, 150)
        );
        let (d, raw) = received(&sock);
        assert_eq!(d.drops.len(), 100);
        assert!(d.flows.is_empty() && d.counters.is_empty());
        let first = &d.drops[0];
        assert_eq!(
            (first.source_class, first.source, first.input, first.output),
            (0, 7, 7, 0),
            "an ingress drop: the input port is the source, the output unknown"
        );
        assert_eq!(
            (first.reason, first.frame_length, first.stripped),
            (268, 204, 4)
        );
        assert_eq!(first.header, &frame[..128]);
        let second = &d.drops[1];
        assert_eq!((second.input, second.output, second.reason), (7, 8, 259));
        // Each says how many drops went unreported before it: the worker's 900 (the agent
        // held none back before these).
        assert!(d.drops.iter().all(|n| n.drops == 900));
        let seqs: Vec<u32> = d.drops.iter().map(|n| n.sequence).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "per source, from 1");
        // Datagrams hold notifications alone, and no more than max_datagram bytes.
        assert!(raw.iter().all(|b| b.len() <= 1400));
        // A new second, a new budget.
        std::thread::sleep(Duration::from_millis(1010));
        same.unreported = 1000;
        agent.on_drops(0, &[same]);
        agent.flush();
        let (d, _) = received(&sock);
        assert_eq!(d.drops.len(), 1);
        assert_eq!(d.drops[0].drops, 1000 + 150, "the worker's and the agent's");
        assert_eq!(d.drops[0].sequence, 101);
    }

    #[test]
    fn notifications_never_share_a_datagram_with_other_samples() {
        let sock = listener();
        let mut agent = Agent::new(spec(sock.local_addr().unwrap(), 10), &[port(0, 7)], 1).unwrap();
        let frame = [0x02u8; 60];
        let sample = SampleRecord::new(&frame, 60, 0, SampledOutput::Port(0), 0, 0, 1, 128);
        let totals = Counters::default();
        agent.on_samples(0, &[sample], &totals);
        agent.on_drops(
            0,
            &[DropRecord::new(&frame, 60, 0, NO_PORT, DropReason::Runt)],
        );
        agent.on_samples(0, &[sample], &totals);
        agent.flush();
        let (_, raw) = received(&sock);
        assert_eq!(raw.len(), 2);
        for dg in raw {
            let mut d = Decoded::default();
            decode(&dg, &mut d);
            assert!(
                d.drops.is_empty() || d.flows.is_empty(),
                "pmacct and other collectors that predate format 5 stop reading a datagram there"
            );
        }
    }

    #[test]
    fn drop_notifications_off_send_nothing() {
        let sock = listener();
        let mut agent = Agent::new(spec(sock.local_addr().unwrap(), 0), &[port(0, 7)], 1).unwrap();
        let r = DropRecord::new(&[0; 60], 60, 0, NO_PORT, DropReason::Runt);
        agent.on_drops(0, &[r; 5]);
        agent.flush();
        assert_eq!(received(&sock).1.len(), 0);
        assert_eq!(agent.stats().drop_notifications_limited, 5);
    }
}
