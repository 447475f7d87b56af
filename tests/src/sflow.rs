//! An sFlow v5 collector for the end-to-end tests: a UDP socket on loopback that keeps every
//! datagram, and a strict decoder written from the specification (every length must add up,
//! as sflowtool checks) for the samples pmdswitch sends.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reads XDR words.
struct Xdr<'a> {
    b: &'a [u8],
    off: usize,
}

impl Xdr<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.b[self.off..self.off + 4].try_into().unwrap());
        self.off += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }
    fn skip(&mut self, n: usize) {
        self.off += n;
    }
    /// An XDR opaque of `len` bytes, padded to 4 (the padding must be zeros).
    fn opaque(&mut self, len: usize) -> Vec<u8> {
        let v = self.b[self.off..self.off + len].to_vec();
        let padded = len.div_ceil(4) * 4;
        assert!(
            self.b[self.off + len..self.off + padded]
                .iter()
                .all(|&b| b == 0),
            "opaque padding is zeros"
        );
        self.off += padded;
        v
    }
    /// A raw packet header record (format 1) after its `format | length` prefix of `rlen`.
    fn raw_header(&mut self, rlen: usize) -> (u32, u32, Vec<u8>) {
        let rend = self.off + rlen;
        assert_eq!(self.u32(), 1, "header protocol: Ethernet");
        let (frame_length, stripped, header_len) = (self.u32(), self.u32(), self.u32());
        assert_eq!(
            rlen,
            16 + (header_len as usize).div_ceil(4) * 4,
            "raw header record length"
        );
        let header = self.opaque(header_len as usize);
        assert_eq!(self.off, rend);
        (frame_length, stripped, header)
    }
}

/// What the datagrams held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Datagram sequence numbers, in arrival order.
    pub datagrams: Vec<u32>,
    /// Flow samples.
    pub flows: Vec<Flow>,
    /// Counter samples of ports.
    pub counters: Vec<Counters>,
    /// Counter samples of VLANs.
    pub vlans: Vec<VlanCounters>,
    /// Dropped-packet notifications.
    pub drops: Vec<DropNote>,
}

/// One VLAN counter sample (format 2, source class 1, record format 5).
#[derive(Debug, Clone, Copy)]
pub struct VlanCounters {
    /// sequence_number.
    pub sequence: u32,
    /// The VLAN id (source index and record's vlan_id agree).
    pub vlan: u32,
    /// octets.
    pub octets: u64,
    /// ucastPkts.
    pub ucast: u32,
    /// multicastPkts.
    pub multicast: u32,
    /// broadcastPkts.
    pub broadcast: u32,
    /// discards.
    pub discards: u32,
}

/// One dropped-packet notification (format 5) with its raw header record.
#[derive(Debug, Clone)]
pub struct DropNote {
    /// sequence_number.
    pub sequence: u32,
    /// source_id_type.
    pub source_class: u32,
    /// source_id_index.
    pub source: u32,
    /// drops (not reported, cumulative).
    pub drops: u32,
    /// input ifIndex (0: unknown).
    pub input: u32,
    /// output ifIndex (0: unknown).
    pub output: u32,
    /// The reason code.
    pub reason: u32,
    /// Raw header: frame_length.
    pub frame_length: u32,
    /// Raw header: stripped.
    pub stripped: u32,
    /// Raw header: the header bytes.
    pub header: Vec<u8>,
}

/// One flow sample (format 1) with its raw header and extended switch records.
#[derive(Debug)]
pub struct Flow {
    /// source_id (ifIndex).
    pub source: u32,
    /// sampling_rate.
    pub rate: u32,
    /// sample_pool.
    pub pool: u32,
    /// input ifIndex.
    pub input: u32,
    /// output: an ifIndex, 0x80000000 | n, or 0x40000000 | reason.
    pub output: u32,
    /// Raw header: frame_length.
    pub frame_length: u32,
    /// Raw header: stripped.
    pub stripped: u32,
    /// Raw header: header_length.
    pub header_len: u32,
    /// Extended switch: src_vlan.
    pub src_vlan: u32,
    /// Extended switch: src_priority.
    pub src_priority: u32,
    /// Extended switch: dst_vlan and dst_priority.
    pub dst: (u32, u32),
    /// Raw header: the frame's first bytes.
    pub header: Vec<u8>,
}

/// One counter sample (format 2) of a port: the generic interface record's fields and the name.
#[derive(Debug, Clone)]
pub struct Counters {
    /// source_id (ifIndex).
    pub source: u32,
    /// ifStatus.
    pub if_status: u32,
    /// ifSpeed, bits/s.
    pub if_speed: u64,
    /// ifInOctets.
    pub in_octets: u64,
    /// ifInUcastPkts, ifInMulticastPkts, ifInBroadcastPkts.
    pub in_cast: [u32; 3],
    /// ifOutUcastPkts, ifOutMulticastPkts, ifOutBroadcastPkts.
    pub out_cast: [u32; 3],
    /// The port name record's name, if the sample had one.
    pub name: Option<String>,
    /// ifInDiscards.
    pub in_discards: u32,
    /// ifInErrors.
    pub in_errors: u32,
    /// ifOutOctets.
    pub out_octets: u64,
    /// ifOutDiscards.
    pub out_discards: u32,
    /// ifOutErrors.
    pub out_errors: u32,
}

