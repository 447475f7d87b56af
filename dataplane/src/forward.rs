//! The forwarding decision: a function of the ingress port, the frame's bytes, the bridge's
//! view of its ports and the MAC table. No DPDK here, so it is unit-tested on plain bytes.
#![forbid(unsafe_code)]

use crate::fdb::{Fdb, FdbKey, Learn};
#[cfg(test)]
use crate::packet::L2Header;
use crate::packet::{ethertype, ParseError, Tci};

/// Why a frame was not forwarded. Each reason indexes a per-worker counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// A VLAN TPID with the tag cut short.
    TruncatedVlan,
    /// Payload longer than the bridge's MTU.
    Oversize,
    /// A chained (multi-segment) mbuf: not switched.
    MultiSegment,
    /// Source address is a group address: never valid as a source, never learned.
    SrcMacMulticast,
    /// Destination in 01:80:C2:00:00:00-0F: IEEE 802.1D reserved, never forwarded.
    ReservedDst,
    /// Destination lives on the port the frame came in on (802.1D filtering).
    SameSegment,
    /// Flooded with no other port to send it to.
    NoEgressPort,
    /// The egress tx queue did not take the frame.
    TxFull,
}

impl DropReason {
    /// Number of reasons (the counter array length).
    pub const COUNT: usize = 9;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::TruncatedVlan,
        DropReason::Oversize,
        DropReason::MultiSegment,
        DropReason::SrcMacMulticast,
        DropReason::ReservedDst,
        DropReason::SameSegment,
        DropReason::NoEgressPort,
        DropReason::TxFull,
    ];

    /// Stable name used in stats, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::TruncatedVlan => "truncated_vlan",
            DropReason::Oversize => "oversize",
            DropReason::MultiSegment => "multi_segment",
            DropReason::SrcMacMulticast => "src_mac_multicast",
            DropReason::ReservedDst => "reserved_dst",
            DropReason::SameSegment => "same_segment",
            DropReason::NoEgressPort => "no_egress_port",
            DropReason::TxFull => "tx_full",
        }
    }

    /// The counter index.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The sFlow discard reason (sflow_drops.txt) reported for frames dropped for this reason.
    pub const fn sflow_code(self) -> u16 {
        match self {
            DropReason::Runt => 324,            // pkt_too_small
            DropReason::TruncatedVlan => 309,   // parsing vlan
            DropReason::Oversize => 262,        // pkt_too_big
            DropReason::MultiSegment => 256,    // unknown
            DropReason::SrcMacMulticast => 263, // src_mac_is_multicast
            DropReason::ReservedDst => 294,     // dmac_is_reserved
            DropReason::SameSegment => 268,     // port_loopback_filter
            DropReason::NoEgressPort => 267,    // port_list_is_empty
            DropReason::TxFull => 259,          // no_buffer_space
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it out of this one port.
    Unicast(u16),
    /// Send a copy out of every port of the bridge but the ingress one.
    Flood,
    /// Drop it, counting the reason.
    Drop(DropReason),
}

/// The decision and what learning the source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Where the frame goes.
    pub action: Action,
    /// The MAC table's answer to the source address, when it was learned from.
    pub learn: Option<Learn>,
}

/// The bridge as the decision sees it: the same for every frame of a burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeView {
    /// Ports of the bridge (flood set), by port id.
    pub ports: Vec<u16>,
    /// Largest payload (bytes after the Ethernet header and any VLAN tags) forwarded.
    pub mtu: u32,
}

impl BridgeView {
    /// Ids of the ports a frame from `ingress` floods to.
    pub fn flood_ports(&self, ingress: u16) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().copied().filter(move |&p| p != ingress)
    }
}

/// A frame's header, parsed and hashed ahead of its decision, so that the MAC table buckets
/// of its addresses can be prefetched while the frames before it are decided. Addresses are
/// kept as integers: two 8-byte loads read both, and the table keys are built from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    status: Result<(), ParseError>,
    header_len: u16,
    tci: Option<Tci>,
    dst: u64,
    src: u64,
    src_key: FdbKey,
    dst_key: FdbKey,
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            status: Err(ParseError::Runt),
            header_len: 0,
            tci: None,
            dst: 0,
            src: 0,
            src_key: FdbKey::default(),
            dst_key: FdbKey::default(),
        }
    }
}

impl Prepared {
    /// The frame's outermost VLAN tag, if it parsed and has one.
    #[inline(always)]
    pub fn vlan(&self) -> Option<Tci> {
        self.tci
    }
}

/// The I/G bit of a MAC held in the low 48 bits of an integer.
#[inline(always)]
fn mac_is_multicast(mac: u64) -> bool {
    mac & (1 << 40) != 0
}

