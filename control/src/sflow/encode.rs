//! sFlow v5 datagram encoding (sflow.org `sflow_version_5.txt`): compact flow samples (format 1)
//! with a raw packet header and an extended switch record; compact counter samples (format 2)
//! of a port, with generic and Ethernet interface counters and the port's name, or of a VLAN,
//! with the VLAN counters; and dropped-packet notifications (`sflow_drops.txt`, format 5,
//! expanded source) with a raw packet header. All integers are big-endian XDR; every opaque
//! is zero-padded to 4 bytes; every sample and record is `format | length | body` with `length`
//! the exact body size. Each sample body ends its fixed fields with the XDR array count of its
//! records (`flow_record flow_records<>`, `counter_record counters<>`).

use std::net::IpAddr;

/// Datagram version.
pub const VERSION: u32 = 5;
/// Agent address type: IPv4.
pub const ADDRESS_IPV4: u32 = 1;
/// Agent address type: IPv6.
pub const ADDRESS_IPV6: u32 = 2;
/// Sample format: compact flow sample (enterprise 0).
pub const FLOW_SAMPLE: u32 = 1;
/// Sample format: compact counters sample (enterprise 0).
pub const COUNTERS_SAMPLE: u32 = 2;
/// Sample format: dropped-packet notification (enterprise 0, `sflow_drops.txt`).
pub const DISCARDED_PACKET: u32 = 5;
/// Flow record format: raw packet header.
pub const RAW_PACKET_HEADER: u32 = 1;
/// Flow record format: extended switch data.
pub const EXTENDED_SWITCH: u32 = 1001;
/// Counter record format: generic interface counters.
pub const GENERIC_IF_COUNTERS: u32 = 1;
/// Counter record format: Ethernet interface counters.
pub const ETHERNET_COUNTERS: u32 = 2;
/// Counter record format: VLAN counters.
pub const VLAN_COUNTERS: u32 = 5;
/// Counter record format: port name (`string name<255>`).
pub const PORT_NAME: u32 = 1005;
/// Data source class of an interface (source_id's top byte): ifIndex.
pub const SOURCE_IFINDEX: u32 = 0;
/// Data source class of a VLAN: smonVlanDataSource, index = the VLAN id.
pub const SOURCE_VLAN: u32 = 1;
/// Raw packet header protocol: Ethernet (ISO 8023).
pub const HEADER_PROTOCOL_ETHERNET: u32 = 1;
/// A 32-bit counter the switch does not know.
pub const UNKNOWN32: u32 = 0xFFFF_FFFF;
/// Default collector UDP port.
pub const DEFAULT_COLLECTOR_PORT: u16 = 6343;

/// Body size of a generic interface counters record.
const GENERIC_IF_LEN: usize = 88;
/// Body size of an Ethernet interface counters record.
const ETHERNET_LEN: usize = 52;
/// Body size of an extended switch record.
const EXTENDED_SWITCH_LEN: usize = 16;
/// Body size of a VLAN counters record.
const VLAN_LEN: usize = 28;
/// Longest port name a port name record carries (bytes).
pub const MAX_PORT_NAME: usize = 255;
/// A sample's or record's `format | length` prefix.
const PREFIX_LEN: usize = 8;
/// Highest ifIndex a compact source_id can carry.
const MAX_COMPACT_INDEX: u32 = (1 << 24) - 1;
/// Highest value of the 30 bits below an `output` field's format bits.
const OUTPUT_VALUE_MASK: u32 = 0x3FFF_FFFF;

/// The `output` field of a flow sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Sent to one port, by ifIndex (< 2^30; 0 means not known).
    Port(u32),
    /// Sent to `n` ports (flooded); `n = 0` means more than one, number unknown.
    Multiple(u32),
    /// Discarded, with a drop reason (`sflow_drops.txt`, e.g. 263 src_mac_is_multicast).
    Discarded(u32),
    /// Sent to the switch itself (`0x3FFFFFFF`). Nothing the switch samples is, yet.
    #[cfg_attr(not(test), allow(dead_code))]
    Internal,
}

