//! The managed edge on the control thread: the bridge snapshot built from the configuration,
//! static entries, MAC move history and flap damping, and BPDU-guard shutdowns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dataplane::fdb::{Fdb, Learn};
use dataplane::forward::BridgeView;
use dataplane::packet::MacAddr;
use dataplane::stats::{Counters, PortCounter};
use dataplane::worker::{BridgeCell, MoveEvent};

use crate::config::{BridgeSpec, Config, PortSpec, StaticEntry};

/// Moves kept for `fdb/moves-show` and the stats.
pub const MOVE_HISTORY: usize = 64;
/// Addresses tracked for flapping at once (the oldest are forgotten first).
const FLAP_TRACKED: usize = 4096;

/// The snapshot the workers forward by, from the configuration and the started ports
/// (name -> port id), with every port enabled.
pub fn build_view(
    config: &Config,
    ports: &[(u16, &PortSpec)],
    rx_queues: &[(u16, u16)],
    workers: u16,
) -> BridgeView {
    let policies: Vec<(u16, dataplane::forward::PortPolicy)> = ports
        .iter()
        .map(|(id, spec)| (*id, spec.policy.clone()))
        .collect();
    let mut view = BridgeView::new(config.bridge.mtu, config.bridge.mode, &policies);
    view.set_queue_counts(rx_queues, workers);
    view
}

/// Installs the configured static entries. Returns how many went in; logs those that did not.
pub fn install_static(entries: &[StaticEntry], ports: &[(u16, &PortSpec)], fdb: &Fdb) -> usize {
    let mut n = 0;
    for e in entries {
        let Some((id, _)) = ports.iter().find(|(_, p)| p.name == e.port) else {
            continue;
        };
        match fdb.add_static(e.vlan, e.mac, *id) {
            Learn::Learned | Learn::Known | Learn::Moved { .. } => n += 1,
            other => log::error!(
                "static entry {} VLAN {} on {}: not installed ({other:?})",
                e.mac,
                e.vlan,
                e.port
            ),
        }
    }
    n
}

/// One MAC move, as the operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveRecord {
    /// The address.
    pub mac: String,
    /// Its VLAN.
    pub vlan: u16,
    /// The port it left (name).
    pub from: String,
    /// The port it moved to (name).
    pub to: String,
    /// When, seconds since the Unix epoch.
    pub at_unix: f64,
}

/// An address flap damping holds on one port.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldRecord {
    /// The address.
    pub mac: String,
    /// Its VLAN.
    pub vlan: u16,
    /// The port it is held on.
    pub port_id: u16,
    /// Seconds until it is released.
    pub secs_left: u64,
}

struct Flap {
    /// Where the address lived before it started moving.
    first_port: u16,
    moves: VecDeque<Instant>,
    last: Instant,
}

/// Recent moves, and flap damping: an address moving `moves` times within `window` is held
/// (a static entry) on the port it lived on before, for `hold`, and that is logged once.
pub struct MoveTracker {
    history: VecDeque<MoveRecord>,
    flaps: HashMap<(u16, u64), Flap>,
    held: HashMap<(u16, u64), (u16, Instant)>,
    threshold: u32,
    window: Duration,
    hold: Duration,
    /// Addresses held so far.
    pub holds: u64,
}

impl MoveTracker {
    /// A tracker with the bridge's damping settings.
    pub fn new(b: &BridgeSpec) -> MoveTracker {
        MoveTracker {
            history: VecDeque::with_capacity(MOVE_HISTORY),
            flaps: HashMap::new(),
            held: HashMap::new(),
            threshold: b.mac_flap_moves,
            window: Duration::from_secs(u64::from(b.mac_flap_window_secs)),
            hold: Duration::from_secs(u64::from(b.mac_flap_hold_secs)),
            holds: 0,
        }
    }

    /// New damping settings; the history and the addresses held now stay.
    pub fn set_limits(&mut self, b: &BridgeSpec) {
        self.threshold = b.mac_flap_moves;
        self.window = Duration::from_secs(u64::from(b.mac_flap_window_secs));
        self.hold = Duration::from_secs(u64::from(b.mac_flap_hold_secs));
    }

