//! Zero-copy views of the headers a switch reads: Ethernet II and IEEE 802.1Q tags.
//!
//! In the shape of smoltcp's `wire` module: a view wraps a byte buffer, `new_checked` validates
//! the length once, and the getters then read without checking again.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Reads an address from the first six bytes of `b` (which must hold six).
    #[inline(always)]
    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[..6]);
        MacAddr(a)
    }

    /// Group (multicast or broadcast) address: the I/G bit, bit 0 of the first octet.
    #[inline(always)]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// 00:00:00:00:00:00, which names no station.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// A station's address: neither a group address nor all zeros (what the Linux bridge's
    /// `is_valid_ether_addr` accepts). Only these may be a source, learned or configured.
    #[inline(always)]
    pub fn is_individual(self) -> bool {
        !self.is_multicast() && self != Self::ZERO
    }

    /// ff:ff:ff:ff:ff:ff.
    #[inline(always)]
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// 01:80:C2:00:00:00 to 01:80:C2:00:00:0F: the IEEE 802.1D reserved group addresses
    /// (STP BPDUs, pause, LACP, 802.1X, LLDP...) that a bridge must never forward.
    #[inline(always)]
    pub fn is_reserved_group(self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// The address as the low 48 bits of an integer, first octet most significant.
    #[inline(always)]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The inverse of [`MacAddr::to_u64`]; bits above 48 are ignored.
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex octets like 52:54:00:12:34:56)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// The shortest frame on the wire without its FCS (IEEE 802.3's 64-byte minimum less the 4
/// FCS bytes). A NIC's MAC pads shorter frames itself; taps, vhost-user and pcap do not, so
/// the switch pads every frame it sends to this length.
pub const MIN_FRAME_LEN: u32 = 60;

/// EtherType values the switch recognises.
pub mod ethertype {
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// ARP.
    pub const ARP: u16 = 0x0806;
}

/// A frame that cannot be read as Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the 14-byte Ethernet header.
    #[error("frame shorter than an Ethernet header")]
    Runt,
    /// A VLAN TPID with fewer than 4 bytes of tag after it.
    #[error("VLAN tag cut short")]
    TruncatedVlan,
}

mod field {
    pub type Field = std::ops::Range<usize>;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
    /// Within a tag that follows a TPID: TCI then the inner EtherType.
    pub const TAG_TCI: Field = 0..2;
    pub const TAG_ETHERTYPE: Field = 2..4;
    pub const TAG_LEN: usize = 4;
}

/// An Ethernet II frame over a byte buffer.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer that holds at least an Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the buffer holds a whole Ethernet header.
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < field::HEADER_LEN {
            Err(ParseError::Runt)
        } else {
            Ok(())
        }
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType (or TPID, for a tagged frame) after the addresses.
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The bytes after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }

    /// The whole buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }
}

/// An IEEE 802.1Q tag control information field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tci(pub u16);

impl Tci {
    /// Priority code point (0-7).
    pub fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(self) -> bool {
        self.0 & 0x1000 != 0
    }

    /// VLAN identifier (0 = priority tag only, 4095 reserved).
    pub fn vid(self) -> u16 {
        self.0 & 0x0fff
    }
}

/// The parts of a frame's layer-2 header the forwarding decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The outermost VLAN tag, if the frame has one (TPID 0x8100 or 0x88a8).
    pub vlan: Option<Tci>,
    /// The EtherType after every tag.
    pub ethertype: u16,
    /// Bytes of Ethernet header and tags before the layer-3 payload.
    pub header_len: usize,
}

