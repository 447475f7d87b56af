//! The forwarding decision: a function of the ingress port, the frame's bytes, the bridge's
//! view of its ports and the MAC table. No DPDK here, so it is unit-tested on plain bytes.
#![forbid(unsafe_code)]

use crate::fdb::{Fdb, FdbKey, Learn, Probes};
#[cfg(test)]
use crate::packet::L2Header;
use crate::packet::{ethertype, MacAddr, ParseError, Tci};

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
    /// A chained (multi-segment) frame for a port whose device sends only one segment, too
    /// large to be made one.
    MultiSegment,
    /// Source address is not an individual address: a group address (I/G bit set, broadcast
    /// included) or all zeros. IEEE 802.1D learns only individual addresses, and the Linux
    /// bridge drops such frames (`is_valid_ether_addr`); never learned, never forwarded.
    SrcMacInvalid,
    /// Destination in 01:80:C2:00:00:00-0F: IEEE 802.1D reserved, never forwarded.
    ReservedDst,
    /// Destination lives on the port the frame came in on (802.1D filtering).
    SameSegment,
    /// Flooded with no other port to send it to.
    NoEgressPort,
    /// The egress tx queue did not take the frame (or no buffer was left for a copy).
    TxFull,
    /// A VLAN-tagged frame (VID != 0) arrived on an access port.
    VlanTagMismatch,
    /// The frame's VLAN is not carried by its ingress port (or an untagged frame arrived on a
    /// trunk that has no native VLAN).
    IngressVlanFilter,
    /// The learned egress port no longer carries the frame's VLAN.
    EgressVlanFilter,
    /// Port security: the source address is not in the port's `allowed_macs`.
    SrcMacNotAllowed,
    /// Port security: the port already holds `max_macs` addresses and this source is new.
    MacLimit,
    /// A BPDU arrived on a port with `bpdu_guard`.
    BpduGuard,
    /// The ingress (or the learned egress) port is shut down.
    PortDisabled,
    /// Storm control: over the port's broadcast, multicast or unknown-unicast rate.
    StormControl,
    /// Over the port's ingress policing rate.
    IngressPolicing,
    /// Over the egress port's rate limit.
    EgressRateLimit,
    /// Longer than the egress port's device sends (its MTU): refused there, dropped for that
    /// port only (a bridge cannot fragment).
    EgressOversize,
    /// The egress port's link is down: a VM port with no guest connected (or with no queue
    /// enabled). Floods leave such a port out; this counts what was sent to it alone.
    LinkDown,
}

impl DropReason {
    /// Number of reasons (the counter array length).
    pub const COUNT: usize = 21;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::TruncatedVlan,
        DropReason::Oversize,
        DropReason::MultiSegment,
        DropReason::SrcMacInvalid,
        DropReason::ReservedDst,
        DropReason::SameSegment,
        DropReason::NoEgressPort,
        DropReason::TxFull,
        DropReason::VlanTagMismatch,
        DropReason::IngressVlanFilter,
        DropReason::EgressVlanFilter,
        DropReason::SrcMacNotAllowed,
        DropReason::MacLimit,
        DropReason::BpduGuard,
        DropReason::PortDisabled,
        DropReason::StormControl,
        DropReason::IngressPolicing,
        DropReason::EgressRateLimit,
        DropReason::EgressOversize,
        DropReason::LinkDown,
    ];

    /// Stable name used in stats, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::TruncatedVlan => "truncated_vlan",
            DropReason::Oversize => "oversize",
            DropReason::MultiSegment => "multi_segment",
            DropReason::SrcMacInvalid => "src_mac_invalid",
            DropReason::ReservedDst => "reserved_dst",
            DropReason::SameSegment => "same_segment",
            DropReason::NoEgressPort => "no_egress_port",
            DropReason::TxFull => "tx_full",
            DropReason::VlanTagMismatch => "vlan_tag_mismatch",
            DropReason::IngressVlanFilter => "ingress_vlan_filter",
            DropReason::EgressVlanFilter => "egress_vlan_filter",
            DropReason::SrcMacNotAllowed => "src_mac_not_allowed",
            DropReason::MacLimit => "mac_limit",
            DropReason::BpduGuard => "bpdu_guard",
            DropReason::PortDisabled => "port_disabled",
            DropReason::StormControl => "storm_control",
            DropReason::IngressPolicing => "ingress_policing",
            DropReason::EgressRateLimit => "egress_rate_limit",
            DropReason::EgressOversize => "egress_oversize",
            DropReason::LinkDown => "link_down",
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
            DropReason::Runt => 324,              // pkt_too_small
            DropReason::TruncatedVlan => 309,     // parsing vlan
            DropReason::Oversize => 262,          // pkt_too_big
            DropReason::MultiSegment => 256,      // unknown
            DropReason::SrcMacInvalid => 263,     // src_mac_is_multicast (none for all zeros)
            DropReason::ReservedDst => 294,       // dmac_is_reserved
            DropReason::SameSegment => 268,       // port_loopback_filter
            DropReason::NoEgressPort => 267,      // port_list_is_empty
            DropReason::TxFull => 259,            // no_buffer_space
            DropReason::VlanTagMismatch => 264,   // vlan_tag_mismatch
            DropReason::IngressVlanFilter => 265, // ingress_vlan_filter
            DropReason::EgressVlanFilter => 301,  // egress_vlan_filter
            DropReason::SrcMacNotAllowed => 258,  // acl
            DropReason::MacLimit => 258,          // acl
            DropReason::BpduGuard => 266,         // ingress_spanning_tree_filter
            DropReason::PortDisabled => 266,      // ingress_spanning_tree_filter (port blocked)
            DropReason::StormControl => 261,      // traffic_shaping
            DropReason::IngressPolicing => 261,   // traffic_shaping
            DropReason::EgressRateLimit => 261,   // traffic_shaping
            DropReason::EgressOversize => 262,    // pkt_too_big
            DropReason::LinkDown => 267,          // port_list_is_empty (none left that is up)
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it out of this one port.
    Unicast(u16),
    /// Send a copy out of every port in this mask (bit n: port id n).
    Flood(u64),
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
    /// For a unicast: the frame leaves as it came, its tagging unchanged.
    pub as_is: bool,
}

/// Most ports a bridge view describes (port ids 0..64: one bit each in a mask).
pub const MAX_BRIDGE_PORTS: usize = 64;
/// VLAN ids: 0 is the untagged domain of VLAN-unaware trunk ports, 1..=4094 are VLANs.
pub const VLAN_IDS: usize = 4096;
/// "No VLAN": untagged frames on this port are not admitted.
pub const NO_VLAN: u16 = 0xffff;
/// The highest VLAN id a port may be configured with (4095 is reserved).
pub const MAX_VLAN: u16 = 4094;

/// How a bridge treats frames between its local ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeMode {
    /// Virtual Ethernet Bridge: local ports switch to each other directly.
    #[default]
    Veb,
    /// Virtual Ethernet Port Aggregator (IEEE 802.1Qbg): every frame from a local port goes to
    /// the uplink; the adjacent switch reflects what is for local ports back ("hairpin").
    Vepa,
}

/// A port's VLAN membership (IEEE 802.1Q).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// One VLAN, untagged on the wire. Priority-tagged frames (VID 0) belong to it; other
    /// tagged frames are dropped.
    Access {
        /// The VLAN (1..=4094).
        vlan: u16,
    },
    /// Tagged VLANs, plus an optional native VLAN that is untagged on the wire.
    Trunk {
        /// The VLANs carried tagged (empty: all of 1..=4094).
        trunks: Vec<u16>,
        /// Untagged frames belong to it and leave untagged. None with no trunk list: untagged
        /// frames are in VLAN 0 (a VLAN-unaware port); None with a list: they are dropped.
        native: Option<u16>,
    },
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Trunk {
            trunks: Vec::new(),
            native: None,
        }
    }
}