impl Output {
    /// The 32-bit wire value: 2 format bits, then 30 bits of value.
    pub fn encode(self) -> u32 {
        let (format, value) = match self {
            Output::Port(i) => (0, i),
            Output::Multiple(n) => (0x8000_0000, n),
            Output::Discarded(reason) => (0x4000_0000, reason),
            Output::Internal => return OUTPUT_VALUE_MASK,
        };
        debug_assert!(value < OUTPUT_VALUE_MASK, "{self:?} out of range");
        format | (value & OUTPUT_VALUE_MASK)
    }
}

/// One sampled frame: a compact flow sample with a raw packet header record and an extended
/// switch record, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSample<'a> {
    /// +1 per flow sample of this source.
    pub sequence: u32,
    /// ifIndex of the sampling port (< 2^24); source_id = `(0 << 24) | index`.
    pub source_index: u32,
    /// The 1-in-N rate in use.
    pub sampling_rate: u32,
    /// Packets the sampler saw at this source, sampled or not (wrapping).
    pub sample_pool: u32,
    /// Samples selected and then lost.
    pub drops: u32,
    /// Ingress ifIndex.
    pub input: u32,
    /// Where the frame went.
    pub output: Output,
    /// Original frame length including the 4-byte FCS the wire had (the caller adds 4).
    pub frame_length: u32,
    /// Bytes removed from the header (4: the FCS).
    pub stripped: u32,
    /// The first bytes of the frame.
    pub header: &'a [u8],
    /// Extended switch: ingress 802.1Q VLAN.
    pub src_vlan: u32,
    /// Extended switch: ingress 802.1p priority.
    pub src_priority: u32,
    /// Extended switch: egress 802.1Q VLAN.
    pub dst_vlan: u32,
    /// Extended switch: egress 802.1p priority.
    pub dst_priority: u32,
}

/// Generic interface counters (counter record format 1, 88 bytes). Send [`UNKNOWN32`] /
/// all ones for counters the switch does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenericIfCounters {
    pub if_index: u32,
    /// 6: ethernetCsmacd.
    pub if_type: u32,
    /// Bits per second.
    pub if_speed: u64,
    /// 0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out.
    pub if_direction: u32,
    /// Bit 0: admin up; bit 1: oper up.
    pub if_status: u32,
    pub in_octets: u64,
    pub in_ucast: u32,
    pub in_multicast: u32,
    pub in_broadcast: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_ucast: u32,
    pub out_multicast: u32,
    pub out_broadcast: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    /// 1 promiscuous, 2 not (ifPromiscuousMode is a TruthValue).
    pub promiscuous: u32,
}

impl GenericIfCounters {
    #[rustfmt::skip] // In spec order.
    fn encode(&self, out: &mut Vec<u8>) {
        let c = self;
        put_all(out, &[c.if_index, c.if_type]);
        put64(out, c.if_speed);
        put_all(out, &[c.if_direction, c.if_status]);
        put64(out, c.in_octets);
        put_all(out, &[c.in_ucast, c.in_multicast, c.in_broadcast, c.in_discards, c.in_errors,
                       c.in_unknown_protos]);
        put64(out, c.out_octets);
        put_all(out, &[c.out_ucast, c.out_multicast, c.out_broadcast, c.out_discards, c.out_errors,
                       c.promiscuous]);
    }
}

/// Ethernet interface counters (counter record format 2, 52 bytes): dot3Stats, in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetCounters {
    pub alignment_errors: u32,
    pub fcs_errors: u32,
    pub single_collision_frames: u32,
    pub multiple_collision_frames: u32,
    pub sqe_test_errors: u32,
    pub deferred_transmissions: u32,
    pub late_collisions: u32,
    pub excessive_collisions: u32,
    pub internal_mac_transmit_errors: u32,
    pub carrier_sense_errors: u32,
    pub frame_too_longs: u32,
    pub internal_mac_receive_errors: u32,
    pub symbol_errors: u32,
}

