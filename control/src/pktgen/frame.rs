//! The generator's test frames: Ethernet (optionally 802.1Q-tagged), IPv4 and UDP in the
//! RFC 2544 benchmarking range (198.18.0.0/15), carrying a signature the receiver matches:
//! stream id, sequence number and the transmit TSC.
//!
//! Sizes are Ethernet frame sizes as RFC 2544 counts them, FCS included: a 64-byte frame is
//! 60 bytes in the buffer (the device adds the FCS).

/// Bytes a frame holds beyond what is in the buffer: the FCS the device appends.
pub const FCS_BYTES: usize = 4;
/// Smallest frame size (bytes, with FCS): Ethernet's minimum.
pub const MIN_SIZE: u16 = 64;
/// Largest frame size (bytes, with FCS): a 9000-byte MTU's frame and two tags fit.
pub const MAX_SIZE: u16 = 9022;
/// Per-frame bytes on the wire beyond the frame: preamble, start delimiter and inter-frame gap.
pub const WIRE_OVERHEAD: u64 = 20;
/// UDP destination port of every test frame: how the receiver tells them from other traffic.
pub const UDP_PORT: u16 = 0x5047;
/// Epoch (the stream id's high byte) of learning frames: received, counted apart, never
/// measured. Trials number their streams with epochs 1 to 254, so frames a previous trial
/// left in flight are told apart too.
pub const LEARN_EPOCH: u8 = 0xff;
/// Bytes of the signature after the UDP header: stream (2), sequence (4), transmit TSC (8).
pub const SIGNATURE_BYTES: usize = 14;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPV4_BYTES: usize = 20;
const UDP_BYTES: usize = 8;
const MAC_BYTES: usize = 6;

/// The MAC address of flow `flow` (0 to 2^24 - 1) in address set `set` (one set per port and
/// direction): locally administered unicast, `02:50:set:flow(24 bits)`.
pub fn flow_mac(set: u8, flow: u32) -> [u8; 6] {
    let f = flow.to_be_bytes();
    [0x02, 0x50, set, f[1], f[2], f[3]]
}

/// How the frames of one stream look; every field but the flow index, sequence and time is
/// fixed per stream, so a burst is built by copying a header and patching a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamShape {
    /// Stream id carried in the signature.
    pub stream: u16,
    /// Address set of the sources (flow f sends from `flow_mac(src_set, f)`).
    pub src_set: u8,
    /// Address set of the destinations (flow f sends to `flow_mac(dst_set, f)`).
    pub dst_set: u8,
    /// 802.1Q tag to carry: VLAN id (1-4094) and PCP (0-7); None for untagged frames.
    pub vlan: Option<(u16, u8)>,
}

/// Builds one stream's frames of one size: a prepared header, patched per frame.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    header: Vec<u8>,
    /// Offset of the signature (just after the UDP header).
    sig_at: usize,
    /// Bytes in the buffer (the size without FCS).
    len: u16,
}

