//! The generator's poll loop: on one lcore it builds and sends each port's stream at a paced
//! rate, receives and matches what comes back, and (optionally) plays a VM that reflects
//! frames between its own virtio ports. No allocation, lock or system call per frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::dpdk::{
    tsc, tsc_hz, Burst, DpdkError, Mempool, Port, PortConfig, RxQueue, TxBatch, TxQueue, BURST_SIZE,
};
use serde::Serialize;

use super::frame::{self, FrameTemplate, SizeMix, StreamShape, FCS_BYTES, LEARN_EPOCH};
use super::rx::{latency_histogram, CyclesToNs, StreamRx};

/// Descriptors per queue of the generator's ports.
const QUEUE_DESC: u16 = 1024;
/// How long the receiver keeps listening after sending stops, once nothing arrives (ms).
const DRAIN_QUIET_MS: u64 = 50;
/// The most the receiver waits for stragglers after sending stops (ms).
const DRAIN_MAX_MS: u64 = 2000;
/// Most rx bursts a port takes for each burst it sends.
const RX_BURSTS_PER_SEND: usize = 4;
/// Time after the learning frames for the device under test to take them in (ms).
const LEARN_SETTLE_MS: u64 = 100;

/// Errors setting the generator's ports up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("port {name} ({devargs}): {source}")]
    Port {
        name: String,
        devargs: String,
        source: DpdkError,
    },
    #[error("mbuf pool: {0}")]
    Pool(DpdkError),
}

/// What the VM role does with frames on its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReflectMode {
    /// One port: swap source and destination MAC, send back on the same port (testpmd macswap).
    MacSwap,
    /// Two ports: what one receives leaves the other, untouched (testpmd io, port pairs).
    Cross,
}

impl ReflectMode {
    /// What the VM role does, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            ReflectMode::MacSwap => "MAC swap on one port",
            ReflectMode::Cross => "frames passed across two ports",
        }
    }
}

// Fields drop in order: the queue handles go before the port closes.
struct OpenPort {
    /// Every rx queue (a peer may send on any of them).
    rx: Vec<RxQueue>,
    /// The next rx queue the VM role polls.
    next_rx: usize,
    tx: TxQueue,
    port: Port,
    name: String,
}

fn open_port(
    name: &str,
    devargs: &str,
    pool: &Arc<Mempool>,
    max_size: u16,
    rx_queues: u16,
) -> Result<OpenPort, EngineError> {
    let err = |source| EngineError::Port {
        name: name.to_owned(),
        devargs: devargs.to_owned(),
        source,
    };
    let mut port = Port::probe(devargs).map_err(err)?;
    let cfg = PortConfig {
        rx_queues,
        tx_queues: 1,
        rx_desc: QUEUE_DESC,
        tx_desc: QUEUE_DESC,
        rx_scatter: false,
        tx_multi_seg: false,
    };
    port.configure(cfg, Arc::clone(pool)).map_err(err)?;
    if usize::from(max_size) > 1518 {
        // MTU: the frame less its Ethernet header, FCS and one tag.
        let mtu = max_size - 14 - FCS_BYTES as u16 - 4;
        if let Err(e) = port.set_mtu(mtu) {
            log::warn!("port {name}: MTU {mtu} not taken ({e}); large frames may be refused");
        }
    }
    port.start().map_err(err)?;
    let (rx, mut tx) = port.queues(1).map_err(err)?;
    let Some(tx) = tx.pop() else {
        unreachable!("one tx queue was configured")
    };
    Ok(OpenPort {
        name: name.to_owned(),
        port,
        rx,
        next_rx: 0,
        tx,
    })
}

impl OpenPort {
    /// Receives one burst from the next rx queue in turn (the VM role's ports).
    #[inline(always)]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let q = self.next_rx;
        self.next_rx = if q + 1 == self.rx.len() { 0 } else { q + 1 };
        self.rx[q].rx_burst(burst)
    }
}