/// A rate limit in bits per second with a burst in bytes (srTCM CIR and CBS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bits per second.
    pub bits_per_sec: u64,
    /// Bucket size in bytes.
    pub burst_bytes: u64,
}

/// Storm control: most frames per second of each flooded kind a port may send in (None: no
/// limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StormLimits {
    /// Broadcast frames per second.
    pub broadcast_pps: Option<u64>,
    /// Multicast (not broadcast) frames per second.
    pub multicast_pps: Option<u64>,
    /// Unicast frames to unknown destinations per second.
    pub unknown_unicast_pps: Option<u64>,
}

impl StormLimits {
    /// True when any kind is limited.
    pub fn any(&self) -> bool {
        self.broadcast_pps.is_some()
            || self.multicast_pps.is_some()
            || self.unknown_unicast_pps.is_some()
    }

    /// The limit of one kind.
    pub fn of(&self, kind: FloodKind) -> Option<u64> {
        match kind {
            FloodKind::Broadcast => self.broadcast_pps,
            FloodKind::Multicast => self.multicast_pps,
            FloodKind::UnknownUnicast => self.unknown_unicast_pps,
        }
    }
}

/// The kinds of flooded traffic storm control limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// ff:ff:ff:ff:ff:ff.
    Broadcast = 0,
    /// Any other group address.
    Multicast = 1,
    /// A unicast destination not in the table.
    UnknownUnicast = 2,
}

/// Everything configured on one port that the forwarding decision applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortPolicy {
    /// VLAN membership.
    pub vlan: VlanMode,
    /// The port towards the adjacent switch (VEPA's uplink).
    pub uplink: bool,
    /// Port security: only these sources are accepted (empty: any).
    pub allowed_macs: Vec<MacAddr>,
    /// Port security: most addresses learned on the port.
    pub max_macs: Option<u32>,
    /// BPDUs arriving are dropped and counted.
    pub bpdu_guard: bool,
    /// ... and the port shuts itself down when one arrives.
    pub bpdu_guard_shutdown: bool,
    /// Storm control.
    pub storm: StormLimits,
    /// Ingress policing.
    pub ingress_policing: Option<RateLimit>,
    /// Egress rate limit.
    pub egress_rate: Option<RateLimit>,
    /// Largest payload (bytes after the Ethernet header and its tags) the port takes in or
    /// sends out; None: the bridge's MTU.
    pub mtu: Option<u32>,
}

const CHECK_ALLOWED: u8 = 1;
const CHECK_BPDU: u8 = 2;
const CHECK_POLICE: u8 = 4;
const CHECK_STORM: u8 = 8;

/// The per-port facts read for every frame, packed small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ingress {
    /// VLAN of untagged and priority-tagged frames (NO_VLAN: not admitted).
    pvid: u16,
    /// Tagged frames (VID != 0) are refused.
    access: bool,
    /// The uplink port.
    uplink: bool,
    /// CHECK_* bits: which optional checks apply.
    checks: u8,
    /// Port security's address limit (u32::MAX: none).
    max_macs: u32,
    /// Largest payload taken in (the port's MTU).
    mtu: u32,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            pvid: NO_VLAN,
            access: false,
            uplink: false,
            checks: 0,
            max_macs: u32::MAX,
            mtu: 0,
        }
    }
}

/// One VLAN's ports, read together for every frame in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(32))]
struct VlanPorts {
    /// Ports carrying the VLAN.
    members: u64,
    /// Members that forward (not shut down): where frames of the VLAN may go.
    live: u64,
    /// Members where the VLAN leaves untagged.
    untagged: u64,
}

/// What the decision reads about the port a burst came in on: looked up once per burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressCtx {
    port: u16,
    bit: u64,
    enabled: bool,
    vepa: bool,
    ing: Ingress,
}

impl IngressCtx {
    /// The port id.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port forwards (it is not shut down).
    #[inline(always)]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The port's MTU: the largest payload taken in.
    #[inline(always)]
    pub fn mtu(&self) -> u32 {
        self.ing.mtu
    }
}

/// How much of the edge a view needs decided per frame. The fast path is compiled once per
/// tier with what the tier makes moot left out; every tier decides as [`Tier::Full`] would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// A VLAN-unaware VEB whose ports check nothing at ingress.
    Plain,
    /// A VEB whose ports check nothing at ingress (no port security, BPDU guard, storm
    /// control or policing), VLANs or not.
    Lean,
    /// Everything.
    Full,
}

/// Rate checks the decision asks of the worker that owns the meters (DPDK's rte_meter there;
/// plain counters in tests). Asked only for ports configured with the limit.
pub trait Limits {
    /// Takes `bytes` from the port's ingress policer: true when the frame conforms.
    fn police(&mut self, port: u16, bytes: u32) -> bool;
    /// Takes one frame of `kind` from the port's storm-control bucket: true when it conforms.
    fn storm(&mut self, port: u16, kind: FloodKind) -> bool;
}

/// No rate limits at all.
pub struct Unlimited;

impl Limits for Unlimited {
    fn police(&mut self, _: u16, _: u32) -> bool {
        true
    }
    fn storm(&mut self, _: u16, _: FloodKind) -> bool {
        true
    }
}

/// The bridge as the decision sees it: an immutable snapshot, replaced as a whole when the
/// configuration changes and picked up by the workers between bursts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeView {
    /// The bridge's MTU: a port's unless it has its own (bytes after the Ethernet header and
    /// any VLAN tags).
    pub mtu: u32,
    /// VEB or VEPA.
    pub mode: BridgeMode,
    uplink: Option<u16>,
    /// Ports that forward (configured and not shut down), one bit per port id.
    enabled: u64,
    /// Ports whose link is down (a VM port without its guest), one bit per port id.
    link_down: u64,
    ingress: [Ingress; MAX_BRIDGE_PORTS],
    /// Per port id: its configuration, if it is a port of the bridge.
    policies: Vec<Option<PortPolicy>>,
    /// Per port id: its allowed sources as integers, sorted.
    allowed: Vec<Vec<u64>>,
    /// Per VLAN: which ports carry it, forward, and leave it untagged.
    vlans: Box<[VlanPorts; VLAN_IDS]>,
    /// Per port id: rx queues it has (rate limits are shared out over them).
    rx_queues: [u16; MAX_BRIDGE_PORTS],
    /// Workers that transmit (egress rate limits are shared out over them).
    pub workers: u16,
    /// A VLAN-unaware VEB with no ingress checks: the fast path may skip the edge's work.
    plain: bool,
    /// A VEB whose ports check nothing at ingress (VLANs allowed).
    lean: bool,
}

#[inline(always)]
const fn bit(port: u16) -> u64 {
    1u64 << (port as u32 & 63)
}

impl BridgeView {
    /// A VLAN-unaware VEB of `ports` (every port a trunk of all VLANs): today's default.
    pub fn plain(ports: &[u16], mtu: u32) -> BridgeView {
        let ports: Vec<(u16, PortPolicy)> =
            ports.iter().map(|&p| (p, PortPolicy::default())).collect();
        BridgeView::new(mtu, BridgeMode::Veb, &ports)
    }