/// 01:80:C2:00:00:00-0F, the IEEE 802.1D reserved group addresses.
#[inline(always)]
fn mac_is_reserved_group(mac: u64) -> bool {
    mac & !0xf == 0x0180_c200_0000
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the frame's layer-2 header (as [`L2Header::parse`] does) and hashes (and
/// prefetches) the table keys it will need. The bridge is VLAN-unaware here: every address is
/// keyed in VLAN 0 (shared learning).
#[inline(always)]
pub fn prepare(frame: &[u8], fdb: &Fdb) -> Prepared {
    let mut p = Prepared::default();
    let (Some(w0), Some(w1)) = (frame.get(0..8), frame.get(4..12)) else {
        return p;
    };
    if frame.len() < 14 {
        return p;
    }
    let mut ethertype = be16(frame, 12);
    let mut off = 14usize;
    for _ in 0..2 {
        if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
            break;
        }
        if frame.len() < off + 4 {
            p.status = Err(ParseError::TruncatedVlan);
            return p;
        }
        p.tci.get_or_insert(Tci(be16(frame, off)));
        ethertype = be16(frame, off + 2);
        off += 4;
    }
    p.status = Ok(());
    p.header_len = off as u16;
    p.dst = u64::from_be_bytes(w0.try_into().unwrap_or([0; 8])) >> 16;
    p.src = u64::from_be_bytes(w1.try_into().unwrap_or([0; 8])) & 0xffff_ffff_ffff;
    p.src_key = fdb.key_raw(0, p.src);
    fdb.prefetch(&p.src_key);
    if !mac_is_multicast(p.dst) {
        p.dst_key = fdb.key_raw(0, p.dst);
        fdb.prefetch(&p.dst_key);
    }
    p
}

/// Decides where a frame received on `ingress` goes, learning its source address.
///
/// `frame` is the first segment's bytes; `pkt_len` and `nb_segs` describe the whole packet.
/// Tagged frames are forwarded as they are.
#[inline(always)]
pub fn decide(
    ingress: u16,
    frame: &[u8],
    pkt_len: u32,
    nb_segs: u16,
    bridge: &BridgeView,
    fdb: &Fdb,
    now: u32,
) -> Verdict {
    decide_prepared(
        ingress,
        &prepare(frame, fdb),
        pkt_len,
        nb_segs,
        bridge,
        fdb,
        now,
    )
}

/// [`decide`] for a frame [`prepare`]d earlier.
#[inline(always)]
pub fn decide_prepared(
    ingress: u16,
    p: &Prepared,
    pkt_len: u32,
    nb_segs: u16,
    bridge: &BridgeView,
    fdb: &Fdb,
    now: u32,
) -> Verdict {
    let drop = |r| Verdict {
        action: Action::Drop(r),
        learn: None,
    };
    if nb_segs != 1 {
        return drop(DropReason::MultiSegment);
    }
    match p.status {
        Ok(()) => {}
        Err(ParseError::Runt) => return drop(DropReason::Runt),
        Err(ParseError::TruncatedVlan) => return drop(DropReason::TruncatedVlan),
    }
    if pkt_len.saturating_sub(u32::from(p.header_len)) > bridge.mtu {
        return drop(DropReason::Oversize);
    }
    if mac_is_multicast(p.src) {
        return drop(DropReason::SrcMacMulticast);
    }
    let learn = Some(fdb.learn_key(&p.src_key, ingress, now));
    let action = if mac_is_multicast(p.dst) {
        if mac_is_reserved_group(p.dst) {
            Action::Drop(DropReason::ReservedDst)
        } else {
            flood_or_drop(ingress, bridge)
        }
    } else {
        match fdb.lookup_key(&p.dst_key) {
            Some(q) if q == ingress => Action::Drop(DropReason::SameSegment),
            Some(q) => Action::Unicast(q),
            None => flood_or_drop(ingress, bridge),
        }
    };
    Verdict { action, learn }
}