/// The generator's ports, the VM role's ports and the pool their frames come from.
pub struct Engine {
    ports: Vec<OpenPort>,
    pending: Vec<TxBatch>,
    reflect: Vec<OpenPort>,
    reflect_batches: Vec<TxBatch>,
    reflect_mode: Option<ReflectMode>,
    pool: Arc<Mempool>,
    hz: u64,
    to_ns: CyclesToNs,
    stop: Arc<AtomicBool>,
    epoch: u8,
    burst: Burst,
}

/// The traffic of a run: sizes, flows, tagging, learning.
#[derive(Debug, Clone)]
pub struct Load {
    /// Frame sizes.
    pub sizes: SizeMix,
    /// Distinct source/destination MAC pairs per stream.
    pub flows: u32,
    /// 802.1Q tag (VLAN id, PCP) on every frame, or none.
    pub vlan: Option<(u16, u8)>,
    /// Send one learning frame per flow and port before each trial.
    pub learn: bool,
    /// Rate of the learning frames, frames/s over all ports.
    pub learn_pps: f64,
}

/// One-way latency percentiles of a trial, ns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Frames measured.
    pub samples: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p99_9_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p99_9_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// One port's stream in a trial.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// The sending port.
    pub port: String,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames of this stream received (on any port), duplicates included.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames sent and never received.
    pub lost: u64,
    pub duplicates: u64,
    /// Frames that arrived after a later one of the stream (RFC 4737 reordered).
    pub reordered: u64,
    pub latency: Latency,
}

/// What a trial measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    /// Rate asked for, frames/s over all ports (None: as fast as the generator goes).
    pub offered_pps: Option<f64>,
    /// Seconds of sending.
    pub tx_secs: f64,
    /// Frames/s sent, all ports.
    pub sent_pps: f64,
    /// Frames/s received back (distinct frames over the sending time), all ports.
    pub received_pps: f64,
    pub tx_frames: u64,
    pub rx_frames: u64,
    pub lost: u64,
    /// lost / tx_frames.
    pub loss_ratio: f64,
    /// Frames due at the offered rate over the sending time but not sent: the ports did not
    /// take them (a virtual port's peer pushing back) or the generator could not build them.
    pub unsent: u64,
    /// unsent / frames due (0 when unpaced).
    pub shortfall_ratio: f64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Over every stream.
    pub latency: Latency,
    pub streams: Vec<StreamReport>,
    /// Learning frames that came back (each trial sends them first).
    pub learning_frames_received: u64,
    /// Test frames of earlier trials that arrived during this one.
    pub stale_frames: u64,
    /// Frames that were not the generator's (ARP, IPv6 neighbour discovery, ...).
    pub foreign_frames: u64,
    /// Frames the VM role passed back, and those its ports did not take.
    pub reflected: u64,
    pub reflect_dropped: u64,
    /// Bursts the generator could not build because its pool was empty.
    pub pool_empty: u64,
    /// Share of the frames offered to the ports that they did not take at once (0 to 1): the
    /// device pushing back. Near 0 in an unpaced trial, the generator's CPU set its rate.
    pub pushback_ratio: f64,
}

/// Receive-side tallies besides the streams'.
#[derive(Default)]
struct Misc {
    learning: u64,
    stale: u64,
    foreign: u64,
    reflected: u64,
    reflect_dropped: u64,
    pool_empty: u64,
    /// Frames offered to a port and not taken at once (offered again later), and all offers.
    refused_offers: u64,
    offers: u64,
}

