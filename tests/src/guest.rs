//! Real Linux guests under QEMU (TCG) on vhost-user sockets, for the VM-port tests: the
//! kernel and initramfs that `scripts/guest-image.py` builds, a virtio-net NIC whose memory is
//! shared with the switch (without `share=on` QEMU silently falls back to userspace virtio
//! and not one frame passes), and a shell on the serial port that runs the test's commands.
//! Guests run on CPU 0, so the switch's worker keeps CPU 1 alone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/guest-image.py` leaves the guest unless `PMDSWITCH_GUEST_DIR` says otherwise.
pub const DEFAULT_GUEST_DIR: &str = "/var/cache/pmdswitch/guest";

/// The guest's kernel and initramfs; panics with what to run when they are missing.
pub fn image() -> (PathBuf, PathBuf) {
    let dir = std::env::var("PMDSWITCH_GUEST_DIR").unwrap_or_else(|_| DEFAULT_GUEST_DIR.into());
    let (k, i) = (
        Path::new(&dir).join("vmlinux"),
        Path::new(&dir).join("initramfs.cpio.gz"),
    );
    assert!(
        k.exists() && i.exists(),
        "no guest image in {dir}: run scripts/setup.sh (it runs scripts/guest-image.py)"
    );
    (k, i)
}

/// The major version of the QEMU installed (0 when it cannot be read).
fn qemu_major() -> u32 {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0)
}

/// Which side of the vhost-user socket QEMU takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuSocket {
    /// QEMU connects to the switch's socket, and reconnects every second when it goes.
    Client,
    /// QEMU serves the socket and the switch connects (the switch's client mode).
    Server,
}

/// How a guest is started.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Names its files in the test's directory.
    pub name: String,
    /// The vhost-user socket.
    pub socket: PathBuf,
    /// QEMU's side of it.
    pub role: QemuSocket,
    /// eth0's MAC.
    pub mac: [u8; 6],
    /// eth0's address with its prefix, e.g. 10.99.0.11/24.
    pub ip: String,
    /// eth0's MTU, if not 1500.
    pub mtu: Option<u32>,
    /// Queue pairs of the NIC (1: no multiqueue).
    pub queues: u16,
}

/// A running guest. Killed (SIGKILL) when dropped.
pub struct Guest {
    /// What it was started with.
    pub spec: GuestSpec,
    qemu: Option<Child>,
    serial: Option<(UnixStream, BufReader<UnixStream>)>,
    serial_path: PathBuf,
    log_path: PathBuf,
    qemu_log: PathBuf,
    seq: u32,
}