    /// The recent moves, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &MoveRecord> {
        self.history.iter()
    }

    /// Addresses held now.
    pub fn held(&self) -> Vec<HeldRecord> {
        let now = Instant::now();
        self.held
            .iter()
            .map(|(&(vlan, mac), &(port_id, until))| HeldRecord {
                mac: MacAddr::from_u64(mac).to_string(),
                vlan,
                port_id,
                secs_left: until.saturating_duration_since(now).as_secs(),
            })
            .collect()
    }

    /// Takes the moves the workers reported.
    pub fn on_moves(&mut self, events: &[MoveEvent], fdb: &Fdb, name_of: &dyn Fn(u16) -> String) {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for ev in events {
            if self.history.len() == MOVE_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(MoveRecord {
                mac: MacAddr::from_u64(ev.mac).to_string(),
                vlan: ev.vlan,
                from: name_of(ev.from),
                to: name_of(ev.to),
                at_unix: wall,
            });
            if self.threshold == 0 || self.held.contains_key(&(ev.vlan, ev.mac)) {
                continue;
            }
            if self.flaps.len() >= FLAP_TRACKED && !self.flaps.contains_key(&(ev.vlan, ev.mac)) {
                let window = self.window;
                self.flaps
                    .retain(|_, f| now.duration_since(f.last) < window);
                if self.flaps.len() >= FLAP_TRACKED {
                    continue;
                }
            }
            let flap = self.flaps.entry((ev.vlan, ev.mac)).or_insert(Flap {
                first_port: ev.from,
                moves: VecDeque::new(),
                last: now,
            });
            while flap
                .moves
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.window)
            {
                flap.moves.pop_front();
            }
            if flap.moves.is_empty() {
                flap.first_port = ev.from;
            }
            flap.moves.push_back(now);
            flap.last = now;
            if flap.moves.len() as u32 >= self.threshold {
                let port = flap.first_port;
                let mac = MacAddr::from_u64(ev.mac);
                self.flaps.remove(&(ev.vlan, ev.mac));
                if let Learn::Full | Learn::Contended = fdb.add_static(ev.vlan, mac, port) {
                    log::error!(
                        "MAC {mac} in VLAN {}: flapping, but could not be held",
                        ev.vlan
                    );
                    continue;
                }
                self.held.insert((ev.vlan, ev.mac), (port, now + self.hold));
                self.holds += 1;
                log::warn!(
                    "MAC {mac} in VLAN {} is flapping between ports {} and {} ({} moves in {} s): held on {} for {} s. A loop, or a spoofer",
                    ev.vlan,
                    name_of(ev.from),
                    name_of(ev.to),
                    self.threshold,
                    self.window.as_secs(),
                    name_of(port),
                    self.hold.as_secs()
                );
            }
        }
    }

    /// Releases holds that have run out (the address is learned again as it appears).
    pub fn expire(&mut self, fdb: &Fdb) {
        let now = Instant::now();
        self.held.retain(|&(vlan, mac), &mut (port, until)| {
            if now < until {
                return true;
            }
            fdb.remove_static_on(vlan, MacAddr::from_u64(mac), port);
            log::info!(
                "MAC {} in VLAN {vlan}: hold released",
                MacAddr::from_u64(mac)
            );
            false
        });
        let window = self.window;
        self.flaps
            .retain(|_, f| now.duration_since(f.last) < window);
    }
}

/// BPDU-guard shutdowns: the workers stop such a port locally at once; this makes it stick for
/// every worker and tells the operator. A port brought back is shut again only by a new BPDU.
#[derive(Default)]
pub struct BpduWatch {
    seen: HashMap<u16, u64>,
}

impl BpduWatch {
    /// Shuts each port whose guard fired since the last call. Returns the names of the ports
    /// newly shut.
    pub fn check(
        &mut self,
        cell: &BridgeCell,
        totals: &Counters,
        ports: &[crate::port::SwitchPort],
    ) -> Vec<String> {
        let view: Arc<BridgeView> = cell.load_full();
        let mut next: Option<BridgeView> = None;
        let mut shut = Vec::new();
        for p in ports {
            let id = p.id();
            let count = totals.port(usize::from(id), PortCounter::BpduDropped);
            let before = self.seen.insert(id, count).unwrap_or(0);
            if count > before && view.shuts_down_on_bpdu(id) && view.is_enabled(id) {
                let base = next.as_ref().unwrap_or(&view);
                next = Some(base.with_port_enabled(id, false));
                log::warn!("port {}: BPDU received with bpdu_guard_shutdown: port shut down (its frames are dropped as port_disabled)", p.spec.name);
                shut.push(p.spec.name.clone());
            }
        }
        if let Some(v) = next {
            cell.store(Arc::new(v));
        }
        shut
    }
}