    /// A view of `ports` (id, policy) with every port enabled. Policies are taken as validated
    /// (VLAN ids in 1..=4094, ids < MAX_BRIDGE_PORTS); out-of-range values are masked, never
    /// trusted as indices.
    pub fn new(mtu: u32, mode: BridgeMode, ports: &[(u16, PortPolicy)]) -> BridgeView {
        let mut v = BridgeView {
            mtu,
            mode,
            uplink: None,
            enabled: 0,
            link_down: 0,
            ingress: [Ingress::default(); MAX_BRIDGE_PORTS],
            policies: vec![None; MAX_BRIDGE_PORTS],
            allowed: vec![Vec::new(); MAX_BRIDGE_PORTS],
            vlans: vec![VlanPorts::default(); VLAN_IDS]
                .into_boxed_slice()
                .try_into()
                .expect("VLAN_IDS entries"),
            rx_queues: [1; MAX_BRIDGE_PORTS],
            workers: 1,
            plain: mode == BridgeMode::Veb,
            lean: mode == BridgeMode::Veb,
        };
        let vid = |x: u16| usize::from(x & 0x0fff);
        for (id, pol) in ports {
            let i = usize::from(*id);
            if i >= MAX_BRIDGE_PORTS {
                continue;
            }
            let b = bit(*id);
            v.enabled |= b;
            let ing = &mut v.ingress[i];
            match &pol.vlan {
                VlanMode::Access { vlan } => {
                    v.vlans[vid(*vlan)].members |= b;
                    v.vlans[vid(*vlan)].untagged |= b;
                    ing.pvid = *vlan & 0x0fff;
                    ing.access = true;
                }
                VlanMode::Trunk { trunks, native } => {
                    if trunks.is_empty() {
                        for m in &mut v.vlans[1..=usize::from(MAX_VLAN)] {
                            m.members |= b;
                        }
                    }
                    for t in trunks {
                        v.vlans[vid(*t)].members |= b;
                    }
                    match native {
                        Some(n) => {
                            v.vlans[vid(*n)].members |= b;
                            v.vlans[vid(*n)].untagged |= b;
                            ing.pvid = *n & 0x0fff;
                        }
                        None if trunks.is_empty() => {
                            v.vlans[0].members |= b;
                            v.vlans[0].untagged |= b;
                            ing.pvid = 0;
                        }
                        None => ing.pvid = NO_VLAN,
                    }
                }
            }
            ing.uplink = pol.uplink;
            if pol.uplink && v.uplink.is_none() {
                v.uplink = Some(*id);
            }
            ing.max_macs = pol.max_macs.unwrap_or(u32::MAX);
            ing.mtu = pol.mtu.unwrap_or(mtu);
            let mut checks = 0;
            if !pol.allowed_macs.is_empty() {
                checks |= CHECK_ALLOWED;
                let mut a: Vec<u64> = pol.allowed_macs.iter().map(|m| m.to_u64()).collect();
                a.sort_unstable();
                v.allowed[i] = a;
            }
            if pol.bpdu_guard {
                checks |= CHECK_BPDU;
            }
            if pol.ingress_policing.is_some() {
                checks |= CHECK_POLICE;
            }
            if pol.storm.any() {
                checks |= CHECK_STORM;
            }
            ing.checks = checks;
            if checks != 0 || pol.max_macs.is_some() {
                v.lean = false;
            }
            if !v.lean || pol.vlan != VlanMode::default() {
                v.plain = false;
            }
            v.policies[i] = Some(pol.clone());
        }
        v.refresh_live();
        v
    }

    fn refresh_live(&mut self) {
        let forwarding = self.enabled & !self.link_down;
        for vp in self.vlans.iter_mut() {
            vp.live = vp.members & forwarding;
        }
    }

    /// The same view with `port`'s link down (or up again): a port whose link is down takes
    /// no flood, and a frame for it alone is dropped as `link_down`.
    pub fn with_port_link(&self, port: u16, up: bool) -> BridgeView {
        let mut v = self.clone();
        if usize::from(port) < MAX_BRIDGE_PORTS && v.policies[usize::from(port)].is_some() {
            if up {
                v.link_down &= !bit(port);
            } else {
                v.link_down |= bit(port);
            }
            v.refresh_live();
        }
        v
    }

    /// True when `port`'s link is down.
    #[inline(always)]
    pub fn is_link_down(&self, port: u16) -> bool {
        self.link_down & bit(port) != 0
    }

    /// The same view with `port` shut down (or brought back).
    pub fn with_port_enabled(&self, port: u16, enabled: bool) -> BridgeView {
        let mut v = self.clone();
        if usize::from(port) < MAX_BRIDGE_PORTS && v.policies[usize::from(port)].is_some() {
            if enabled {
                v.enabled |= bit(port);
            } else {
                v.enabled &= !bit(port);
            }
            v.refresh_live();
        }
        v
    }

    /// Records how many rx queues each port has and how many workers send, so that rate
    /// limits can be shared out over them.
    pub fn set_queue_counts(&mut self, rx_queues: &[(u16, u16)], workers: u16) {
        for &(port, n) in rx_queues {
            if let Some(q) = self.rx_queues.get_mut(usize::from(port)) {
                *q = n.max(1);
            }
        }
        self.workers = workers.max(1);
    }

    /// Rx queues of `port`.
    pub fn rx_queues(&self, port: u16) -> u16 {
        self.rx_queues.get(usize::from(port)).copied().unwrap_or(1)
    }

    /// The MTU of `port` (the bridge's for a port that is not one of its own).
    pub fn port_mtu(&self, port: u16) -> u32 {
        self.policy(port).and_then(|p| p.mtu).unwrap_or(self.mtu)
    }

    /// The configuration of `port`, if it is a port of this bridge.
    pub fn policy(&self, port: u16) -> Option<&PortPolicy> {
        self.policies
            .get(usize::from(port))
            .and_then(|p| p.as_ref())
    }

    /// Ports of the bridge, by id.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| i as u16)
    }

    /// True when `port` forwards (configured and not shut down).
    #[inline(always)]
    pub fn is_enabled(&self, port: u16) -> bool {
        self.enabled & bit(port) != 0
    }

    /// The uplink port, if one is configured.
    pub fn uplink(&self) -> Option<u16> {
        self.uplink
    }

    /// Ports carrying `vlan`, as a mask.
    #[inline(always)]
    pub fn members(&self, vlan: u16) -> u64 {
        self.vlans[usize::from(vlan & 0x0fff)].members
    }

    /// True when a frame in `vlan` leaves `port` with a tag.
    #[inline(always)]
    pub fn egress_tagged(&self, vlan: u16, port: u16) -> bool {
        self.vlans[usize::from(vlan & 0x0fff)].untagged & bit(port) == 0
    }

    /// Ports where `vlan` leaves untagged, as a mask.
    #[inline(always)]
    pub fn untagged(&self, vlan: u16) -> u64 {
        self.vlans[usize::from(vlan & 0x0fff)].untagged
    }

    #[inline(always)]
    fn ingress(&self, port: u16) -> &Ingress {
        &self.ingress[usize::from(port) & (MAX_BRIDGE_PORTS - 1)]
    }

    /// How much of the edge this view needs decided per frame.
    #[inline(always)]
    pub fn tier(&self) -> Tier {
        if self.plain {
            Tier::Plain
        } else if self.lean {
            Tier::Lean
        } else {
            Tier::Full
        }
    }

    /// The facts about `port` every frame of a burst from it needs.
    #[inline(always)]
    pub fn ingress_ctx(&self, port: u16) -> IngressCtx {
        IngressCtx {
            port,
            bit: bit(port),
            enabled: self.is_enabled(port),
            vepa: self.mode == BridgeMode::Vepa,
            ing: *self.ingress(port),
        }
    }

    /// True when `port` takes BPDUs as a reason to shut itself down.
    pub fn shuts_down_on_bpdu(&self, port: u16) -> bool {
        self.policy(port).is_some_and(|p| p.bpdu_guard_shutdown)
    }
}

/// A frame's header, parsed, classified into its VLAN and hashed ahead of its decision, so that
/// the MAC-table lines of its addresses can be prefetched while the frames before it are
/// decided. Addresses are kept as integers: two 8-byte loads read both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    status: Result<(), ParseError>,
    header_len: u16,
    tci: Option<Tci>,
    /// The frame's VLAN (NO_VLAN: not admitted on its port).
    vlan: u16,
    /// How it is on the wire: FORM_UNTAGGED, FORM_TAGGED (tag with the bridge's VID) or
    /// FORM_OTHER_TAG (a priority tag, to be rewritten or removed on the way out).
    form: u8,
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
            vlan: NO_VLAN,
            form: FORM_UNTAGGED,
            dst: 0,
            src: 0,
            src_key: FdbKey::default(),
            dst_key: FdbKey::default(),
        }
    }
}