impl Guest {
    /// Starts QEMU for `spec`, its files in `dir`. Returns at once: a guest whose QEMU serves
    /// the socket waits for the switch; call [`Guest::wait_ready`] before driving it.
    pub fn start(dir: &Path, spec: GuestSpec) -> Guest {
        let (kernel, initrd) = image();
        let serial_path = dir.join(format!("{}-serial.sock", spec.name));
        let log_path = dir.join(format!("{}-serial.log", spec.name));
        let qemu_log = dir.join(format!("{}-qemu.log", spec.name));
        let _ = std::fs::remove_file(&log_path);
        let mut append = format!(
            "console=ttyS0 quiet loglevel=1 panic=-1 pmdsw.ip={}",
            spec.ip
        );
        if let Some(m) = spec.mtu {
            append.push_str(&format!(" pmdsw.mtu={m}"));
        }
        if spec.queues > 1 {
            append.push_str(&format!(" pmdsw.queues={}", spec.queues));
        }
        let old_qemu = qemu_major() < 9;
        let vhu = match spec.role {
            // reconnect-ms came with QEMU 9.2; reconnect=1 (seconds) before.
            QemuSocket::Client if old_qemu => {
                format!("socket,id=vhu,path={},reconnect=1", spec.socket.display())
            }
            QemuSocket::Client => format!(
                "socket,id=vhu,path={},reconnect-ms=1000",
                spec.socket.display()
            ),
            QemuSocket::Server => format!(
                "socket,id=vhu,path={},server=on,wait=off",
                spec.socket.display()
            ),
        };
        let mac = spec
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let (netdev, device) = if spec.queues > 1 {
            (
                format!("vhost-user,id=net0,chardev=vhu,queues={}", spec.queues),
                format!(
                    "virtio-net-pci,netdev=net0,mac={mac},romfile=,mq=on,vectors={}",
                    2 * spec.queues + 2
                ),
            )
        } else {
            (
                "vhost-user,id=net0,chardev=vhu".to_owned(),
                format!("virtio-net-pci,netdev=net0,mac={mac},romfile="),
            )
        };
        // QEMU 7.2 crashes under TCG when a vhost-user NIC starts with MSI-X: INTx instead.
        let device = if old_qemu && spec.queues == 1 {
            device + ",vectors=0"
        } else {
            device
        };
        let out = std::fs::File::create(&qemu_log).expect("qemu log");
        let qemu = Command::new("taskset")
            .args(["-c", "0", "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-m", "256", "-smp", "1"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .args([
                "-object",
                "memory-backend-memfd,id=mem,size=256M,share=on",
                "-numa",
                "node,memdev=mem",
            ])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                serial_path.display(),
                log_path.display()
            ))
            .args(["-serial", "chardev:ser0"])
            .args(["-chardev", &vhu])
            .args(["-netdev", &netdev])
            .args(["-device", &device])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("qemu log"))
            .stderr(out)
            .spawn()
            .expect("spawn qemu-system-x86_64 (scripts/setup.sh installs it)");
        Guest {
            spec,
            qemu: Some(qemu),
            serial: None,
            serial_path,
            log_path,
            qemu_log,
            seq: 0,
        }
    }

    /// Waits for the socket QEMU serves (QEMU as server: the switch can connect then).
    pub fn wait_for_socket(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.spec.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "{}: QEMU made no socket {}: {}",
                self.spec.name,
                self.spec.socket.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the guest has booted, configured eth0 and runs its shell on the serial
    /// port; returns how long it took.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains("PMDSW-GUEST-READY") {
                break;
            }
            if let Some(Ok(Some(st))) = self.qemu.as_mut().map(|c| c.try_wait()) {
                panic!("{}: QEMU exited ({st}): {}", self.spec.name, self.logs());
            }
            assert!(
                t0.elapsed() < timeout,
                "{}: not ready within {timeout:?}: {}",
                self.spec.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = UnixStream::connect(&self.serial_path).expect("guest serial socket");
        let r = BufReader::new(s.try_clone().expect("clone serial socket"));
        self.serial = Some((s, r));
        t0.elapsed()
    }

    /// Runs `cmd` in the guest's shell; returns its output and exit status. Panics after
    /// `timeout`.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (String, i32) {
        self.seq += 1;
        let tag = format!("PMDSW-DONE-{}-", self.seq);
        let name = self.spec.name.clone();
        let (w, r) = self.serial.as_mut().expect("wait_ready first");
        r.get_ref()
            .set_read_timeout(Some(timeout))
            .expect("serial timeout");
        // Two lines: the command may end in `&`, and `$?` is its status either way.
        write!(w, "{cmd}\necho {tag}$?\n").expect("write to the guest");
        let mut out = String::new();
        let mut line = String::new();
        let deadline = Instant::now() + timeout;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => panic!("{name}: serial closed during {cmd:?}: {out}"),
                Ok(_) => {}
                Err(e) => panic!("{name}: {cmd:?} gave no answer ({e}): {out}"),
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if let Some(rc) = l.find(&tag).map(|i| &l[i + tag.len()..]) {
                out.push_str(&l[..l.find(&tag).unwrap_or(0)]);
                return (out, rc.trim().parse().unwrap_or(-1));
            }
            out.push_str(l);
            out.push('\n');
            assert!(
                Instant::now() < deadline,
                "{name}: {cmd:?} timed out: {out}"
            );
        }
    }

    /// Runs `cmd` and panics unless it succeeds; returns its output.
    pub fn ok(&mut self, cmd: &str, timeout: Duration) -> String {
        let (out, rc) = self.run(cmd, timeout);
        assert_eq!(rc, 0, "{}: {cmd:?} failed:\n{out}", self.spec.name);
        out
    }

    /// Starts `cmd` in the background of the guest's shell (`cmd &`).
    pub fn spawn(&mut self, cmd: &str) {
        self.ok(&format!("{cmd} >/dev/null 2>&1 &"), Duration::from_secs(10));
    }

    /// Kills QEMU with SIGKILL, as a host kills a VM; its vhost-user connection drops.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        self.serial = None;
        if let Some(mut c) = self.qemu.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The serial console's and QEMU's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "\n--- {} serial ---\n{}\n--- {} qemu ---\n{}",
            self.spec.name,
            std::fs::read_to_string(&self.log_path).unwrap_or_default(),
            self.spec.name,
            std::fs::read_to_string(&self.qemu_log).unwrap_or_default()
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill_now();
    }
}