/// Parses a datagram strictly (agent 192.0.2.1, sub-agent 0): every length must add up, as
/// sflowtool checks. Returns whether it held a counters sample.
pub fn decode(d: &[u8], out: &mut Decoded) -> bool {
    let counters_before = out.counters.len() + out.vlans.len();
    let mut x = Xdr { b: d, off: 0 };
    assert_eq!(x.u32(), 5, "version");
    assert_eq!(x.u32(), 1, "agent address type IPv4");
    assert_eq!(&d[8..12], &[192, 0, 2, 1], "agent address");
    x.skip(4);
    assert_eq!(x.u32(), 0, "sub-agent id");
    out.datagrams.push(x.u32());
    let _uptime = x.u32();
    let n = x.u32();
    for _ in 0..n {
        let format = x.u32();
        let len = x.u32() as usize;
        let end = x.off + len;
        match format {
            1 => {
                let _seq = x.u32();
                let source = x.u32();
                let (rate, pool, _drops, input, output) =
                    (x.u32(), x.u32(), x.u32(), x.u32(), x.u32());
                assert_eq!(x.u32(), 2, "two flow records");
                assert_eq!(x.u32(), 1, "raw packet header first");
                let rlen = x.u32() as usize;
                let (frame_length, stripped, header) = x.raw_header(rlen);
                let header_len = header.len() as u32;
                assert_eq!(x.u32(), 1001, "extended switch second");
                assert_eq!(x.u32(), 16);
                let src_vlan = x.u32();
                let src_priority = x.u32();
                let dst = (x.u32(), x.u32());
                out.flows.push(Flow {
                    source,
                    rate,
                    pool,
                    input,
                    output,
                    frame_length,
                    stripped,
                    header_len,
                    src_vlan,
                    src_priority,
                    dst,
                    header,
                });
            }
            2 if x.b[x.off + 4] == 1 => {
                // A VLAN's counters: source class 1, index the VLAN id.
                let sequence = x.u32();
                let vlan = x.u32() & 0x00ff_ffff;
                assert_eq!(x.u32(), 1, "one counter record");
                assert_eq!((x.u32(), x.u32()), (5, 28), "VLAN counters");
                assert_eq!(x.u32(), vlan, "vlan_id is the source's index");
                let octets = x.u64();
                let (ucast, multicast, broadcast, discards) = (x.u32(), x.u32(), x.u32(), x.u32());
                out.vlans.push(VlanCounters {
                    sequence,
                    vlan,
                    octets,
                    ucast,
                    multicast,
                    broadcast,
                    discards,
                });
            }
            5 => {
                let sequence = x.u32();
                let (source_class, source, drops) = (x.u32(), x.u32(), x.u32());
                let (input, output, reason) = (x.u32(), x.u32(), x.u32());
                assert_eq!(x.u32(), 1, "one record");
                assert_eq!(x.u32(), 1, "raw packet header");
                let rlen = x.u32() as usize;
                let (frame_length, stripped, header) = x.raw_header(rlen);
                out.drops.push(DropNote {
                    sequence,
                    source_class,
                    source,
                    drops,
                    input,
                    output,
                    reason,
                    frame_length,
                    stripped,
                    header,
                });
            }
            2 => {
                let _seq = x.u32();
                let source = x.u32();
                assert_eq!(source >> 24, 0, "an interface's source is class 0");
                let records = x.u32();
                assert!(records == 2 || records == 3, "two or three counter records");
                assert_eq!((x.u32(), x.u32()), (1, 88), "generic interface counters");
                let if_index = x.u32();
                assert_eq!(if_index, source);
                assert_eq!(x.u32(), 6, "ifType ethernetCsmacd");
                let if_speed = x.u64();
                let _dir = x.u32();
                let if_status = x.u32();
                let in_octets = x.u64();
                let in_cast = [x.u32(), x.u32(), x.u32()];
                let (in_discards, in_errors) = (x.u32(), x.u32());
                x.skip(4); // unknown protos
                let out_octets = x.u64();
                let out_cast = [x.u32(), x.u32(), x.u32()];
                let (out_discards, out_errors) = (x.u32(), x.u32());
                x.skip(4); // promiscuous
                assert_eq!((x.u32(), x.u32()), (2, 52), "ethernet counters");
                x.skip(52);
                let name = (records == 3).then(|| {
                    assert_eq!(x.u32(), 1005, "port name last");
                    let rlen = x.u32() as usize;
                    let n = x.u32() as usize;
                    assert!(n <= 255, "a port name is at most 255 bytes");
                    assert_eq!(rlen, 4 + n.div_ceil(4) * 4, "port name record length");
                    String::from_utf8(x.opaque(n)).expect("a UTF-8 name")
                });
                out.counters.push(Counters {
                    source,
                    if_status,
                    if_speed,
                    in_octets,
                    in_cast,
                    out_cast,
                    name,
                    in_discards,
                    in_errors,
                    out_octets,
                    out_discards,
                    out_errors,
                });
            }
            other => panic!("unexpected sample format {other}"),
        }
        assert_eq!(x.off, end, "sample length adds up (format {format})");
    }
    assert_eq!(x.off, d.len(), "datagram length adds up");
    out.counters.len() + out.vlans.len() > counters_before
}

/// A collector on loopback: its port, the flag that stops it, and the thread that returns
/// every datagram received until then.
pub fn collector() -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(16 << 20)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !s2.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    (port, stop, h)
}