impl Prepared {
    /// The frame's outermost VLAN tag as it arrived, if it parsed and has one.
    #[inline(always)]
    pub fn tag(&self) -> Option<Tci> {
        self.tci
    }

    /// The VLAN the frame belongs to on the bridge (its port's VLAN when it arrived untagged or
    /// priority-tagged), or None when its port does not admit it.
    #[inline(always)]
    pub fn vlan(&self) -> Option<u16> {
        (self.vlan != NO_VLAN).then_some(self.vlan)
    }

    /// How the frame is on the wire: FORM_UNTAGGED, FORM_TAGGED (tagged with its VLAN's VID)
    /// or FORM_OTHER_TAG (priority-tagged).
    #[inline(always)]
    pub fn form(&self) -> u8 {
        self.form
    }

    /// The source address, in the low 48 bits.
    #[inline(always)]
    pub fn src(&self) -> u64 {
        self.src
    }

    /// What the destination address is: one station's, a multicast group's or broadcast.
    #[inline(always)]
    pub fn dst_cast(&self) -> Cast {
        if !mac_is_multicast(self.dst) {
            Cast::Unicast
        } else if self.dst == BROADCAST {
            Cast::Broadcast
        } else {
            Cast::Multicast
        }
    }

    /// The 802.1p priority it arrived with (0 when untagged).
    #[inline(always)]
    pub fn pcp(&self) -> u8 {
        self.tci.map_or(0, |t| t.pcp())
    }
}

/// A destination address by kind, as interface counters split frames (RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    /// An individual address (I/G bit clear).
    Unicast,
    /// A group address other than broadcast.
    Multicast,
    /// FF:FF:FF:FF:FF:FF.
    Broadcast,
}

/// A frame without a VLAN tag.
pub const FORM_UNTAGGED: u8 = 0;
/// A frame tagged with its VLAN's VID: as it should leave a tagged port.
pub const FORM_TAGGED: u8 = 1;
/// A frame with a tag of another VID (a priority tag): rewritten or removed on the way out.
pub const FORM_OTHER_TAG: u8 = 2;

/// The I/G bit of a MAC held in the low 48 bits of an integer.
#[inline(always)]
fn mac_is_multicast(mac: u64) -> bool {
    mac & (1 << 40) != 0
}

/// A valid station address: neither a group address nor all zeros (the Linux bridge's
/// `is_valid_ether_addr`). Only these are learned, and only these may be a frame's source.
#[inline(always)]
fn mac_is_individual(mac: u64) -> bool {
    mac != 0 && !mac_is_multicast(mac)
}

/// 01:80:C2:00:00:00-0F, the IEEE 802.1D reserved group addresses.
#[inline(always)]
fn mac_is_reserved_group(mac: u64) -> bool {
    mac & !0xf == 0x0180_c200_0000
}

/// 01:80:C2:00:00:00, where (R/M)STP BPDUs go.
const BPDU_DST: u64 = 0x0180_c200_0000;
const BROADCAST: u64 = 0xffff_ffff_ffff;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the frame's layer-2 header (as [`L2Header::parse`] does), puts it in its VLAN as
/// ingress port `ingress` classifies it, and hashes (and prefetches) the table keys it needs.
/// `EDGE = false` is for a [`Tier::Plain`] view only: it skips what such a view makes moot and
/// decides the same.
#[inline(always)]
pub fn prepare<const EDGE: bool>(
    frame: &[u8],
    ctx: &IngressCtx,
    bridge: &BridgeView,
    fdb: &Fdb,
) -> Prepared {
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
    (p.vlan, p.form) = match p.tci {
        // A plain view: every port is a trunk of VLANs 1-4094 whose untagged frames are VLAN 0.
        None if !EDGE => (0, FORM_UNTAGGED),
        None => (ctx.ing.pvid, FORM_UNTAGGED),
        Some(t) if !EDGE && t.vid() != 0 => {
            if t.vid() == 0x0fff {
                (NO_VLAN, FORM_TAGGED)
            } else {
                (t.vid(), FORM_TAGGED)
            }
        }
        Some(t) if t.vid() != 0 => {
            if ctx.ing.access || bridge.members(t.vid()) & ctx.bit == 0 {
                (NO_VLAN, FORM_TAGGED)
            } else {
                (t.vid(), FORM_TAGGED)
            }
        }
        Some(_) => (ctx.ing.pvid, FORM_OTHER_TAG),
    };
    let vlan = p.vlan & 0x0fff;
    p.src_key = fdb.key_raw(vlan, p.src);
    fdb.prefetch(&p.src_key);
    if !mac_is_multicast(p.dst) {
        p.dst_key = fdb.key_raw(vlan, p.dst);
        fdb.prefetch(&p.dst_key);
    }
    p
}

/// Decides where a frame received on `ingress` goes, learning its source address.
///
/// `frame` is the first segment's bytes (where the headers are); `pkt_len` is the whole
/// packet's length, all segments.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn decide(
    ingress: u16,
    frame: &[u8],
    pkt_len: u32,
    bridge: &BridgeView,
    fdb: &Fdb,
    limits: &mut impl Limits,
    now: u32,
) -> Verdict {
    let ctx = bridge.ingress_ctx(ingress);
    let p = prepare::<true>(frame, &ctx, bridge, fdb);
    let probes = &mut Probes::default();
    decide_prepared::<true, true>(&ctx, &p, pkt_len, bridge, fdb, limits, now, probes)
}