fn flood_or_drop(ingress: u16, bridge: &BridgeView) -> Action {
    if bridge.flood_ports(ingress).next().is_some() {
        Action::Flood
    } else {
        Action::Drop(DropReason::NoEgressPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MacAddr;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    fn bridge() -> BridgeView {
        BridgeView {
            ports: vec![0, 1, 2],
            mtu: 1500,
        }
    }

    fn run(fdb: &Fdb, ingress: u16, f: &[u8]) -> Action {
        decide(ingress, f, f.len() as u32, 1, &bridge(), fdb, 0).action
    }

    #[test]
    fn unknown_unicast_floods_then_learned_unicast_goes_direct() {
        let fdb = Fdb::new(64);
        assert_eq!(run(&fdb, 0, &frame(B, A)), Action::Flood);
        assert_eq!(fdb.lookup(0, MacAddr(A)), Some(0));
        assert_eq!(run(&fdb, 1, &frame(A, B)), Action::Unicast(0));
        assert_eq!(run(&fdb, 0, &frame(B, A)), Action::Unicast(1));
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let fdb = Fdb::new(64);
        assert_eq!(run(&fdb, 2, &frame(BCAST, A)), Action::Flood);
        assert_eq!(
            run(&fdb, 2, &frame([0x01, 0, 0x5e, 0, 0, 1], A)),
            Action::Flood
        );
        assert_eq!(
            run(&fdb, 2, &frame([0x33, 0x33, 0, 0, 0, 1], A)),
            Action::Flood
        );
    }

    #[test]
    fn never_back_out_of_the_ingress_port() {
        let fdb = Fdb::new(64);
        run(&fdb, 1, &frame(BCAST, B));
        assert_eq!(
            run(&fdb, 1, &frame(B, A)),
            Action::Drop(DropReason::SameSegment)
        );
        assert_eq!(bridge().flood_ports(1).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn mac_move_follows_the_latest_source() {
        let fdb = Fdb::new(64);
        run(&fdb, 0, &frame(BCAST, A));
        let v = decide(2, &frame(BCAST, A), 60, 1, &bridge(), &fdb, 0);
        assert_eq!(v.learn, Some(Learn::Moved { from: 0 }));
        assert_eq!(run(&fdb, 1, &frame(A, B)), Action::Unicast(2));
    }

    #[test]
    fn bad_frames_are_dropped_by_reason_and_not_learned() {
        let fdb = Fdb::new(64);
        let ok = frame(B, A);
        assert_eq!(run(&fdb, 0, &ok[..13]), Action::Drop(DropReason::Runt));
        let mut cut = ok[..12].to_vec();
        cut.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(run(&fdb, 0, &cut), Action::Drop(DropReason::TruncatedVlan));
        let mut big = frame(B, A);
        big.resize(14 + 1501, 0);
        assert_eq!(run(&fdb, 0, &big), Action::Drop(DropReason::Oversize));
        big.truncate(14 + 1500);
        assert_eq!(run(&fdb, 0, &big), Action::Flood, "exactly the MTU is fine");
        assert_eq!(
            decide(0, &ok, 3000, 2, &bridge(), &fdb, 0).action,
            Action::Drop(DropReason::MultiSegment)
        );
        let fdb = Fdb::new(64);
        let mcast_src = [0x01, 0, 0x5e, 0, 0, 9];
        assert_eq!(
            run(&fdb, 0, &frame(B, mcast_src)),
            Action::Drop(DropReason::SrcMacMulticast)
        );
        assert!(fdb.is_empty(), "a bad frame's source is never learned");
    }

    #[test]
    fn tagged_frames_get_room_for_the_tag() {
        let fdb = Fdb::new(64);
        let mut f = frame(B, A);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f.splice(14..14, [0x00, 0x0a, 0x08, 0x00]);
        f.resize(18 + 1500, 0);
        assert_eq!(run(&fdb, 0, &f), Action::Flood);
    }

    #[test]
    fn reserved_group_destinations_are_never_forwarded() {
        let fdb = Fdb::new(64);
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        let lldp = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
        assert_eq!(
            run(&fdb, 0, &frame(stp, A)),
            Action::Drop(DropReason::ReservedDst)
        );
        assert_eq!(
            run(&fdb, 0, &frame(lldp, A)),
            Action::Drop(DropReason::ReservedDst)
        );
    }

    /// The integer fast path reads headers exactly as the typed views do.
    #[test]
    fn prepare_agrees_with_the_header_view() {
        let fdb = Fdb::new(64);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often a tag or two, so the VLAN walk is exercised.
            if len >= 14 && next() % 2 == 0 {
                f[12..14].copy_from_slice(&[0x81, 0x00]);
                if len >= 18 && next() % 2 == 0 {
                    f[16..18].copy_from_slice(&[0x88, 0xa8]);
                }
            }
            let p = prepare(&f, &fdb);
            match L2Header::parse(&f) {
                Ok(h) => {
                    assert_eq!(p.status, Ok(()));
                    assert_eq!((p.dst, p.src), (h.dst.to_u64(), h.src.to_u64()), "{f:02x?}");
                    assert_eq!(usize::from(p.header_len), h.header_len);
                    assert_eq!(p.tci, h.vlan);
                    assert_eq!(mac_is_multicast(p.dst), h.dst.is_multicast());
                    assert_eq!(mac_is_reserved_group(p.dst), h.dst.is_reserved_group());
                    assert_eq!(p.src_key, fdb.key(0, h.src));
                }
                Err(e) => assert_eq!(p.status, Err(e), "{f:02x?}"),
            }
        }
    }

    #[test]
    fn a_lone_port_has_nowhere_to_flood() {
        let fdb = Fdb::new(64);
        let lone = BridgeView {
            ports: vec![5],
            mtu: 1500,
        };
        let f = frame(BCAST, A);
        assert_eq!(
            decide(5, &f, 60, 1, &lone, &fdb, 0).action,
            Action::Drop(DropReason::NoEgressPort)
        );
    }
}