impl EthernetCounters {
    /// Every counter unknown (all ones).
    #[rustfmt::skip]
    pub fn unknown() -> EthernetCounters {
        let u = UNKNOWN32;
        EthernetCounters {
            alignment_errors: u, fcs_errors: u, single_collision_frames: u,
            multiple_collision_frames: u, sqe_test_errors: u, deferred_transmissions: u,
            late_collisions: u, excessive_collisions: u, internal_mac_transmit_errors: u,
            carrier_sense_errors: u, frame_too_longs: u, internal_mac_receive_errors: u,
            symbol_errors: u,
        }
    }

    #[rustfmt::skip] // In spec order.
    fn encode(&self, out: &mut Vec<u8>) {
        let c = self;
        put_all(out, &[c.alignment_errors, c.fcs_errors, c.single_collision_frames,
                       c.multiple_collision_frames, c.sqe_test_errors, c.deferred_transmissions,
                       c.late_collisions, c.excessive_collisions, c.internal_mac_transmit_errors,
                       c.carrier_sense_errors, c.frame_too_longs, c.internal_mac_receive_errors,
                       c.symbol_errors]);
    }
}

/// One port's counters: a compact counters sample with a generic and an Ethernet record, and
/// the port's name record when it has a name (last: a collector that does not know it skips it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSample<'a> {
    /// +1 per counters sample of this source; reset when the counters reset.
    pub sequence: u32,
    /// ifIndex of the port (< 2^24).
    pub source_index: u32,
    pub generic: GenericIfCounters,
    pub ethernet: EthernetCounters,
    /// The port's name (at most [`MAX_PORT_NAME`] bytes are sent).
    pub name: Option<&'a str>,
}

/// One VLAN's counters (counter record format 5), in a compact counters sample whose source is
/// the VLAN (class 1, smonVlanDataSource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanCounterSample {
    /// +1 per counters sample of this VLAN.
    pub sequence: u32,
    /// The 802.1Q VLAN id (1-4094).
    pub vlan: u32,
    pub octets: u64,
    pub ucast: u32,
    pub multicast: u32,
    pub broadcast: u32,
    pub discards: u32,
}

/// A dropped frame (`sflow_drops.txt`'s discarded_packet, sample format 5): its source in the
/// expanded form, and a raw packet header record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropNotification<'a> {
    /// +1 per notification of this source.
    pub sequence: u32,
    /// The source's class ([`SOURCE_IFINDEX`]).
    pub source_class: u32,
    /// The source's index (an ifIndex).
    pub source_index: u32,
    /// Drops the agent did not report (rate limit, full ring), cumulative.
    pub drops: u32,
    /// ifIndex the frame came in on (0: not known).
    pub input: u32,
    /// ifIndex it was to leave by (0: not known, or none).
    pub output: u32,
    /// The drop reason code (`sflow_drops.txt`, e.g. 268 port_loopback_filter).
    pub reason: u32,
    /// Frame length including the 4-byte FCS the wire had (the caller adds 4).
    pub frame_length: u32,
    /// Bytes removed from the header (4: the FCS).
    pub stripped: u32,
    /// The first bytes of the frame.
    pub header: &'a [u8],
}