impl FrameTemplate {
    /// The template for frames of `size` bytes (FCS included) of the stream `shape`. None when
    /// the size is outside 64 to 9022 bytes.
    pub fn new(shape: StreamShape, size: u16) -> Option<FrameTemplate> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return None;
        }
        let len = size - FCS_BYTES as u16;
        let mut h = Vec::with_capacity(64);
        h.extend_from_slice(&flow_mac(shape.dst_set, 0));
        h.extend_from_slice(&flow_mac(shape.src_set, 0));
        if let Some((vid, pcp)) = shape.vlan {
            h.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            let tci = (u16::from(pcp & 7) << 13) | (vid & 0x0fff);
            h.extend_from_slice(&tci.to_be_bytes());
        }
        h.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip_at = h.len();
        let ip_len = usize::from(len) - ip_at;
        let ip_len16 = u16::try_from(ip_len).expect("frames are shorter than 64 KiB");
        let mut ip = [0u8; IPV4_BYTES];
        ip[0] = 0x45; // version 4, 5 words of header
        ip[2..4].copy_from_slice(&ip_len16.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&[198, 18, shape.src_set, 1]);
        ip[16..20].copy_from_slice(&[198, 19, shape.dst_set, 1]);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(&ip);
        let udp_len = ip_len16 - IPV4_BYTES as u16;
        h.extend_from_slice(&(0xc000 | (shape.stream & 0x3fff)).to_be_bytes());
        h.extend_from_slice(&UDP_PORT.to_be_bytes());
        h.extend_from_slice(&udp_len.to_be_bytes());
        h.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        let sig_at = h.len();
        h.extend_from_slice(&shape.stream.to_be_bytes());
        debug_assert!(sig_at + SIGNATURE_BYTES <= usize::from(len));
        Some(FrameTemplate {
            header: h,
            sig_at,
            len,
        })
    }

    /// Bytes in the buffer (the frame without FCS).
    pub fn len(&self) -> u16 {
        self.len
    }

    /// The epoch of the stream (its id's high byte).
    pub fn epoch(&self) -> u8 {
        self.header[self.sig_at]
    }

    /// Writes a frame of flow `flow` with sequence `seq` and transmit time `tsc` into `buf`
    /// (exactly [`FrameTemplate::len`] bytes; the padding after the signature is left as the
    /// buffer holds it).
    #[inline(always)]
    pub fn write(&self, buf: &mut [u8], flow: u32, seq: u32, tsc: u64) {
        let h = &self.header;
        buf[..h.len()].copy_from_slice(h);
        let f = flow.to_be_bytes();
        buf[3..6].copy_from_slice(&f[1..4]);
        buf[MAC_BYTES + 3..MAC_BYTES + 6].copy_from_slice(&f[1..4]);
        let s = self.sig_at + 2;
        buf[s..s + 4].copy_from_slice(&seq.to_be_bytes());
        buf[s + 4..s + 12].copy_from_slice(&tsc.to_le_bytes());
    }
}

/// What a received test frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Stream id: epoch (high byte) and sending port (low byte).
    pub stream: u16,
    /// Sequence number within the stream.
    pub seq: u32,
    /// The sender's TSC when the frame's burst was built.
    pub tsc: u64,
}

/// Reads the signature of a received frame (untagged or with one 802.1Q tag); None for any
/// other frame (not IPv4/UDP to [`UDP_PORT`], or too short).
#[inline(always)]
pub fn parse(frame: &[u8]) -> Option<Signature> {
    let mut at = 2 * MAC_BYTES;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    if ethertype == ETHERTYPE_VLAN {
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(at + 2..at + 2 + IPV4_BYTES)?;
    if ip[0] != 0x45 || ip[9] != 17 {
        return None;
    }
    let udp_at = at + 2 + IPV4_BYTES;
    let sig = frame.get(udp_at..udp_at + UDP_BYTES + SIGNATURE_BYTES)?;
    if u16::from_be_bytes([sig[2], sig[3]]) != UDP_PORT {
        return None;
    }
    let s = &sig[UDP_BYTES..];
    Some(Signature {
        stream: u16::from_be_bytes([s[0], s[1]]),
        seq: u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        tsc: u64::from_le_bytes(s[6..14].try_into().expect("8 bytes")),
    })
}

/// The Internet checksum (RFC 1071) of an IPv4 header whose checksum field is zero.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Frame sizes a stream cycles through: one size, or IMIX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeMix {
    /// Every frame this size (bytes, FCS included).
    Fixed(u16),
    /// The simple IMIX: 7 frames of 64 bytes, 4 of 570, 1 of 1518, interleaved.
    Imix,
}

/// IMIX's order of sizes over one period of 12 frames (7:4:1 of 64/570/1518).
pub const IMIX_PATTERN: [u16; 12] = [64, 570, 64, 64, 1518, 570, 64, 64, 570, 64, 570, 64];

impl SizeMix {
    /// The sizes of one period, in sending order.
    pub fn pattern(&self) -> Vec<u16> {
        match self {
            SizeMix::Fixed(s) => vec![*s],
            SizeMix::Imix => IMIX_PATTERN.to_vec(),
        }
    }

    /// Mean frame size in bytes (FCS included).
    pub fn mean_size(&self) -> f64 {
        let p = self.pattern();
        p.iter().map(|&s| f64::from(s)).sum::<f64>() / p.len() as f64
    }

    /// Largest frame size in bytes.
    pub fn max_size(&self) -> u16 {
        self.pattern().into_iter().max().unwrap_or(MIN_SIZE)
    }