/// [`decide`] for a frame [`prepare`]d earlier (with the same `EDGE`). `CHECKS = false` is for
/// a [`Tier::Plain`] or [`Tier::Lean`] view only: it skips the checks, VEPA and learning
/// limits, and decides the same.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn decide_prepared<const EDGE: bool, const CHECKS: bool>(
    ctx: &IngressCtx,
    p: &Prepared,
    pkt_len: u32,
    bridge: &BridgeView,
    fdb: &Fdb,
    limits: &mut impl Limits,
    now: u32,
    probes: &mut Probes,
) -> Verdict {
    let drop = |r| Verdict {
        action: Action::Drop(r),
        learn: None,
        as_is: false,
    };
    let ingress = ctx.port;
    if !ctx.enabled {
        return drop(DropReason::PortDisabled);
    }
    match p.status {
        Ok(()) => {}
        Err(ParseError::Runt) => return drop(DropReason::Runt),
        Err(ParseError::TruncatedVlan) => return drop(DropReason::TruncatedVlan),
    }
    let ing = &ctx.ing;
    // Before VLAN admission: BPDUs are untagged, and a trunk without a native VLAN (or an
    // access port, for a tagged one) would otherwise drop them unseen by the guard.
    if CHECKS && ing.checks & CHECK_BPDU != 0 && p.dst == BPDU_DST {
        return drop(DropReason::BpduGuard);
    }
    if p.vlan == NO_VLAN {
        let tagged = p.tci.is_some_and(|t| t.vid() != 0);
        return drop(if tagged && ing.access {
            DropReason::VlanTagMismatch
        } else {
            DropReason::IngressVlanFilter
        });
    }
    if pkt_len.saturating_sub(u32::from(p.header_len)) > ing.mtu {
        return drop(DropReason::Oversize);
    }
    if !mac_is_individual(p.src) {
        return drop(DropReason::SrcMacInvalid);
    }
    if CHECKS && ing.checks != 0 {
        if ing.checks & CHECK_ALLOWED != 0
            && bridge.allowed[usize::from(ingress) & (MAX_BRIDGE_PORTS - 1)]
                .binary_search(&p.src)
                .is_err()
        {
            return drop(DropReason::SrcMacNotAllowed);
        }
        if ing.checks & CHECK_POLICE != 0 && !limits.police(ingress, pkt_len) {
            return drop(DropReason::IngressPolicing);
        }
    }
    let vepa = CHECKS && ctx.vepa;
    // A VEPA never learns from its uplink: reflected frames carry local sources, and every
    // frame of a local port goes to the uplink whatever the table says.
    let learn = if vepa && ing.uplink {
        None
    } else {
        if CHECKS {
            let l = fdb.learn_key(&p.src_key, ingress, now, ing.max_macs, probes);
            if l == Learn::Limited {
                return drop(DropReason::MacLimit);
            }
            Some(l)
        } else {
            Some(fdb.learn_key(&p.src_key, ingress, now, u32::MAX, probes))
        }
    };
    let vlan = p.vlan;
    let kind = if mac_is_multicast(p.dst) {
        if mac_is_reserved_group(p.dst) {
            return Verdict {
                action: Action::Drop(DropReason::ReservedDst),
                learn,
                as_is: false,
            };
        }
        if p.dst == BROADCAST {
            FloodKind::Broadcast
        } else {
            FloodKind::Multicast
        }
    } else if vepa && !ing.uplink {
        // Every unicast goes to the uplink alone: nothing is flooded here, so unknown-unicast
        // storm control has nothing to hold (and the uplink never learns, so every address
        // behind it would count as unknown).
        let (action, as_is) = to_uplink(bridge, p);
        return Verdict {
            action,
            learn,
            as_is,
        };
    } else {
        let vp = &bridge.vlans[usize::from(vlan & 0x0fff)];
        let mut as_is = false;
        let action = match fdb.lookup_key(&p.dst_key, probes) {
            Some(q) if q == ingress => Action::Drop(DropReason::SameSegment),
            Some(q) if vp.live & bit(q) != 0 => {
                as_is = p.form == u8::from(vp.untagged & bit(q) == 0);
                Action::Unicast(q)
            }
            Some(q) if !bridge.is_enabled(q) => Action::Drop(DropReason::PortDisabled),
            Some(q) if bridge.is_link_down(q) && vp.members & bit(q) != 0 => {
                Action::Drop(DropReason::LinkDown)
            }
            Some(_) => Action::Drop(DropReason::EgressVlanFilter),
            None => {
                return flood(
                    ingress,
                    p,
                    !CHECKS || kind_limit(ing, limits, ingress, FloodKind::UnknownUnicast),
                    bridge,
                    fdb,
                    learn,
                    vepa,
                    probes,
                )
            }
        };
        return Verdict {
            action,
            learn,
            as_is,
        };
    };
    let allowed = !CHECKS || kind_limit(ing, limits, ingress, kind);
    if vepa && !ing.uplink {
        let (action, as_is) = if allowed {
            to_uplink(bridge, p)
        } else {
            (Action::Drop(DropReason::StormControl), false)
        };
        return Verdict {
            action,
            learn,
            as_is,
        };
    }
    flood(ingress, p, allowed, bridge, fdb, learn, vepa, probes)
}

/// [`prepare`] compiled for the view's tier.
#[inline(always)]
pub fn prepare_in(
    tier: Tier,
    frame: &[u8],
    ctx: &IngressCtx,
    bridge: &BridgeView,
    fdb: &Fdb,
) -> Prepared {
    match tier {
        Tier::Plain => prepare::<false>(frame, ctx, bridge, fdb),
        Tier::Lean | Tier::Full => prepare::<true>(frame, ctx, bridge, fdb),
    }
}

/// [`decide_prepared`] compiled for the view's tier, for a frame [`prepare_in`] the same tier.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn decide_in(
    tier: Tier,
    ctx: &IngressCtx,
    p: &Prepared,
    pkt_len: u32,
    bridge: &BridgeView,
    fdb: &Fdb,
    limits: &mut impl Limits,
    now: u32,
    probes: &mut Probes,
) -> Verdict {
    let (b, l) = (bridge, limits);
    match tier {
        Tier::Plain => decide_prepared::<false, false>(ctx, p, pkt_len, b, fdb, l, now, probes),
        Tier::Lean => decide_prepared::<true, false>(ctx, p, pkt_len, b, fdb, l, now, probes),
        Tier::Full => decide_prepared::<true, true>(ctx, p, pkt_len, b, fdb, l, now, probes),
    }
}

/// Storm control's verdict on one flooded frame: true when it may go.
#[inline(always)]
fn kind_limit(ing: &Ingress, limits: &mut impl Limits, port: u16, kind: FloodKind) -> bool {
    ing.checks & CHECK_STORM == 0 || limits.storm(port, kind)
}

/// VEPA: a local port's frame goes to the uplink, if there is one carrying its VLAN.
#[inline(always)]
fn to_uplink(bridge: &BridgeView, p: &Prepared) -> (Action, bool) {
    let vp = &bridge.vlans[usize::from(p.vlan & 0x0fff)];
    match bridge.uplink {
        Some(u) if vp.live & bit(u) != 0 => (
            Action::Unicast(u),
            p.form == u8::from(vp.untagged & bit(u) == 0),
        ),
        Some(u) if bridge.is_link_down(u) && vp.members & bit(u) != 0 => {
            (Action::Drop(DropReason::LinkDown), false)
        }
        _ => (Action::Drop(DropReason::NoEgressPort), false),
    }
}

/// Floods within the frame's VLAN, never back out of the ingress port; from a VEPA's uplink,
/// never back to the port its source lives on (a reflected frame must not return to its sender).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn flood(
    ingress: u16,
    p: &Prepared,
    allowed: bool,
    bridge: &BridgeView,
    fdb: &Fdb,
    learn: Option<Learn>,
    vepa: bool,
    probes: &mut Probes,
) -> Verdict {
    if !allowed {
        return Verdict {
            action: Action::Drop(DropReason::StormControl),
            learn,
            as_is: false,
        };
    }
    let mut mask = bridge.vlans[usize::from(p.vlan & 0x0fff)].live & !bit(ingress);
    if vepa {
        if let Some(src_port) = fdb.lookup_key(&p.src_key, probes) {
            mask &= !bit(src_port);
        }
    }
    let action = if mask == 0 {
        Action::Drop(DropReason::NoEgressPort)
    } else {
        Action::Flood(mask)
    };
    Verdict {
        action,
        learn,
        as_is: false,
    }
}