impl Engine {
    /// Opens the generator's ports (with `rx_queues` rx queues each) and the VM role's
    /// (`reflect`: none, one for MAC swap or two cross-connected), all drawing from one pool
    /// sized for `max_size`-byte frames.
    pub fn open(
        ports: &[(String, String)],
        reflect: &[String],
        max_size: u16,
        rx_queues: u16,
        stop: Arc<AtomicBool>,
    ) -> Result<Engine, EngineError> {
        let data_bytes = (usize::from(max_size) - FCS_BYTES).max(2048) as u16;
        // Enough for every queue's ring, frames in flight through the device under test and
        // the bursts being built; fewer when buffers are jumbo.
        let count = if data_bytes > 2048 { 16_383 } else { 65_535 };
        let pool = Mempool::with_buffers("pktgen", count, 256, data_bytes, -1)
            .map(Arc::new)
            .map_err(EngineError::Pool)?;
        let opened = ports
            .iter()
            .map(|(n, d)| open_port(n, d, &pool, max_size, rx_queues))
            .collect::<Result<Vec<_>, _>>()?;
        let reflect_ports = reflect
            .iter()
            .enumerate()
            .map(|(i, d)| open_port(&format!("vm{i}"), d, &pool, max_size, 1))
            .collect::<Result<Vec<_>, _>>()?;
        let reflect_mode = match reflect_ports.len() {
            0 => None,
            1 => Some(ReflectMode::MacSwap),
            _ => Some(ReflectMode::Cross),
        };
        let hz = tsc_hz();
        Ok(Engine {
            pending: opened.iter().map(|_| TxBatch::new()).collect(),
            reflect_batches: reflect_ports.iter().map(|_| TxBatch::new()).collect(),
            ports: opened,
            reflect: reflect_ports,
            reflect_mode,
            pool,
            hz,
            to_ns: CyclesToNs::new(hz),
            stop,
            epoch: 0,
            burst: Burst::new(),
        })
    }

    /// The VM role's mode, if it plays one.
    pub fn reflect_mode(&self) -> Option<ReflectMode> {
        self.reflect_mode
    }

    /// The generator's port names, in stream order.
    pub fn port_names(&self) -> Vec<String> {
        self.ports.iter().map(|p| p.name.clone()).collect()
    }