/// A sample of any kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample<'a> {
    Flow(FlowSample<'a>),
    Counters(CounterSample<'a>),
    Vlan(VlanCounterSample),
    Drop(DropNotification<'a>),
}

impl Sample<'_> {
    /// Bytes [`Sample::encode`] writes, `format | length` prefix included.
    pub fn encoded_len(&self) -> usize {
        PREFIX_LEN + self.body_len()
    }

    /// Appends `format | length | body` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Sample::Flow(f) => {
                debug_assert!(f.source_index <= MAX_COMPACT_INDEX);
                debug_assert!(f.input <= OUTPUT_VALUE_MASK);
                let h = f.header;
                put_all(out, &[FLOW_SAMPLE, len32(self.body_len())]);
                put_all(out, &[f.sequence, f.source_index, f.sampling_rate]);
                put_all(out, &[f.sample_pool, f.drops, f.input, f.output.encode()]);
                put32(out, 2); // records: raw packet header, extended switch
                raw_header(out, f.frame_length, f.stripped, h);
                put_all(out, &[EXTENDED_SWITCH, len32(EXTENDED_SWITCH_LEN)]);
                put_all(out, &[f.src_vlan, f.src_priority]);
                put_all(out, &[f.dst_vlan, f.dst_priority]);
            }
            Sample::Counters(c) => {
                debug_assert!(c.source_index <= MAX_COMPACT_INDEX);
                let name = c.name.map(port_name);
                put_all(out, &[COUNTERS_SAMPLE, len32(self.body_len())]);
                let records = if name.is_some() { 3 } else { 2 };
                put_all(out, &[c.sequence, c.source_index, records]);
                put_all(out, &[GENERIC_IF_COUNTERS, len32(GENERIC_IF_LEN)]);
                c.generic.encode(out);
                put_all(out, &[ETHERNET_COUNTERS, len32(ETHERNET_LEN)]);
                c.ethernet.encode(out);
                if let Some(n) = name {
                    put_all(out, &[PORT_NAME, len32(4 + pad4(n.len()))]);
                    put32(out, len32(n.len()));
                    out.extend_from_slice(n);
                    out.resize(out.len() + pad4(n.len()) - n.len(), 0);
                }
            }
            Sample::Vlan(v) => {
                put_all(out, &[COUNTERS_SAMPLE, len32(self.body_len())]);
                put_all(out, &[v.sequence, (SOURCE_VLAN << 24) | (v.vlan & 0x0fff)]);
                put_all(out, &[1, VLAN_COUNTERS, len32(VLAN_LEN), v.vlan]);
                put64(out, v.octets);
                put_all(out, &[v.ucast, v.multicast, v.broadcast, v.discards]);
            }
            Sample::Drop(d) => {
                put_all(out, &[DISCARDED_PACKET, len32(self.body_len())]);
                put_all(out, &[d.sequence, d.source_class, d.source_index, d.drops]);
                put_all(out, &[d.input, d.output, d.reason]);
                put32(out, 1); // records: raw packet header
                raw_header(out, d.frame_length, d.stripped, d.header);
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Bytes after the sample's `format | length` prefix.
    fn body_len(&self) -> usize {
        match self {
            // 7 fixed fields + record count, then the two records.
            Sample::Flow(f) => {
                8 * 4 + PREFIX_LEN + raw_header_len(f.header) + PREFIX_LEN + EXTENDED_SWITCH_LEN
            }
            // sequence, source_id, record count, then the records.
            Sample::Counters(c) => {
                3 * 4
                    + PREFIX_LEN
                    + GENERIC_IF_LEN
                    + PREFIX_LEN
                    + ETHERNET_LEN
                    + c.name
                        .map_or(0, |n| PREFIX_LEN + 4 + pad4(port_name(n).len()))
            }
            Sample::Vlan(_) => 3 * 4 + PREFIX_LEN + VLAN_LEN,
            // 7 fixed fields + record count, then the raw header record.
            Sample::Drop(d) => 8 * 4 + PREFIX_LEN + raw_header_len(d.header),
        }
    }
}

/// Appends a raw packet header record (format 1) of an Ethernet frame.
fn raw_header(out: &mut Vec<u8>, frame_length: u32, stripped: u32, h: &[u8]) {
    put_all(out, &[RAW_PACKET_HEADER, len32(raw_header_len(h))]);
    put_all(out, &[HEADER_PROTOCOL_ETHERNET, frame_length, stripped]);
    put32(out, len32(h.len()));
    out.extend_from_slice(h);
    out.resize(out.len() + pad4(h.len()) - h.len(), 0);
}

/// A port name's bytes as its record carries them: at most [`MAX_PORT_NAME`].
fn port_name(name: &str) -> &[u8] {
    let b = name.as_bytes();
    &b[..b.len().min(MAX_PORT_NAME)]
}

/// Body size of a raw packet header record carrying `header`.
fn raw_header_len(header: &[u8]) -> usize {
    4 * 4 + pad4(header.len())
}

/// `n` rounded up to a multiple of 4.
fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// A length as an XDR u32 (every length here is bounded by the datagram size).
fn len32(n: usize) -> u32 {
    debug_assert!(u32::try_from(n).is_ok());
    n as u32
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_all(out: &mut Vec<u8>, vs: &[u32]) {
    for &v in vs {
        put32(out, v);
    }
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// One datagram being built: the header, then samples, never more than `max_len` bytes once a
/// sample is in (a `max_len` below the header size takes no sample).
#[derive(Debug, Clone)]
pub struct Datagram {
    buf: Vec<u8>,
    /// Offset of the `num_samples` field, the header's last.
    count_at: usize,
    samples: u32,
    max_len: usize,
}

impl Datagram {
    /// Starts a datagram. `sequence` counts datagrams of this sub-agent; `uptime_ms` is the
    /// agent's uptime when it is sent.
    pub fn new(
        agent: IpAddr,
        sub_agent_id: u32,
        sequence: u32,
        uptime_ms: u32,
        max_len: usize,
    ) -> Datagram {
        let mut buf = Vec::with_capacity(max_len);
        put32(&mut buf, VERSION);
        match agent {
            IpAddr::V4(a) => {
                put32(&mut buf, ADDRESS_IPV4);
                buf.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                put32(&mut buf, ADDRESS_IPV6);
                buf.extend_from_slice(&a.octets());
            }
        }
        put_all(&mut buf, &[sub_agent_id, sequence, uptime_ms]);
        let count_at = buf.len();
        put32(&mut buf, 0);
        Datagram {
            buf,
            count_at,
            samples: 0,
            max_len,
        }
    }

    /// Adds the sample if it fits; returns false (and adds nothing) when it would make the
    /// datagram exceed `max_len`.
    pub fn push(&mut self, s: &Sample<'_>) -> bool {
        if self.buf.len() + s.encoded_len() > self.max_len {
            return false;
        }
        s.encode(&mut self.buf);
        self.samples += 1;
        true
    }

    /// Bytes so far, header included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True while no sample is in.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Samples pushed.
    #[cfg(test)]
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The finished bytes with `num_samples` filled in.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.samples.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const AGENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const HDR: [u8; 6] = [0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02];

    #[rustfmt::skip]
    fn flow(header: &[u8]) -> Sample<'_> {
        Sample::Flow(FlowSample {
            sequence: 42, source_index: 3, sampling_rate: 512, sample_pool: 1536, drops: 0,
            input: 3, output: Output::Port(5), frame_length: 64, stripped: 4, header,
            src_vlan: 10, src_priority: 0, dst_vlan: 10, dst_priority: 3,
        })
    }

    #[rustfmt::skip]
    fn counters() -> Sample<'static> {
        let u = UNKNOWN32;
        Sample::Counters(CounterSample {
            sequence: 9,
            source_index: 3,
            generic: GenericIfCounters {
                if_index: 3, if_type: 6, if_speed: 10_000_000_000, if_direction: 1, if_status: 3,
                in_octets: 0x1_0000_0002, in_ucast: 100, in_multicast: u, in_broadcast: u,
                in_discards: 7, in_errors: 0, in_unknown_protos: u,
                out_octets: u64::MAX, out_ucast: 200, out_multicast: u, out_broadcast: u,
                out_discards: 0, out_errors: 0, promiscuous: 2,
            },
            ethernet: EthernetCounters::unknown(),
            name: None,
        })
    }

    fn drop_notification(header: &[u8]) -> Sample<'_> {
        Sample::Drop(DropNotification {
            sequence: 4,
            source_class: SOURCE_IFINDEX,
            source_index: 3,
            drops: 17,
            input: 3,
            output: 0,
            reason: 268,
            frame_length: 64,
            stripped: 4,
            header,
        })
    }

    fn vlan_counters() -> Sample<'static> {
        Sample::Vlan(VlanCounterSample {
            sequence: 2,
            vlan: 100,
            octets: 0x1_0000_0040,
            ucast: 5,
            multicast: 6,
            broadcast: 7,
            discards: 8,
        })
    }

    #[test]
    fn port_name_record_follows_the_interface_records() {
        let Sample::Counters(mut c) = counters() else {
            unreachable!()
        };
        c.name = Some("vm1-a");
        let s = Sample::Counters(c);
        let mut b = Vec::new();
        s.encode(&mut b);
        // 176 bytes as before, then format 1005 | length 12 | string length 5 | "vm1-a" + pad.
        assert_eq!(b.len(), 176 + 8 + 12);
        assert_eq!(b.len(), s.encoded_len());
        assert_eq!(b[4..8], [0, 0, 0, 168 + 20], "sample length");
        assert_eq!(b[16..20], [0, 0, 0, 3], "three records");
        assert_eq!(b[176..184], [0, 0, 0x03, 0xED, 0, 0, 0, 12]);
        assert_eq!(b[184..188], [0, 0, 0, 5]);
        assert_eq!(&b[188..], b"vm1-a\0\0\0");
        // A name of a multiple of 4 bytes has no padding; one past 255 bytes is cut there.
        c.name = Some("vm12");
        let mut b = Vec::new();
        Sample::Counters(c).encode(&mut b);
        assert_eq!(
            b[176..],
            [0, 0, 0x03, 0xED, 0, 0, 0, 8, 0, 0, 0, 4, b'v', b'm', b'1', b'2']
        );
        let long = "x".repeat(300);
        c.name = Some(&long);
        let s = Sample::Counters(c);
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(b.len(), s.encoded_len());
        assert_eq!(b[184..188], [0, 0, 0, 255]);
        assert_eq!(b.len(), 176 + 8 + 4 + 256);
    }

    #[test]
    fn vlan_counter_sample_layout() {
        let s = vlan_counters();
        let mut b = Vec::new();
        s.encode(&mut b);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 2,                 // counters sample
            0, 0, 0, 48,                // length: 3 * 4 + 8 + 28
            0, 0, 0, 2,                 // sequence
            1, 0, 0, 100,               // source_id: class 1 (VLAN), index 100
            0, 0, 0, 1,                 // one record
            0, 0, 0, 5,                 // VLAN counters
            0, 0, 0, 28,
            0, 0, 0, 100,               // vlan_id
            0, 0, 0, 1, 0, 0, 0, 0x40,  // octets
            0, 0, 0, 5,   0, 0, 0, 6,   0, 0, 0, 7,   0, 0, 0, 8,
        ];
        assert_eq!(b, want);
        assert_eq!(b.len(), s.encoded_len());
    }

    #[test]
    fn drop_notification_layout() {
        let s = drop_notification(&HDR);
        let mut b = Vec::new();
        s.encode(&mut b);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 5,                 // discarded packet
            0, 0, 0, 64,                // length: 8 * 4 + (8 + 24)
            0, 0, 0, 4,                 // sequence
            0, 0, 0, 0,                 // source_id_type: ifIndex
            0, 0, 0, 3,                 // source_id_index
            0, 0, 0, 17,                // drops
            0, 0, 0, 3,                 // input
            0, 0, 0, 0,                 // output: not known
            0, 0, 0x01, 0x0C,           // reason 268 port_loopback_filter
            0, 0, 0, 1,                 // one record
            0, 0, 0, 1,                 // raw packet header
            0, 0, 0, 24,
            0, 0, 0, 1,   0, 0, 0, 64,   0, 0, 0, 4,   0, 0, 0, 6,
            0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0, 0,
        ];
        assert_eq!(b, want);
        assert_eq!(b.len(), s.encoded_len());
    }

    #[test]
    fn header_ipv4_no_samples() {
        let d = Datagram::new(AGENT, 0, 7, 1000, 1400);
        assert!(d.is_empty());
        assert_eq!(d.len(), 28);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 5,        // version
            0, 0, 0, 1,        // address type IPv4
            10, 0, 0, 1,       // agent
            0, 0, 0, 0,        // sub_agent_id
            0, 0, 0, 7,        // sequence
            0, 0, 0x03, 0xE8,  // uptime 1000 ms
            0, 0, 0, 0,        // num_samples
        ];
        assert_eq!(d.finish(), want);
    }

    #[test]
    fn header_ipv6_agent() {
        let agent = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let d = Datagram::new(agent, 1, 2, 3, 1400);
        assert_eq!(d.len(), 40);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 5,
            0, 0, 0, 2,
            0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0, 0, 0, 1,
            0, 0, 0, 2,
            0, 0, 0, 3,
            0, 0, 0, 0,
        ];
        assert_eq!(d.finish(), want);
    }

    #[test]
    fn datagram_with_one_flow_sample() {
        let mut d = Datagram::new(AGENT, 0, 7, 1000, 1400);
        assert!(d.push(&flow(&HDR)));
        assert_eq!(d.samples(), 1);
        #[rustfmt::skip]
        let want: [u8; 124] = [
            0, 0, 0, 5,   0, 0, 0, 1,   10, 0, 0, 1,   0, 0, 0, 0,
            0, 0, 0, 7,   0, 0, 0x03, 0xE8,
            0, 0, 0, 1,                 // num_samples
            0, 0, 0, 1,                 // flow sample
            0, 0, 0, 88,                // length: 8 * 4 + (8 + 24) + (8 + 16)
            0, 0, 0, 42,                // sequence
            0, 0, 0, 3,                 // source_id: class 0, index 3
            0, 0, 0x02, 0x00,           // sampling_rate 512
            0, 0, 0x06, 0x00,           // sample_pool 1536
            0, 0, 0, 0,                 // drops
            0, 0, 0, 3,                 // input
            0, 0, 0, 5,                 // output
            0, 0, 0, 2,                 // flow records
            0, 0, 0, 1,                 // raw packet header
            0, 0, 0, 24,                // length: 4 * 4 + 8
            0, 0, 0, 1,                 // header_protocol Ethernet
            0, 0, 0, 64,                // frame_length
            0, 0, 0, 4,                 // stripped
            0, 0, 0, 6,                 // header_length, unpadded
            0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0, 0,
            0, 0, 0x03, 0xE9,           // extended switch (1001)
            0, 0, 0, 16,
            0, 0, 0, 10,   0, 0, 0, 0,   0, 0, 0, 10,   0, 0, 0, 3,
        ];
        assert_eq!(d.finish(), want);
    }

    #[test]
    fn counter_sample_layout() {
        let s = counters();
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(b.len(), 8 + 4 + 4 + 4 + (8 + 88) + (8 + 52));
        assert_eq!(b[0..8], [0, 0, 0, 2, 0, 0, 0, 168]);
        assert_eq!(b[8..20], [0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 2]);
        // Generic record: prefix at 20, body at 28.
        assert_eq!(b[20..28], [0, 0, 0, 1, 0, 0, 0, 88]);
        assert_eq!(b[28..36], [0, 0, 0, 3, 0, 0, 0, 6]); // ifIndex, ifType
        assert_eq!(b[36..44], [0, 0, 0, 0x02, 0x54, 0x0B, 0xE4, 0x00]); // ifSpeed 10^10
        assert_eq!(b[44..52], [0, 0, 0, 1, 0, 0, 0, 3]); // ifDirection, ifStatus
        assert_eq!(b[52..60], [0, 0, 0, 1, 0, 0, 0, 2]); // ifInOctets
        assert_eq!(b[60..64], [0, 0, 0, 100]); // ifInUcastPkts
        assert_eq!(b[64..68], [0xFF; 4]); // ifInMulticastPkts unknown
        assert_eq!(b[72..76], [0, 0, 0, 7]); // ifInDiscards
        assert_eq!(b[84..92], [0xFF; 8]); // ifOutOctets unknown
        assert_eq!(b[92..96], [0, 0, 0, 200]); // ifOutUcastPkts
        assert_eq!(b[112..116], [0, 0, 0, 2]); // ifPromiscuousMode

        // Ethernet record: prefix at 116, 13 unknown counters.
        assert_eq!(b[116..124], [0, 0, 0, 2, 0, 0, 0, 52]);
        assert_eq!(b[124..], [0xFF; 52]);
    }

    #[test]
    fn output_encodings() {
        assert_eq!(Output::Port(5).encode(), 0x0000_0005);
        assert_eq!(Output::Multiple(3).encode(), 0x8000_0003);
        assert_eq!(Output::Multiple(0).encode(), 0x8000_0000);
        assert_eq!(Output::Discarded(263).encode(), 0x4000_0107);
        assert_eq!(Output::Internal.encode(), 0x3FFF_FFFF);
    }

    #[test]
    fn push_refuses_past_max_len() {
        let f = flow(&HDR); // 96 bytes
        let c = counters(); // 176 bytes
        let mut d = Datagram::new(AGENT, 0, 1, 0, 28 + 96 + 176 + 95);
        assert!(d.push(&f));
        assert!(d.push(&c));
        assert!(!d.push(&f), "one byte short");
        assert_eq!((d.samples(), d.len()), (2, 28 + 96 + 176));
        let b = d.finish();
        assert_eq!(b[24..28], [0, 0, 0, 2]);
        let mut want = Vec::new();
        f.encode(&mut want);
        c.encode(&mut want);
        assert_eq!(b[28..], want[..]);

        let mut exact = Datagram::new(AGENT, 0, 1, 0, 28 + 96);
        assert!(exact.push(&f));
        assert!(!exact.push(&f));
        let mut tiny = Datagram::new(AGENT, 0, 1, 0, 20);
        assert!(!tiny.push(&f));
        assert!(tiny.is_empty());
    }

    #[test]
    fn encoded_len_matches_encode() {
        let hdrs: [&[u8]; 6] = [&[], &[1], &[1, 2, 3], &[0; 4], &[0; 5], &[0; 128]];
        for h in hdrs {
            let s = flow(h);
            let mut b = vec![0xAA]; // encode appends
            s.encode(&mut b);
            assert_eq!(b.len() - 1, s.encoded_len(), "header of {}", h.len());
            assert_eq!(b.len() % 4, 1);
            let n = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize;
            assert_eq!(n + 8, s.encoded_len());
        }
        for s in [counters(), vlan_counters(), drop_notification(&[1, 2, 3])] {
            let mut b = Vec::new();
            s.encode(&mut b);
            assert_eq!(b.len(), s.encoded_len());
            let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
            assert_eq!(n + 8, s.encoded_len());
        }
    }

    #[test]
    fn tshark_decodes_it() {
        let mut d = Datagram::new(AGENT, 0, 7, 1000, 1400);
        // A whole ARP request (42 bytes: padded to 44 in the record).
        #[rustfmt::skip]
        let frame = [
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 9, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 9, 10, 0, 0, 9,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 10,
        ];
        assert!(d.push(&flow(&frame)));
        let Sample::Counters(mut named) = counters() else {
            unreachable!()
        };
        named.name = Some("vm1");
        assert!(d.push(&Sample::Counters(named)));
        assert!(d.push(&vlan_counters()));
        assert!(d.push(&drop_notification(&frame)));
        let dir = std::env::temp_dir().join(format!("pmdswitch-sflow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sflow.pcap");
        pmdswitch_tests::write_udp_pcap(&file, &[d.finish()], DEFAULT_COLLECTOR_PORT);
        let run = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args(["-V", "-Y", "sflow"])
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        let Ok(out) = run else {
            eprintln!("tshark not installed: skipping");
            return;
        };
        let (text, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{err}");
        for want in [
            "InMon sFlow",
            "NumSamples: 4",
            "Raw packet header",
            "Sampled header length: 42",
            "1 out of 512 packets",
            "Address Resolution Protocol (request)",
            "Outgoing 802.1p priority: 3",
            "Interface Speed: 10000000000",
            "Symbol Errors: 4294967295",
            "VLAN ID: 100",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        let lower = text.to_lowercase();
        assert!(lower.contains("flow sample, seq 42"), "{text}");
        assert!(lower.contains("counters sample, seq 9"), "{text}");
        assert!(!lower.contains("malformed"), "{text}");
    }
}