/// The ports of a flood mask, lowest id first.
#[inline(always)]
pub fn mask_ports(mut mask: u64) -> impl Iterator<Item = u16> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let p = mask.trailing_zeros() as u16;
        mask &= mask - 1;
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MacAddr;

    /// A seeded xorshift64 stream: repeatable random tests.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

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
        BridgeView::plain(&[0, 1, 2], 1500)
    }

    /// Ports 0, 1, 2 as a VLAN-unaware bridge.
    const ALL_BUT: fn(u16) -> u64 = |p| 0b111 & !(1 << p);

    fn run(fdb: &Fdb, ingress: u16, f: &[u8]) -> Action {
        decide(
            ingress,
            f,
            f.len() as u32,
            &bridge(),
            fdb,
            &mut Unlimited,
            0,
        )
        .action
    }

    fn run_on(b: &BridgeView, fdb: &Fdb, ingress: u16, f: &[u8]) -> Action {
        decide(ingress, f, f.len() as u32, b, fdb, &mut Unlimited, 0).action
    }

    #[test]
    fn unknown_unicast_floods_then_learned_unicast_goes_direct() {
        let fdb = Fdb::new(64);
        assert_eq!(run(&fdb, 0, &frame(B, A)), Action::Flood(ALL_BUT(0)));
        assert_eq!(fdb.lookup(0, MacAddr(A)), Some(0));
        assert_eq!(run(&fdb, 1, &frame(A, B)), Action::Unicast(0));
        assert_eq!(run(&fdb, 0, &frame(B, A)), Action::Unicast(1));
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let fdb = Fdb::new(64);
        assert_eq!(run(&fdb, 2, &frame(BCAST, A)), Action::Flood(ALL_BUT(2)));
        assert_eq!(
            run(&fdb, 2, &frame([0x01, 0, 0x5e, 0, 0, 1], A)),
            Action::Flood(ALL_BUT(2))
        );
        assert_eq!(
            run(&fdb, 2, &frame([0x33, 0x33, 0, 0, 0, 1], A)),
            Action::Flood(ALL_BUT(2))
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
        assert_eq!(mask_ports(ALL_BUT(1)).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn mac_move_follows_the_latest_source() {
        let fdb = Fdb::new(64);
        run(&fdb, 0, &frame(BCAST, A));
        let v = decide(2, &frame(BCAST, A), 60, &bridge(), &fdb, &mut Unlimited, 0);
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
        assert_eq!(
            run(&fdb, 0, &big),
            Action::Flood(ALL_BUT(0)),
            "exactly the MTU is fine"
        );
        assert_eq!(
            decide(0, &ok, 3000, &bridge(), &fdb, &mut Unlimited, 0).action,
            Action::Drop(DropReason::Oversize),
            "a chained frame is decided by its whole length"
        );
        let fdb = Fdb::new(64);
        let mcast_src = [0x01, 0, 0x5e, 0, 0, 9];
        assert_eq!(
            run(&fdb, 0, &frame(B, mcast_src)),
            Action::Drop(DropReason::SrcMacInvalid)
        );
        assert!(fdb.is_empty(), "a bad frame's source is never learned");
    }

    /// A source must be an individual address: a group address (broadcast included) or all
    /// zeros is dropped under one reason and never learned, in every tier, whatever the
    /// destination; a frame sent to the zero address afterwards still floods.
    #[test]
    fn sources_that_are_not_individual_addresses_are_dropped_in_every_tier() {
        let views = [
            bridge(),
            vlan_bridge(),
            BridgeView::new(
                1500,
                BridgeMode::Veb,
                &[
                    (
                        0,
                        PortPolicy {
                            max_macs: Some(8),
                            ..PortPolicy::default()
                        },
                    ),
                    (1, PortPolicy::default()),
                    (2, PortPolicy::default()),
                ],
            ),
        ];
        assert_eq!(
            views.iter().map(BridgeView::tier).collect::<Vec<_>>(),
            [Tier::Plain, Tier::Lean, Tier::Full]
        );
        const ZERO: [u8; 6] = [0; 6];
        for view in &views {
            let fdb = Fdb::new(64);
            for src in [
                ZERO,
                BCAST,
                [0x01, 0, 0x5e, 0, 0, 1],
                [0x33, 0x33, 0, 0, 0, 1],
            ] {
                for dst in [B, BCAST, ZERO] {
                    let ctx = view.ingress_ctx(0);
                    let f = frame(dst, src);
                    let p = prepare_in(view.tier(), &f, &ctx, view, &fdb);
                    let v = decide_in(
                        view.tier(),
                        &ctx,
                        &p,
                        60,
                        view,
                        &fdb,
                        &mut Unlimited,
                        0,
                        &mut Probes::default(),
                    );
                    assert_eq!(
                        (v.action, v.learn),
                        (Action::Drop(DropReason::SrcMacInvalid), None),
                        "{:?} from {src:02x?} to {dst:02x?}",
                        view.tier()
                    );
                }
            }
            assert!(fdb.is_empty(), "{:?}: nothing learned", view.tier());
            // The zero address is no station: frames to it are unknown unicast, flooded.
            let to_zero = run_on(view, &fdb, 0, &frame(ZERO, A));
            assert!(matches!(to_zero, Action::Flood(_)), "{to_zero:?}");
        }
        assert_eq!(DropReason::SrcMacInvalid.sflow_code(), 263);
    }

    /// Each port takes in payloads up to its own MTU (the bridge's when it has none).
    #[test]
    fn a_port_takes_frames_up_to_its_own_mtu() {
        let jumbo = PortPolicy {
            mtu: Some(9000),
            ..PortPolicy::default()
        };
        let b = BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[(0, jumbo), (1, PortPolicy::default())],
        );
        assert_eq!(
            (b.port_mtu(0), b.port_mtu(1), b.port_mtu(7)),
            (9000, 1500, 1500)
        );
        let fdb = Fdb::new(64);
        let f = frame(BCAST, A);
        let go = |port, len| decide(port, &f, len, &b, &fdb, &mut Unlimited, 0).action;
        assert_eq!(go(0, 14 + 9000), Action::Flood(0b10));
        assert_eq!(go(0, 14 + 9001), Action::Drop(DropReason::Oversize));
        assert_eq!(go(1, 14 + 1500), Action::Flood(0b01));
        assert_eq!(go(1, 14 + 1501), Action::Drop(DropReason::Oversize));
    }

    #[test]
    fn tagged_frames_get_room_for_the_tag() {
        let fdb = Fdb::new(64);
        let mut f = frame(B, A);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f.splice(14..14, [0x00, 0x0a, 0x08, 0x00]);
        f.resize(18 + 1500, 0);
        assert_eq!(run(&fdb, 0, &f), Action::Flood(ALL_BUT(0)));
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
        let mut next = xorshift(0x1234_5678_9abc_def0u64);
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often a tag or two, so the VLAN walk is exercised.
            if len >= 14 && next().is_multiple_of(2) {
                f[12..14].copy_from_slice(&[0x81, 0x00]);
                if len >= 18 && next().is_multiple_of(2) {
                    f[16..18].copy_from_slice(&[0x88, 0xa8]);
                }
            }
            let b = bridge();
            let p = prepare::<true>(&f, &b.ingress_ctx(0), &b, &fdb);
            match L2Header::parse(&f) {
                Ok(h) => {
                    assert_eq!(p.status, Ok(()));
                    assert_eq!((p.dst, p.src), (h.dst.to_u64(), h.src.to_u64()), "{f:02x?}");
                    assert_eq!(usize::from(p.header_len), h.header_len);
                    assert_eq!(p.tci, h.vlan);
                    assert_eq!(mac_is_multicast(p.dst), h.dst.is_multicast());
                    assert_eq!(mac_is_reserved_group(p.dst), h.dst.is_reserved_group());
                    let vlan = h.vlan.map_or(0, |t| t.vid());
                    assert_eq!(p.src_key, fdb.key(vlan, h.src));
                }
                Err(e) => assert_eq!(p.status, Err(e), "{f:02x?}"),
            }
        }
    }

    #[test]
    fn a_lone_port_has_nowhere_to_flood() {
        let fdb = Fdb::new(64);
        let lone = BridgeView::plain(&[5], 1500);
        let f = frame(BCAST, A);
        assert_eq!(
            run_on(&lone, &fdb, 5, &f),
            Action::Drop(DropReason::NoEgressPort)
        );
    }

    fn tagged(dst: [u8; 6], src: [u8; 6], tci: u16) -> Vec<u8> {
        let mut f = frame(dst, src);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f.splice(14..14, tci.to_be_bytes().into_iter().chain([0x08, 0x00]));
        f
    }

    fn access(vlan: u16) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Access { vlan },
            ..PortPolicy::default()
        }
    }

    fn trunk(trunks: &[u16], native: Option<u16>) -> PortPolicy {
        PortPolicy {
            vlan: VlanMode::Trunk {
                trunks: trunks.to_vec(),
                native,
            },
            ..PortPolicy::default()
        }
    }

    /// 0, 1: access VLAN 10; 2: access VLAN 20; 3: trunk of 10 and 20 with native 30.
    fn vlan_bridge() -> BridgeView {
        BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[
                (0, access(10)),
                (1, access(10)),
                (2, access(20)),
                (3, trunk(&[10, 20], Some(30))),
            ],
        )
    }

    #[test]
    fn access_ports_flood_only_within_their_vlan() {
        let b = vlan_bridge();
        let fdb = Fdb::new(64);
        assert_eq!(run_on(&b, &fdb, 0, &frame(BCAST, A)), Action::Flood(0b1010));
        assert_eq!(run_on(&b, &fdb, 2, &frame(BCAST, B)), Action::Flood(0b1000));
        assert_eq!(fdb.lookup(10, MacAddr(A)), Some(0));
        assert_eq!(fdb.lookup(20, MacAddr(B)), Some(2));
        assert_eq!(fdb.lookup(0, MacAddr(A)), None, "learned in its VLAN only");
        // B is unknown in VLAN 10: flooded there, never to port 2.
        assert_eq!(run_on(&b, &fdb, 0, &frame(B, A)), Action::Flood(0b1010));
        assert!(b.egress_tagged(10, 3) && !b.egress_tagged(10, 1));
    }

    #[test]
    fn ingress_vlan_rules() {
        let b = vlan_bridge();
        let fdb = Fdb::new(64);
        assert_eq!(
            run_on(&b, &fdb, 0, &tagged(BCAST, A, 10)),
            Action::Drop(DropReason::VlanTagMismatch),
            "tagged frames are refused on an access port, even of its own VLAN"
        );
        assert_eq!(
            run_on(&b, &fdb, 0, &tagged(BCAST, A, 0xa000)),
            Action::Flood(0b1010),
            "a priority tag (VID 0) belongs to the access VLAN"
        );
        assert_eq!(
            run_on(&b, &fdb, 3, &tagged(BCAST, B, 99)),
            Action::Drop(DropReason::IngressVlanFilter)
        );
        assert_eq!(
            run_on(&b, &fdb, 3, &tagged(BCAST, B, 20)),
            Action::Flood(0b0100)
        );
        // Untagged on the trunk: its native VLAN 30, which no other port carries.
        assert_eq!(
            run_on(&b, &fdb, 3, &frame(BCAST, B)),
            Action::Drop(DropReason::NoEgressPort)
        );
        assert_eq!(fdb.lookup(30, MacAddr(B)), Some(3));
        let strict = BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[(0, trunk(&[5], None)), (1, access(5))],
        );
        assert_eq!(
            run_on(&strict, &fdb, 0, &frame(BCAST, A)),
            Action::Drop(DropReason::IngressVlanFilter),
            "a trunk with a list and no native VLAN admits only tagged frames"
        );
    }

    #[test]
    fn the_same_mac_in_two_vlans_is_two_entries() {
        let b = vlan_bridge();
        let fdb = Fdb::new(64);
        run_on(&b, &fdb, 0, &frame(BCAST, A));
        run_on(&b, &fdb, 2, &frame(BCAST, A));
        assert_eq!(fdb.lookup(10, MacAddr(A)), Some(0));
        assert_eq!(fdb.lookup(20, MacAddr(A)), Some(2));
        assert_eq!(run_on(&b, &fdb, 3, &tagged(A, B, 20)), Action::Unicast(2));
        assert_eq!(run_on(&b, &fdb, 3, &tagged(A, B, 10)), Action::Unicast(0));
    }

    /// 0: uplink; 1, 2: VM ports. All VLAN-unaware.
    fn vepa() -> BridgeView {
        let up = PortPolicy {
            uplink: true,
            ..PortPolicy::default()
        };
        BridgeView::new(
            1500,
            BridgeMode::Vepa,
            &[
                (0, up),
                (1, PortPolicy::default()),
                (2, PortPolicy::default()),
            ],
        )
    }

    #[test]
    fn vepa_sends_everything_from_vms_to_the_uplink() {
        let b = vepa();
        let fdb = Fdb::new(64);
        run_on(&b, &fdb, 2, &frame(BCAST, B));
        assert_eq!(
            run_on(&b, &fdb, 1, &frame(B, A)),
            Action::Unicast(0),
            "B is local, still via the uplink"
        );
        assert_eq!(run_on(&b, &fdb, 1, &frame(BCAST, A)), Action::Unicast(0));
        // Reflected back by the adjacent bridge: to B's port; not learned on the uplink.
        assert_eq!(run_on(&b, &fdb, 0, &frame(B, A)), Action::Unicast(2));
        assert_eq!(fdb.lookup(0, MacAddr(A)), Some(1));
        // A reflected broadcast reaches every local port but its sender's.
        assert_eq!(run_on(&b, &fdb, 0, &frame(BCAST, A)), Action::Flood(0b100));
        // From a station behind the uplink: every local port.
        let far = [2, 0, 0, 0, 0, 0xf];
        assert_eq!(
            run_on(&b, &fdb, 0, &frame(BCAST, far)),
            Action::Flood(0b110)
        );
        assert_eq!(
            fdb.lookup(0, MacAddr(far)),
            None,
            "the uplink does not learn"
        );
    }

    struct Counted {
        police_left: u32,
        storm_left: u32,
    }

    impl Limits for Counted {
        fn police(&mut self, _: u16, _: u32) -> bool {
            self.police_left = self.police_left.saturating_sub(1);
            self.police_left > 0
        }
        fn storm(&mut self, _: u16, kind: FloodKind) -> bool {
            assert_eq!(kind, FloodKind::Broadcast);
            self.storm_left = self.storm_left.saturating_sub(1);
            self.storm_left > 0
        }
    }

    #[test]
    fn port_security_bpdu_guard_and_rate_limits() {
        let secure = PortPolicy {
            allowed_macs: vec![MacAddr(A)],
            bpdu_guard: true,
            ..PortPolicy::default()
        };
        let limited = PortPolicy {
            max_macs: Some(1),
            storm: StormLimits {
                broadcast_pps: Some(10),
                ..StormLimits::default()
            },
            ingress_policing: Some(RateLimit {
                bits_per_sec: 8000,
                burst_bytes: 100,
            }),
            ..PortPolicy::default()
        };
        let b = BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[(0, secure), (1, limited), (2, PortPolicy::default())],
        );
        let fdb = Fdb::new(64);
        let d = |r| Action::Drop(r);
        assert_eq!(
            run_on(&b, &fdb, 0, &frame(BCAST, B)),
            d(DropReason::SrcMacNotAllowed)
        );
        assert_eq!(
            fdb.lookup(0, MacAddr(B)),
            None,
            "a spoofed source is not learned"
        );
        assert_eq!(run_on(&b, &fdb, 0, &frame(BCAST, A)), Action::Flood(0b110));
        let bpdu = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_eq!(
            run_on(&b, &fdb, 0, &frame(bpdu, A)),
            d(DropReason::BpduGuard)
        );
        let mut lim = Counted {
            police_left: 100,
            storm_left: 3,
        };
        let mut go = |ingress, f: &[u8]| decide(ingress, f, 60, &b, &fdb, &mut lim, 0).action;
        let c = [2, 0, 0, 0, 0, 0xc];
        assert_eq!(go(1, &frame(BCAST, B)), Action::Flood(0b101));
        assert_eq!(
            go(1, &frame(BCAST, c)),
            d(DropReason::MacLimit),
            "max_macs = 1"
        );
        assert_eq!(go(1, &frame(BCAST, B)), Action::Flood(0b101));
        assert_eq!(go(1, &frame(BCAST, B)), d(DropReason::StormControl));
        assert_eq!(
            go(1, &frame(A, B)),
            Action::Unicast(0),
            "known unicast is not storm-limited"
        );
        lim.police_left = 1;
        assert_eq!(
            decide(1, &frame(A, B), 60, &b, &fdb, &mut lim, 0).action,
            d(DropReason::IngressPolicing)
        );
        assert_eq!(fdb.port_len(1), 1);
    }

    #[test]
    fn a_port_whose_link_is_down_takes_no_flood_and_its_unicasts_are_counted() {
        let fdb = Fdb::new(64);
        let b = bridge();
        run_on(&b, &fdb, 1, &frame(BCAST, B));
        let down = b.with_port_link(1, false);
        assert!(down.is_link_down(1) && down.is_enabled(1));
        assert_eq!(
            run_on(&down, &fdb, 0, &frame(BCAST, A)),
            Action::Flood(0b100),
            "no flood to a port without a guest"
        );
        assert_eq!(
            run_on(&down, &fdb, 0, &frame(B, A)),
            Action::Drop(DropReason::LinkDown)
        );
        let up = down.with_port_link(1, true);
        assert_eq!(up, b, "link up again: the view as before");
        assert_eq!(run_on(&up, &fdb, 0, &frame(B, A)), Action::Unicast(1));
        assert_eq!(DropReason::LinkDown.name(), "link_down");
    }

    #[test]
    fn a_shut_port_neither_sends_nor_receives() {
        let fdb = Fdb::new(64);
        let b = bridge().with_port_enabled(1, false);
        assert_eq!(
            run_on(&b, &fdb, 1, &frame(BCAST, B)),
            Action::Drop(DropReason::PortDisabled)
        );
        assert_eq!(run_on(&b, &fdb, 0, &frame(BCAST, A)), Action::Flood(0b100));
    }

    /// The plain fast path decides exactly as the general one on a plain view: same actions,
    /// same learning, same VLAN and wire form, frame after frame.
    #[test]
    fn the_plain_path_decides_like_the_general_one() {
        let up = PortPolicy {
            uplink: true, // an uplink changes nothing in a VEB
            ..PortPolicy::default()
        };
        let b = BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[
                (0, PortPolicy::default()),
                (1, up),
                (2, PortPolicy::default()),
            ],
        )
        .with_port_enabled(2, false);
        assert_eq!(b.tier(), Tier::Plain);
        assert_eq!(
            (vlan_bridge().tier(), vepa().tier()),
            (Tier::Lean, Tier::Full)
        );
        let (f1, f2) = (Fdb::with_seed(256, 7), Fdb::with_seed(256, 7));
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let (pr1, pr2) = (&mut Probes::default(), &mut Probes::default());
        for _ in 0..50_000 {
            let pick = |r: u64| -> [u8; 6] {
                match r % 7 {
                    0 => BCAST,
                    1 => [0x01, 0, 0x5e, 0, 0, 1],
                    2 => [0x01, 0x80, 0xc2, 0, 0, (r >> 8) as u8 & 0xf],
                    3 => [0; 6],
                    _ => [2, 0, 0, 0, 0, (r >> 8) as u8 % 12],
                }
            };
            let (d, s_) = (pick(next()), pick(next()));
            let mut f = match next() % 4 {
                0 => tagged(d, s_, (next() % 0x10000) as u16),
                1 => tagged(d, s_, (next() % 4) as u16 | 0x2000),
                _ => frame(d, s_),
            };
            if next().is_multiple_of(50) {
                f.truncate((next() % 20) as usize);
            }
            let ingress = (next() % 3) as u16;
            let ctx = b.ingress_ctx(ingress);
            let (p1, p2) = (
                prepare::<true>(&f, &ctx, &b, &f1),
                prepare::<false>(&f, &ctx, &b, &f2),
            );
            assert_eq!(p1, p2, "{f:02x?}");
            let len = f.len() as u32;
            let v1 = decide_prepared::<true, true>(&ctx, &p1, len, &b, &f1, &mut Unlimited, 0, pr1);
            let v2 =
                decide_prepared::<false, false>(&ctx, &p2, len, &b, &f2, &mut Unlimited, 0, pr2);
            assert_eq!(v1, v2, "{f:02x?} from {ingress}");
        }
        assert_eq!(pr1, pr2, "both tiers read the table alike");
        assert!(pr1.lookups > 0 && pr1.lines >= pr1.lookups);
    }

    #[test]
    fn bpdu_guard_sees_bpdus_before_vlan_admission() {
        let guarded = |vlan| PortPolicy {
            vlan,
            bpdu_guard: true,
            ..PortPolicy::default()
        };
        let b = BridgeView::new(
            1500,
            BridgeMode::Veb,
            &[
                (
                    0,
                    guarded(VlanMode::Trunk {
                        trunks: vec![5],
                        native: None,
                    }),
                ),
                (1, guarded(VlanMode::Access { vlan: 5 })),
            ],
        );
        let fdb = Fdb::new(64);
        let bpdu = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_eq!(
            run_on(&b, &fdb, 0, &frame(bpdu, A)),
            Action::Drop(DropReason::BpduGuard)
        );
        assert_eq!(
            run_on(&b, &fdb, 1, &tagged(bpdu, A, 7)),
            Action::Drop(DropReason::BpduGuard)
        );
    }

    #[test]
    fn a_vepa_vm_port_sends_unknown_unicast_up_whatever_its_storm_limit() {
        let vm = PortPolicy {
            storm: StormLimits {
                unknown_unicast_pps: Some(1),
                ..StormLimits::default()
            },
            ..PortPolicy::default()
        };
        let up = PortPolicy {
            uplink: true,
            ..PortPolicy::default()
        };
        let b = BridgeView::new(1500, BridgeMode::Vepa, &[(0, up), (1, vm)]);
        let fdb = Fdb::new(64);
        let mut none_left = Counted {
            police_left: 100,
            storm_left: 0,
        };
        for _ in 0..5 {
            assert_eq!(
                decide(1, &frame(B, A), 60, &b, &fdb, &mut none_left, 0).action,
                Action::Unicast(0)
            );
        }
    }

    /// The lean path (checks compiled out) decides exactly as the general one on a VEB with
    /// VLANs whose ports check nothing.
    #[test]
    fn the_lean_path_decides_like_the_general_one() {
        let b = vlan_bridge();
        assert_eq!(b.tier(), Tier::Lean);
        let (f1, f2) = (Fdb::with_seed(256, 7), Fdb::with_seed(256, 7));
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let vids = [0u16, 10, 20, 30, 99, 0xfff];
        let (pr1, pr2) = (&mut Probes::default(), &mut Probes::default());
        for _ in 0..50_000 {
            let pick = |r: u64| -> [u8; 6] {
                match r % 6 {
                    0 => BCAST,
                    1 => [0x01, 0x80, 0xc2, 0, 0, 0],
                    2 => [0; 6],
                    _ => [2, 0, 0, 0, 0, (r >> 8) as u8 % 12],
                }
            };
            let (d, s_) = (pick(next()), pick(next()));
            let f = if next().is_multiple_of(2) {
                tagged(
                    d,
                    s_,
                    vids[(next() % 6) as usize] | ((next() % 8) as u16) << 13,
                )
            } else {
                frame(d, s_)
            };
            let ingress = (next() % 4) as u16;
            let ctx = b.ingress_ctx(ingress);
            let p1 = prepare::<true>(&f, &ctx, &b, &f1);
            let p2 = prepare::<true>(&f, &ctx, &b, &f2);
            let len = f.len() as u32;
            let v1 = decide_prepared::<true, true>(&ctx, &p1, len, &b, &f1, &mut Unlimited, 0, pr1);
            let v2 =
                decide_prepared::<true, false>(&ctx, &p2, len, &b, &f2, &mut Unlimited, 0, pr2);
            assert_eq!(v1, v2, "{f:02x?} from {ingress}");
        }
        assert_eq!(pr1, pr2, "both tiers read the table alike");
        assert!(pr1.lookups > 0 && pr1.lines >= pr1.lookups);
    }
}