    /// Waits up to `limit` for every port's link (a vhost-user or memif peer connecting);
    /// returns the names of those still down.
    pub fn wait_for_links(&mut self, limit: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let down: Vec<String> = self
                .ports
                .iter()
                .chain(&self.reflect)
                .filter(|p| !p.port.link().up)
                .map(|p| p.name.clone())
                .collect();
            if down.is_empty() || std::time::Instant::now() >= deadline || self.stopped() {
                return down;
            }
            // Keep the VM role's queues drained while waiting.
            self.poll_reflect();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn shapes(&self, epoch: u8, vlan: Option<(u16, u8)>) -> Vec<StreamShape> {
        (0..self.ports.len())
            .map(|i| {
                let set = u8::try_from(i).expect("at most 254 ports");
                StreamShape {
                    stream: u16::from(epoch) << 8 | u16::from(set),
                    src_set: set,
                    // Ports pair up (0 with 1, 2 with 3); a lone port sends to set 1, which a
                    // wire or a reflector brings back to it.
                    dst_set: set ^ 1,
                    vlan,
                }
            })
            .collect()
    }

    /// Runs one trial: learning frames (if the load says so), then `duration` of sending at
    /// `rate` frames/s over all ports (None: as fast as possible), then listening until the
    /// last frames are in. None when a signal stopped it.
    pub fn trial(
        &mut self,
        load: &Load,
        rate: Option<f64>,
        duration: Duration,
    ) -> Option<TrialReport> {
        self.epoch = self.epoch % (LEARN_EPOCH - 1) + 1;
        let n = self.ports.len();
        let mut misc = Misc::default();
        if load.learn && load.flows > 0 {
            let shapes = self.shapes(LEARN_EPOCH, load.vlan);
            let mut rxs: Vec<StreamRx> = (0..n).map(|_| StreamRx::default()).collect();
            let templates = templates(&shapes, &SizeMix::Fixed(frame::MIN_SIZE));
            let per_port = load.learn_pps / n as f64;
            let (mut tx, mut bytes) = (vec![0; n], vec![0; n]);
            // Twice the time the frames need at that rate, and a second more, at most.
            let secs = 2.0 * f64::from(load.flows) / per_port.max(1.0) + 1.0;
            let end = tsc() + (secs * self.hz as f64) as u64;
            let phase = Phase {
                templates: &templates,
                flows: load.flows,
                per_port_pps: Some(per_port),
                end,
                frames: Some(u64::from(load.flows)),
            };
            self.pump(&phase, (&mut tx, &mut bytes), &mut rxs, &mut misc)?;
            for b in &mut self.pending {
                b.discard();
            }
            let settle = Phase {
                per_port_pps: Some(0.0),
                end: tsc() + self.hz * LEARN_SETTLE_MS / 1000,
                frames: None,
                ..phase
            };
            self.pump(&settle, (&mut tx, &mut bytes), &mut rxs, &mut misc)?;
        }
        // Pushback is of the measured frames only.
        misc.offers = 0;
        misc.refused_offers = 0;
        let epoch = self.epoch;
        let shapes = self.shapes(epoch, load.vlan);
        let templates = templates(&shapes, &load.sizes);
        let mut rxs: Vec<StreamRx> = (0..n).map(|_| StreamRx::default()).collect();
        let (mut tx, mut bytes) = (vec![0u64; n], vec![0u64; n]);
        let start = tsc();
        let end = start + (duration.as_secs_f64() * self.hz as f64) as u64;
        let phase = Phase {
            templates: &templates,
            flows: load.flows,
            per_port_pps: rate.map(|r| r / n as f64),
            end,
            frames: None,
        };
        self.pump(&phase, (&mut tx, &mut bytes), &mut rxs, &mut misc)?;
        // The sending window as planned: pacing spread the due frames over exactly this.
        let tx_secs = (end - start) as f64 / self.hz as f64;
        // Frames built but not taken by a full queue were never sent: they are not counted.
        for b in &mut self.pending {
            b.discard();
        }
        self.drain(epoch, &mut rxs, &mut misc)?;
        Some(self.report(rate, tx_secs, &tx, &bytes, &rxs, &misc))
    }

    /// Listens until nothing arrived for DRAIN_QUIET_MS (at most DRAIN_MAX_MS).
    fn drain(&mut self, epoch: u8, rxs: &mut [StreamRx], misc: &mut Misc) -> Option<()> {
        let quiet = self.hz * DRAIN_QUIET_MS / 1000;
        let start = tsc();
        let limit = start + self.hz * DRAIN_MAX_MS / 1000;
        let mut last = start;
        loop {
            let mut got = 0;
            for i in 0..self.ports.len() {
                for q in 0..self.ports[i].rx.len() {
                    got += self.poll_rx(i, q, epoch, rxs, misc);
                }
            }
            self.poll_reflect_counting(misc);
            let now = tsc();
            if got > 0 {
                last = now;
            }
            if now - last > quiet || now > limit {
                return Some(());
            }
            if self.stopped() {
                return None;
            }
        }
    }

    /// Sends each port's stream as `phase` says, receiving all the while. Sequence numbers
    /// continue from `tx` (frames sent so far per port).
    fn pump(
        &mut self,
        phase: &Phase<'_>,
        (tx, bytes): (&mut [u64], &mut [u64]),
        rxs: &mut [StreamRx],
        misc: &mut Misc,
    ) -> Option<()> {
        let templates = phase.templates;
        let epoch = templates_epoch(templates).unwrap_or(self.epoch);
        let per_cycle = phase.per_port_pps.map(|r| r / self.hz as f64);
        let start = tsc();
        // Frames built per port, whether sent yet or waiting in `pending`.
        let mut built: Vec<u64> = tx.to_vec();
        let base: Vec<u64> = tx.to_vec();
        let flows = u64::from(phase.flows.max(1));
        loop {
            let now = tsc();
            let all_sent = phase
                .frames
                .is_some_and(|n| tx.iter().zip(&base).all(|(t, b)| t - b >= n));
            if now >= phase.end || all_sent || self.stopped() {
                break;
            }
            for i in 0..self.ports.len() {
                let due = match per_cycle {
                    None => u64::MAX,
                    Some(r) => base[i] + ((now - start) as f64 * r) as u64,
                };
                let cap = phase.frames.map_or(u64::MAX, |n| base[i] + n);
                let want = due.min(cap).saturating_sub(built[i]);
                let batch = &mut self.pending[i];
                if want > 0 && !batch.is_full() {
                    let first = built[i];
                    let tpl = &templates[i];
                    let made = batch.alloc_frames(
                        &self.pool,
                        want.min(BURST_SIZE as u64) as usize,
                        |k, buf| {
                            let seq = first + k as u64;
                            let t = &tpl[(seq % tpl.len() as u64) as usize];
                            // Stamped when built: a frame that waits for room in a full queue
                            // counts that wait too, as a frame queued in a NIC would.
                            t.write(buf, (seq % flows) as u32, seq as u32, now);
                            usize::from(t.len())
                        },
                    );
                    if made == 0 {
                        misc.pool_empty += 1;
                    }
                    built[i] += made as u64;
                }
                let offered = self.pending[i].len() as u64;
                let sent = self.ports[i].tx.try_send(&mut self.pending[i]) as u64;
                misc.offers += offered;
                misc.refused_offers += offered - sent;
                if sent > 0 {
                    let tpl = &templates[i];
                    bytes[i] += if tpl.len() == 1 {
                        sent * (u64::from(tpl[0].len()) + FCS_BYTES as u64)
                    } else {
                        (tx[i]..tx[i] + sent)
                            .map(|s| {
                                u64::from(tpl[(s % tpl.len() as u64) as usize].len())
                                    + FCS_BYTES as u64
                            })
                            .sum()
                    };
                    tx[i] += sent;
                }
                // Receive ahead of sending: while full bursts come, take a few more, so the
                // device's transmit ring toward the generator never backs up into drops
                // that the generator, not the device, caused.
                for q in 0..self.ports[i].rx.len() {
                    for _ in 0..RX_BURSTS_PER_SEND {
                        if self.poll_rx(i, q, epoch, rxs, misc) < BURST_SIZE {
                            break;
                        }
                    }
                }
            }
            self.poll_reflect_counting(misc);
        }
        if self.stopped() {
            None
        } else {
            Some(())
        }
    }

    /// Receives one burst on queue `q` of port `i` and matches it; returns how many came.
    #[inline]
    fn poll_rx(
        &mut self,
        i: usize,
        q: usize,
        epoch: u8,
        rxs: &mut [StreamRx],
        misc: &mut Misc,
    ) -> usize {
        let n = self.ports[i].rx[q].rx_burst(&mut self.burst);
        if n == 0 {
            return 0;
        }
        let now = tsc();
        for m in self.burst.as_slice() {
            match frame::parse(m.data()) {
                Some(sig) => {
                    let (e, s) = ((sig.stream >> 8) as u8, usize::from(sig.stream & 0xff));
                    if e == LEARN_EPOCH {
                        misc.learning += 1;
                    } else if e == epoch && s < rxs.len() {
                        let size = u64::from(m.pkt_len()) + FCS_BYTES as u64;
                        let ns = self.to_ns.ns(now.saturating_sub(sig.tsc));
                        rxs[s].record(size, sig.seq, ns);
                    } else {
                        misc.stale += 1;
                    }
                }
                None => misc.foreign += 1,
            }
        }
        self.burst.free_all();
        n
    }

    /// The VM role's share of a loop: like a VM's forwarder polling on, it keeps taking bursts
    /// (a few at most) while they come full.
    fn poll_reflect_counting(&mut self, misc: &mut Misc) {
        for _ in 0..RX_BURSTS_PER_SEND {
            let (r, d) = self.poll_reflect();
            misc.reflected += r;
            misc.reflect_dropped += d;
            if r + d < BURST_SIZE as u64 {
                break;
            }
        }
    }

    /// The VM role: one burst from each of its ports, reflected. Returns (sent, dropped).
    #[inline]
    fn poll_reflect(&mut self) -> (u64, u64) {
        let Some(mode) = self.reflect_mode else {
            return (0, 0);
        };
        let (mut sent, mut dropped) = (0, 0);
        for i in 0..self.reflect.len() {
            if self.reflect[i].rx_burst(&mut self.burst) == 0 {
                continue;
            }
            let out = match mode {
                ReflectMode::MacSwap => i,
                ReflectMode::Cross => i ^ 1,
            };
            let Some(batch) = self.reflect_batches.get_mut(out) else {
                // A third port in cross mode has no partner: what it receives is dropped.
                dropped += self.burst.len() as u64;
                self.burst.free_all();
                continue;
            };
            let mut frames = self.burst.drain();
            if mode == ReflectMode::MacSwap {
                for mut m in frames.by_ref() {
                    if let Some(d) = m.data_mut().filter(|d| d.len() >= 12) {
                        let mut dst = [0u8; 6];
                        dst.copy_from_slice(&d[0..6]);
                        d.copy_within(6..12, 0);
                        d[6..12].copy_from_slice(&dst);
                    }
                    if let Err(m) = batch.push(m) {
                        drop(m);
                        dropped += 1;
                    }
                }
            } else {
                frames.move_into(batch, BURST_SIZE);
            }
            drop(frames);
            sent += self.reflect[out].tx.try_send(batch) as u64;
            // A VM's forwarder drops what its port does not take (testpmd does).
            dropped += batch.discard() as u64;
        }
        (sent, dropped)
    }

    fn report(
        &self,
        rate: Option<f64>,
        tx_secs: f64,
        tx: &[u64],
        bytes: &[u64],
        rxs: &[StreamRx],
        misc: &Misc,
    ) -> TrialReport {
        let mut all = latency_histogram();
        let streams: Vec<StreamReport> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let r = &rxs[i];
                all.add(&r.latency_ns).expect("histograms of one shape add");
                StreamReport {
                    port: p.name.clone(),
                    tx_frames: tx[i],
                    tx_bytes: bytes[i],
                    rx_frames: r.frames,
                    rx_bytes: r.bytes,
                    lost: tx[i].saturating_sub(r.unique()),
                    duplicates: r.duplicates,
                    reordered: r.reordered,
                    latency: Latency::of(&r.latency_ns),
                }
            })
            .collect();
        let tx_frames: u64 = tx.iter().sum();
        let rx_unique: u64 = rxs.iter().map(StreamRx::unique).sum();
        let lost: u64 = streams.iter().map(|s| s.lost).sum();
        let secs = tx_secs.max(1e-9);
        let due = rate.map_or(0.0, |r| (r * tx_secs).floor());
        let unsent = (due - tx_frames as f64).max(0.0);
        TrialReport {
            offered_pps: rate,
            tx_secs,
            sent_pps: tx_frames as f64 / secs,
            received_pps: rx_unique as f64 / secs,
            tx_frames,
            rx_frames: streams.iter().map(|s| s.rx_frames).sum(),
            lost,
            loss_ratio: if tx_frames == 0 {
                0.0
            } else {
                lost as f64 / tx_frames as f64
            },
            unsent: unsent as u64,
            shortfall_ratio: if due > 0.0 { unsent / due } else { 0.0 },
            duplicates: streams.iter().map(|s| s.duplicates).sum(),
            reordered: streams.iter().map(|s| s.reordered).sum(),
            latency: Latency::of(&all),
            streams,
            learning_frames_received: misc.learning,
            stale_frames: misc.stale,
            foreign_frames: misc.foreign,
            reflected: misc.reflected,
            reflect_dropped: misc.reflect_dropped,
            pool_empty: misc.pool_empty,
            pushback_ratio: if misc.offers == 0 {
                0.0
            } else {
                misc.refused_offers as f64 / misc.offers as f64
            },
        }
    }
}

/// One send phase: what each port sends, how fast, until when.
#[derive(Clone, Copy)]
struct Phase<'a> {
    /// Per port, a template per size of the period (`[port][k]`).
    templates: &'a [Vec<FrameTemplate>],
    flows: u32,
    /// Frames/s per port; None: unpaced; Some(0.0): receive only.
    per_port_pps: Option<f64>,
    /// TSC at which the phase ends.
    end: u64,
    /// Ends sooner once every port sent this many frames.
    frames: Option<u64>,
}

/// The epoch the templates' streams carry (all ports share one).
fn templates_epoch(templates: &[Vec<FrameTemplate>]) -> Option<u8> {
    templates.first()?.first().map(|t| t.epoch())
}

/// Each stream's template per size of the period.
fn templates(shapes: &[StreamShape], sizes: &SizeMix) -> Vec<Vec<FrameTemplate>> {
    shapes
        .iter()
        .map(|&s| {
            sizes
                .pattern()
                .into_iter()
                .map(|size| FrameTemplate::new(s, size).expect("sizes are validated"))
                .collect()
        })
        .collect()
}