    /// Frames per second that fill `gbps` of line rate, counting preamble and gap.
    pub fn line_rate_pps(&self, gbps: f64) -> f64 {
        gbps * 1e9 / ((self.mean_size() + WIRE_OVERHEAD as f64) * 8.0)
    }

    /// The label used in tables and JSON: "64" or "imix".
    pub fn label(&self) -> String {
        match self {
            SizeMix::Fixed(s) => s.to_string(),
            SizeMix::Imix => "imix".into(),
        }
    }
}

impl std::str::FromStr for SizeMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeMix::Imix);
        }
        let v: u16 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a frame size: give bytes (64 to 9022) or imix"))?;
        if !(MIN_SIZE..=MAX_SIZE).contains(&v) {
            return Err(format!(
                "frame size {v} is out of range: {MIN_SIZE} to {MAX_SIZE} bytes (FCS included)"
            ));
        }
        Ok(SizeMix::Fixed(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(vlan: Option<(u16, u8)>) -> StreamShape {
        StreamShape {
            stream: 3,
            src_set: 0,
            dst_set: 1,
            vlan,
        }
    }

    #[test]
    fn a_64_byte_frame_is_60_bytes_in_the_buffer_and_reads_back() {
        for vlan in [None, Some((10, 5))] {
            let t = FrameTemplate::new(shape(vlan), 64).unwrap();
            assert_eq!(t.len(), 60);
            let mut buf = vec![0xaa; 60];
            t.write(&mut buf, 0x01_0203, 0xdead_beef, 0x1122_3344_5566_7788);
            assert_eq!(&buf[0..6], &[0x02, 0x50, 1, 1, 2, 3]);
            assert_eq!(&buf[6..12], &[0x02, 0x50, 0, 1, 2, 3]);
            let sig = parse(&buf).unwrap();
            assert_eq!(
                sig,
                Signature {
                    stream: 3,
                    seq: 0xdead_beef,
                    tsc: 0x1122_3344_5566_7788
                }
            );
        }
        let t = FrameTemplate::new(shape(Some((10, 5))), 64).unwrap();
        let mut buf = vec![0; 60];
        t.write(&mut buf, 0, 0, 0);
        assert_eq!(
            &buf[12..16],
            &[0x81, 0x00, 0xa0, 0x0a],
            "TPID, PCP 5, VID 10"
        );
    }

    #[test]
    fn ip_and_udp_lengths_and_checksum_follow_the_size() {
        let t = FrameTemplate::new(shape(None), 1518).unwrap();
        let mut buf = vec![0; usize::from(t.len())];
        t.write(&mut buf, 7, 1, 2);
        let ip = &buf[14..34];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 1500);
        assert_eq!(
            ipv4_checksum(ip),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(&ip[12..16], &[198, 18, 0, 1]);
        assert_eq!(u16::from_be_bytes([buf[38], buf[39]]), 1480, "UDP length");
    }

    #[test]
    fn other_frames_have_no_signature() {
        assert_eq!(parse(&[0u8; 10]), None);
        let t = FrameTemplate::new(shape(None), 64).unwrap();
        let mut buf = vec![0; 60];
        t.write(&mut buf, 0, 0, 0);
        buf[36] ^= 1; // another UDP port
        assert_eq!(parse(&buf), None);
        assert_eq!(parse(&buf[..40]), None);
    }

    #[test]
    fn sizes_parse_with_errors_that_say_what_is_allowed() {
        assert_eq!("64".parse::<SizeMix>(), Ok(SizeMix::Fixed(64)));
        assert_eq!("IMIX".parse::<SizeMix>(), Ok(SizeMix::Imix));
        assert!("63".parse::<SizeMix>().unwrap_err().contains("64 to 9022"));
        assert!(FrameTemplate::new(shape(None), 9023).is_none());
        let imix = SizeMix::Imix;
        assert_eq!(imix.pattern().iter().filter(|&&s| s == 64).count(), 7);
        assert_eq!(imix.pattern().iter().filter(|&&s| s == 570).count(), 4);
        assert!((imix.mean_size() - 353.833).abs() < 0.01);
        // 10 Gbit/s of 64-byte frames: 14.88 Mpps.
        let p = SizeMix::Fixed(64).line_rate_pps(10.0);
        assert!((p - 14_880_952.4).abs() < 1.0, "{p}");
    }
}
