//! VM ports: vhost-user sockets as operators know them from Open vSwitch (`dpdkvhostuser`,
//! `dpdkvhostuserclient`) and libvirt (`<interface type='vhostuser'>`). The devargs of DPDK's
//! net_vhost driver, the socket a server-mode port makes (a stale one removed first, its
//! permissions set for a QEMU running as another user), and what a guest negotiated.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Who creates the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// QEMU serves the socket; the switch connects and reconnects for ever (OVS's
    /// `dpdkvhostuserclient`): a switch restart leaves the guests' NICs alive.
    Client,
    /// The switch creates the socket and QEMU connects (OVS's `dpdkvhostuser`).
    Server,
}

impl VhostMode {
    /// As the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            VhostMode::Client => "client",
            VhostMode::Server => "server",
        }
    }
}

/// A vhost-user port's socket and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUser {
    /// The UNIX socket.
    pub path: PathBuf,
    /// Client or server.
    pub mode: VhostMode,
    /// Queue pairs offered to the guest.
    pub queues: u16,
    /// Server mode: the socket's permission bits (e.g. 0o660).
    pub socket_mode: Option<u32>,
    /// Server mode: the socket's group, by id (and the name it was given as).
    pub socket_group: Option<(u32, String)>,
}

/// The longest socket path a UNIX address holds (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

impl VhostUser {
    /// DPDK devargs for the port `name`: a net_vhost device of its own.
    pub fn devargs(&self, name: &str) -> String {
        format!(
            "net_vhost_{name},iface={},queues={},client={}",
            self.path.display(),
            self.queues,
            u8::from(self.mode == VhostMode::Client)
        )
    }

    /// The vhost-user socket of a port given by raw net_vhost devargs
    /// (`net_vhost0,iface=/run/vm1.sock[,client=1][,queues=N]`), if it is one.
    pub fn from_devargs(devargs: &str) -> Option<VhostUser> {
        let mut parts = devargs.split(',');
        let dev = parts.next()?.trim();
        if !(dev.starts_with("net_vhost") || dev.starts_with("eth_vhost")) {
            return None;
        }
        let mut v = VhostUser {
            path: PathBuf::new(),
            mode: VhostMode::Server,
            queues: 1,
            socket_mode: None,
            socket_group: None,
        };
        for (k, val) in parts.filter_map(|p| p.split_once('=')) {
            match k.trim() {
                "iface" => v.path = PathBuf::from(val.trim()),
                "client" if val.trim() == "1" => v.mode = VhostMode::Client,
                "queues" => v.queues = val.trim().parse().unwrap_or(1),
                _ => {}
            }
        }
        (!v.path.as_os_str().is_empty()).then_some(v)
    }

    /// Before the device is created, for a server-mode port: removes a stale socket left by
    /// a switch that was killed (the next bind would fail), never one a live process serves,
    /// never a file that is not a socket.
    pub fn clear_stale_socket(&self) -> Result<(), String> {
        if self.mode != VhostMode::Server {
            return Ok(());
        }
        let path = &self.path;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket: remove it or give vhost_user.path another path",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is served by another process (another switch, or QEMU in server mode): stop it, or use mode = \"client\" for a socket QEMU serves",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("{}: stale socket not removed: {e}", path.display()))?;
        log::info!("{}: stale vhost-user socket removed", path.display());
        Ok(())
    }

    /// After the device is created, for a server-mode port: gives the socket the configured
    /// permissions and group, so that a QEMU running as another user can connect.
    pub fn secure_socket(&self) -> Result<(), String> {
        if self.mode != VhostMode::Server {
            return Ok(());
        }
        let path = &self.path;
        if let Some((gid, name)) = &self.socket_group {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(*gid)))
                .map_err(|e| format!("{}: chown to group {name}: {e}", path.display()))?;
        }
        if let Some(mode) = self.socket_mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: chmod {mode:o}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Virtio feature bits worth telling an operator, by bit (virtio 1.2, 5.1.3; vhost-user).
const FEATURES: [(u32, &str); 18] = [
    (0, "csum"),
    (1, "guest_csum"),
    (3, "mtu"),
    (5, "mac"),
    (7, "guest_tso4"),
    (8, "guest_tso6"),
    (11, "host_tso4"),
    (12, "host_tso6"),
    (15, "mrg_rxbuf"),
    (16, "status"),
    (17, "ctrl_vq"),
    (22, "mq"),
    (28, "indirect_desc"),
    (29, "event_idx"),
    (30, "protocol_features"),
    (32, "version_1"),
    (34, "packed_ring"),
    (35, "in_order"),
];

/// The names of the known features set in `bits`, lowest bit first.
pub fn feature_names(bits: u64) -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|(b, _)| bits & (1u64 << b) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Whether `path`'s directory exists (a socket is made there, by the switch or by QEMU).
pub fn directory_exists(path: &Path) -> bool {
    path.parent()
        .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devargs_round_trip_and_raw_devargs_are_read() {
        let v = VhostUser {
            path: PathBuf::from("/run/pmdswitch/vm1.sock"),
            mode: VhostMode::Client,
            queues: 2,
            socket_mode: None,
            socket_group: None,
        };
        let d = v.devargs("vm1");
        assert_eq!(
            d,
            "net_vhost_vm1,iface=/run/pmdswitch/vm1.sock,queues=2,client=1"
        );
        assert_eq!(VhostUser::from_devargs(&d), Some(v));
        let raw = VhostUser::from_devargs("net_vhost0,iface=/tmp/a.sock").unwrap();
        assert_eq!((raw.mode, raw.queues), (VhostMode::Server, 1));
        assert_eq!(VhostUser::from_devargs("net_tap0,iface=x"), None);
        assert_eq!(VhostUser::from_devargs("net_vhost0"), None);
    }

    #[test]
    fn feature_names_read_the_bits() {
        let bits = 1 | (1 << 15) | (1 << 22) | (1u64 << 32);
        assert_eq!(
            feature_names(bits),
            ["csum", "mrg_rxbuf", "mq", "version_1"]
        );
    }

    #[test]
    fn a_stale_socket_goes_a_live_one_and_a_file_stay() {
        let dir = tempfile::tempdir().unwrap();
        let server = |p: &Path| VhostUser {
            path: p.to_owned(),
            mode: VhostMode::Server,
            queues: 1,
            socket_mode: Some(0o660),
            socket_group: None,
        };
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        server(&stale).clear_stale_socket().unwrap();
        assert!(!stale.exists(), "a socket nobody serves is removed");
        let live = dir.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = server(&live).clear_stale_socket().unwrap_err();
        assert!(e.contains("another process") && live.exists(), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = server(&file).clear_stale_socket().unwrap_err();
        assert!(e.contains("not a socket") && file.exists(), "{e}");
        // Permissions after the socket is made.
        server(&live).secure_socket().unwrap();
        let mode = std::fs::metadata(&live).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }
}