impl L2Header {
    /// Reads the addresses and walks the VLAN tags (up to two: 802.1ad over 802.1Q).
    #[inline(always)]
    pub fn parse(frame: &[u8]) -> Result<L2Header, ParseError> {
        let eth = EthernetFrame::new_checked(frame)?;
        let mut ethertype = eth.ethertype();
        let mut off = field::HEADER_LEN;
        let mut vlan = None;
        for _ in 0..2 {
            if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
                break;
            }
            let tag = frame
                .get(off..off + field::TAG_LEN)
                .ok_or(ParseError::TruncatedVlan)?;
            let tci = u16::from_be_bytes([tag[field::TAG_TCI][0], tag[field::TAG_TCI][1]]);
            vlan.get_or_insert(Tci(tci));
            let t = &tag[field::TAG_ETHERTYPE];
            ethertype = u16::from_be_bytes([t[0], t[1]]);
            off += field::TAG_LEN;
        }
        Ok(L2Header {
            dst: eth.dst_addr(),
            src: eth.src_addr(),
            vlan,
            ethertype,
            header_len: off,
        })
    }

    /// Writes the header described by `self` (without tags beyond one) into `buf`, returning its
    /// length. For building test frames.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut f = EthernetFrame::new_unchecked(&mut *buf);
        f.set_dst_addr(self.dst);
        f.set_src_addr(self.src);
        match self.vlan {
            None => {
                f.set_ethertype(self.ethertype);
                field::HEADER_LEN
            }
            Some(tci) => {
                f.set_ethertype(ethertype::VLAN);
                buf[14..16].copy_from_slice(&tci.0.to_be_bytes());
                buf[16..18].copy_from_slice(&self.ethertype.to_be_bytes());
                field::HEADER_LEN + field::TAG_LEN
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP_REQUEST_HDR: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst broadcast
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
    ];

    #[test]
    fn parses_untagged_header() {
        let h = L2Header::parse(&ARP_REQUEST_HDR).unwrap();
        assert_eq!(h.dst, MacAddr::BROADCAST);
        assert_eq!(h.src, MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(h.vlan, None);
        assert_eq!(h.ethertype, ethertype::ARP);
        assert_eq!(h.header_len, 14);
    }

    #[test]
    fn parses_8021q_tag() {
        let frame = [
            0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x81, 0x00, 0xa0, 0x0a, 0x08, 0x00, 0x45,
        ];
        let h = L2Header::parse(&frame).unwrap();
        let tci = h.vlan.unwrap();
        assert_eq!(tci.vid(), 10);
        assert_eq!(tci.pcp(), 5);
        assert!(!tci.dei());
        assert_eq!(h.ethertype, ethertype::IPV4);
        assert_eq!(h.header_len, 18);
    }

    #[test]
    fn parses_qinq_outer_tag_first() {
        let frame = [
            0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00,
            0x0a, 0x86, 0xdd,
        ];
        let h = L2Header::parse(&frame).unwrap();
        assert_eq!(h.vlan.unwrap().vid(), 100);
        assert_eq!(h.ethertype, ethertype::IPV6);
        assert_eq!(h.header_len, 22);
    }

    #[test]
    fn rejects_runts_and_cut_tags() {
        for len in 0..14 {
            assert_eq!(
                L2Header::parse(&ARP_REQUEST_HDR[..len]),
                Err(ParseError::Runt)
            );
        }
        let mut cut = ARP_REQUEST_HDR.to_vec();
        cut[12..14].copy_from_slice(&[0x81, 0x00]);
        cut.extend_from_slice(&[0x00, 0x0a, 0x08]); // 3 of the 4 tag bytes
        assert_eq!(L2Header::parse(&cut), Err(ParseError::TruncatedVlan));
        cut.push(0x00);
        assert!(L2Header::parse(&cut).is_ok());
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
        assert!(!"52:54:00:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
        for last in 0..=0x0f {
            assert!(MacAddr([1, 0x80, 0xc2, 0, 0, last]).is_reserved_group());
        }
        assert!(!MacAddr([1, 0x80, 0xc2, 0, 0, 0x10]).is_reserved_group());
        assert!(!MacAddr([1, 0x80, 0xc2, 0, 1, 0]).is_reserved_group());
        assert!(!MacAddr::ZERO.is_individual());
        assert!(!MacAddr::BROADCAST.is_individual());
        assert!(!MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_individual());
        assert!(MacAddr([0, 0, 0, 0, 0, 1]).is_individual());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 0]).is_individual());
    }

    #[test]
    fn mac_text_and_integer_round_trip() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(m.to_u64(), 0x5254_00ab_cd0f);
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:0f:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:zz".parse::<MacAddr>().is_err());
        assert!("5:54:00:ab:cd:0f".parse::<MacAddr>().is_err());
    }

    #[test]
    fn emit_round_trips() {
        let h = L2Header {
            dst: MacAddr([2, 0, 0, 0, 0, 9]),
            src: MacAddr([2, 0, 0, 0, 0, 8]),
            vlan: Some(Tci(0x2064)),
            ethertype: ethertype::ARP,
            header_len: 18,
        };
        let mut buf = [0u8; 18];
        assert_eq!(h.emit(&mut buf), 18);
        assert_eq!(L2Header::parse(&buf).unwrap(), h);
    }
}
