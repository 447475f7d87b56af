//! Harness for the end-to-end tests: runs the real `pmdswitch` binary with DPDK virtual
//! devices, writes and reads pcaps, builds frames, and makes network namespaces.
//!
//! Every DPDK process here gets `--no-pci --in-memory` and a file prefix of its own, and the
//! tests run one at a time (`--test-threads=1`): the machine has two cores.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use serde_json::Value;

pub mod guest;
pub mod sflow;

/// The pmdswitch binary under test: `$PMDSWITCH_BIN`, or the workspace's target directory of
/// the profile these tests were built with.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("PMDSWITCH_BIN") {
        return PathBuf::from(p);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join(profile).join("pmdswitch");
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build {}-p pmdswitch), as scripts/test.sh does",
        p.display(),
        if profile == "release" {
            "--release "
        } else {
            ""
        }
    );
    p
}

/// Panics with a clear message unless hugepages are available.
pub fn require_hugepages() {
    let n: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(n > 0, "no hugepages: run scripts/setup.sh (as root) first");
}

static PREFIX_SEQ: AtomicU32 = AtomicU32::new(0);

/// EAL arguments for one test process: one control and one worker lcore, never PCI.
pub fn eal_args() -> Vec<String> {
    eal_args_with(&["-l", "0,1"])
}

/// EAL arguments with the given lcore layout (`-l ...` or `--lcores ...`), never PCI, and a
/// file prefix of their own.
pub fn eal_args_with(lcores: &[&str]) -> Vec<String> {
    let prefix = format!(
        "pmdsw-test-{}-{}",
        std::process::id(),
        PREFIX_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut a: Vec<String> = lcores.iter().map(|s| s.to_string()).collect();
    for s in [
        "--no-pci",
        "--in-memory",
        "--file-prefix",
        &prefix,
        "--log-level",
        "pmd.net.tap:error",
    ] {
        a.push(s.to_string());
    }
    a
}

/// The directory the EAL makes for its `--file-prefix` (it stays after exit, even with
/// --in-memory): tests remove theirs so runs do not pile them up.
pub fn runtime_dir_of(eal: &[String]) -> Option<PathBuf> {
    let i = eal.iter().position(|a| a == "--file-prefix")?;
    let prefix = eal.get(i + 1)?;
    Some(Path::new("/var/run/dpdk").join(prefix))
}

/// Removes the EAL runtime directory of a finished process started with `eal`.
pub fn remove_runtime_dir(eal: &[String]) {
    if let Some(d) = runtime_dir_of(eal) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Reads a process's output lines into `log` until one contains `needle` (true), or until
/// `timeout` (false). A line already in `log` counts.
fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    log: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    if log.iter().any(|l| l.contains(needle)) {
        return true;
    }
    while let Ok(l) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let hit = l.contains(needle);
        log.push(l);
        if hit {
            return true;
        }
    }
    false
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything the switch printed (stdout then stderr).
    pub output: String,
    /// The stats JSON it wrote, if any.
    pub stats: Option<Value>,
}

/// A running switch, killed if the test panics.
pub struct Switch {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    stats_path: PathBuf,
    ctl_path: PathBuf,
    _dir: tempfile::TempDir,
    runtime_dir: Option<PathBuf>,
}

impl Switch {
    /// Starts `pmdswitch run ARGS --stats-json F -- EAL` with one worker.
    pub fn start(args: &[String]) -> Switch {
        Self::start_with_eal(args, eal_args())
    }

    /// Starts `pmdswitch run ARGS --stats-json F -- EAL` with the given EAL arguments. Unless
    /// ARGS name one with `--ctl`, the control socket is in the switch's temporary directory
    /// (so that switches of concurrent test runs never meet at the default path).
    pub fn start_with_eal(args: &[String], eal: Vec<String>) -> Switch {
        let runtime_dir = runtime_dir_of(&eal);
        require_hugepages();
        let dir = tempfile::tempdir().expect("temp dir");
        let stats_path = dir.path().join("stats.json");
        let mut ctl_path = dir.path().join("pmdswitch.ctl");
        let mut extra = Vec::new();
        match args
            .iter()
            .position(|a| a == "--ctl" || a.starts_with("--ctl="))
        {
            Some(i) => {
                ctl_path = match args[i].strip_prefix("--ctl=") {
                    Some(p) => PathBuf::from(p),
                    None => PathBuf::from(args.get(i + 1).expect("--ctl PATH")),
                }
            }
            None => extra.extend(["--ctl".to_string(), ctl_path.display().to_string()]),
        }
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .args(args)
            .args(&extra)
            .arg("--stats-json")
            .arg(&stats_path)
            .arg("--")
            .args(eal)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pmdswitch");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Switch {
            child: Some(child),
            lines: rx,
            log: Vec::new(),
            stats_path,
            ctl_path,
            _dir: dir,
            runtime_dir,
        }
    }

    /// Waits until `n` log lines in all contain `needle`; panics with the log after `timeout`.
    pub fn wait_for_log_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let count = |log: &[String]| log.iter().filter(|l| l.contains(needle)).count();
        while count(&self.log) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                Err(_) => panic!(
                    "fewer than {n} log lines with {needle:?} within {timeout:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits until a log line contains `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        if !wait_for_line(&self.lines, &mut self.log, needle, timeout) {
            panic!(
                "no log line with {needle:?} within {timeout:?}; log:\n{}",
                self.log.join("\n")
            );
        }
    }

    /// Waits until the switch is forwarding.
    pub fn wait_ready(&mut self) {
        self.wait_for_log("forwarding on", Duration::from_secs(30));
    }

    /// The switch's control socket.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl_path
    }

    /// Runs the stock `ovs-appctl -t SOCKET ARGS...` against this switch.
    pub fn appctl(&self, args: &[&str]) -> CmdOut {
        appctl(&self.ctl_path, args)
    }

    /// Runs `pmdswitch ctl --socket SOCKET ARGS...` against this switch.
    pub fn ctl(&self, args: &[&str]) -> CmdOut {
        let mut cmd = Command::new(bin());
        cmd.arg("ctl")
            .arg("--socket")
            .arg(&self.ctl_path)
            .args(args);
        CmdOut::of(cmd)
    }

    /// `pmdswitch ctl --json ARGS...`, which must succeed, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert_eq!(out.code, 0, "pmdswitch ctl {args:?}: {out:?}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("pmdswitch ctl --json {args:?}: not JSON ({e}): {out:?}"))
    }

    /// A port counter as `port/show` reports it now.
    pub fn port_counter(&self, port: &str, field: &str) -> u64 {
        port_stat(&self.ctl_json(&["port/show"]), port, field)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to the switch.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Stops the switch with SIGTERM and asserts it exits 0 within 30 s.
    pub fn stop(self) -> Finished {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let (done, _) = self.wait(Duration::from_secs(30));
        assert!(
            done.status.success(),
            "exit status {}\n{}",
            done.status,
            done.output
        );
        done
    }

    /// Waits for the switch to exit (killing it after `timeout`) and collects what it left.
    /// Returns the result and how long the exit took.
    pub fn wait(mut self, timeout: Duration) -> (Finished, Duration) {
        let t0 = Instant::now();
        let mut child = self.child.take().expect("running");
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if t0.elapsed() > timeout {
                let _ = child.kill();
                let s = child.wait().expect("wait");
                panic!(
                    "pmdswitch did not exit within {timeout:?} (killed: {s}); log:\n{}",
                    self.drain_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = t0.elapsed();
        let output = self.drain_log();
        let stats = std::fs::read_to_string(&self.stats_path)
            .ok()
            .map(|s| serde_json::from_str(&s).expect("stats JSON parses"));
        (
            Finished {
                status,
                output,
                stats,
            },
            took,
        )
    }

    fn drain_log(&mut self) -> String {
        // The reader threads end at EOF once the process is gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(l);
        }
        self.log.join("\n")
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.runtime_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Runs the switch for `secs` seconds (`--duration`) and returns what it left.
pub fn run_for(args: &[String], secs: f64) -> Finished {
    let mut a = args.to_vec();
    a.push("--duration".into());
    a.push(secs.to_string());
    let sw = Switch::start(&a);
    sw.wait(Duration::from_secs_f64(secs + 60.0)).0
}

/// Asserts that a finished run's mbuf pool was back where it started: no mbuf leaked.
pub fn assert_no_mbuf_leaked(stats: &Value) {
    assert_eq!(
        stats["mempool"]["in_use_at_stop"], stats["mempool"]["in_use_at_start"],
        "mbufs leaked: {}",
        stats["mempool"]
    );
}

/// Port counters from a stats JSON, by port name.
pub fn port_stat(stats: &Value, port: &str, field: &str) -> u64 {
    stats["ports"]
        .as_array()
        .expect("ports array")
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port} in stats"))[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} for port {port}"))
}

/// A port's ifIndex (what sFlow calls it) from a stats JSON, by port name.
pub fn if_index(stats: &Value, port: &str) -> u32 {
    port_stat(stats, port, "if_index") as u32
}

/// Writes a classic pcap (microsecond, Ethernet) holding `frames`.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65_535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).expect("frame fits u32");
        b.extend_from_slice(&u32::try_from(i).unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).expect("write pcap");
}

/// Reads the frames of a classic pcap (either byte order); a missing file reads as none.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let Ok(b) = std::fs::read(path) else {
        return Vec::new();
    };
    if b.len() < 24 {
        return Vec::new();
    }
    let little = match u32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("{}: not a pcap (magic {m:#x})", path.display()),
    };
    let u32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        assert!(
            start + incl <= b.len(),
            "{}: truncated record",
            path.display()
        );
        out.push(b[start..start + incl].to_vec());
        off = start + incl;
    }
    out
}

/// A MAC address from a small number: 02:00:00:00:00:NN (locally administered unicast).
pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// ff:ff:ff:ff:ff:ff.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame of `len` bytes (at least 14) with a payload that names it by `tag`,
/// so every frame in a test is distinct.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, tag: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(16));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x88b5u16.to_be_bytes()); // IEEE local experimental EtherType
    f.extend_from_slice(&tag.to_be_bytes());
    f.resize(len.max(16), 0xa5);
    f.truncate(len);
    f
}

/// An IPv4/UDP frame of `len` bytes (at least 42) between 10.99.0.`src[5]` and
/// 10.99.0.`dst[5]` (10.99.0.255 for broadcast), UDP ports 5000 to 6000, its IP id `id`, the
/// header checksum right: what a collector that accounts only IP traffic (sfacctd) counts.
pub fn ipv4_udp_frame(dst: [u8; 6], src: [u8; 6], len: usize, id: u16) -> Vec<u8> {
    assert!(
        len >= 42,
        "{len} bytes cannot hold Ethernet, IPv4 and UDP headers"
    );
    let ip_len = (len - 14) as u16;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 99, 0, src[5]]);
    ip[16..20].copy_from_slice(&[10, 99, 0, if dst == BROADCAST { 255 } else { dst[5] }]);
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let check = !(((folded & 0xffff) + (folded >> 16)) as u16);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&6000u16.to_be_bytes());
    f.extend_from_slice(&(ip_len - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed in IPv4)
    f.resize(len, 0xa5);
    f
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command and tells whether it succeeded.
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A network namespace, deleted when dropped.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates the namespace (deleting a stale one of the same name first).
    pub fn new(name: &str) -> Netns {
        let _ = sh_ok(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns {
            name: name.to_owned(),
        }
    }

    /// Moves interface `ifname` in, brings it up with `addr` (CIDR).
    pub fn adopt(&self, ifname: &str, addr: &str) {
        sh(&format!("ip link set {ifname} netns {}", self.name));
        sh(&format!("ip -n {} addr add {addr} dev {ifname}", self.name));
        sh(&format!("ip -n {} link set {ifname} up", self.name));
    }

    /// Turns IPv6 off in the namespace (for interfaces moved in later too), so that its hosts
    /// send nothing on their own: no router solicitations, no MLD reports.
    pub fn without_ipv6(self) -> Netns {
        sh(&self.exec(
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        ));
        self
    }

    /// The command prefix that runs inside the namespace.
    pub fn exec(&self, cmd: &str) -> String {
        format!("ip netns exec {} {cmd}", self.name)
    }
}

/// One quiet host (a namespace without IPv6) per tap the switch made: the i-th tap moves into
/// namespace `{prefix}{i+1}` and gets 10.99.0.{i+1}/24.
pub fn hosts_on_taps(ifs: &[String], prefix: &str) -> Vec<Netns> {
    ifs.iter()
        .enumerate()
        .map(|(i, ifname)| {
            wait_for_iface(ifname, Duration::from_secs(10));
            let ns = Netns::new(&format!("{prefix}{}", i + 1)).without_ipv6();
            ns.adopt(ifname, &format!("10.99.0.{}/24", i + 1));
            ns
        })
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh_ok(&format!("ip netns del {}", self.name));
    }
}

/// Waits until a kernel interface exists.
pub fn wait_for_iface(name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !Path::new(&format!("/sys/class/net/{name}")).exists() {
        assert!(Instant::now() < deadline, "interface {name} did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes UDP payloads as Ethernet/IPv4/UDP frames (to `dst_port`, IPv4 checksum set, UDP
/// checksum 0) in a pcap, for an independent decoder such as tshark to read.
pub fn write_udp_pcap(path: &Path, payloads: &[Vec<u8>], dst_port: u16) {
    let frames: Vec<Vec<u8>> = payloads
        .iter()
        .map(|payload| {
            let total = u16::try_from(20 + 8 + payload.len()).expect("datagram fits IPv4");
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
            let mut sum: u32 = ip
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let csum = !u16::try_from(sum).expect("folded to 16 bits");
            ip[10..12].copy_from_slice(&csum.to_be_bytes());
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
            f.extend_from_slice(&ip);
            f.extend_from_slice(&40000u16.to_be_bytes());
            f.extend_from_slice(&dst_port.to_be_bytes());
            f.extend_from_slice(&(total - 20).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(payload);
            f
        })
        .collect();
    write_pcap(path, &frames);
}

/// What a command printed, and its exit code (-1: killed by a signal).
#[derive(Debug)]
pub struct CmdOut {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOut {
    /// Runs `cmd` to completion.
    pub fn of(mut cmd: Command) -> CmdOut {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The stock Open vSwitch client (Debian's openvswitch-common).
pub const OVS_APPCTL: &str = "/usr/bin/ovs-appctl";

/// Runs `ovs-appctl -t SOCKET ARGS...`.
pub fn appctl(socket: &Path, args: &[&str]) -> CmdOut {
    assert!(
        Path::new(OVS_APPCTL).exists(),
        "{OVS_APPCTL} not found: install openvswitch-common (scripts/setup.sh does)"
    );
    let mut cmd = Command::new(OVS_APPCTL);
    cmd.arg("-t").arg(socket).args(args);
    CmdOut::of(cmd)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `GET path` over HTTP/1.1 on `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// The value of the sample `series` (a metric name with its labels, as exposed) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `--port` flags for an endless source and a sink: `src` replays 64 frames from mac(1) to
/// mac(2) forever (net_pcap `infinite_rx`, the pcap written in `dir`), `sink` (net_null, no rx)
/// takes them.
pub fn endless_source_and_sink(dir: &Path) -> Vec<String> {
    let src = dir.join("src.pcap");
    let frames: Vec<Vec<u8>> = (0..64).map(|i| frame(mac(2), mac(1), 60, i)).collect();
    write_pcap(&src, &frames);
    vec![
        format!(
            "--port=src=net_pcap0,rx_pcap={},infinite_rx=1",
            src.display()
        ),
        "--port=sink=net_null1,no-rx=1".to_string(),
    ]
}

/// `f` with an IEEE 802.1Q tag (TPID 0x8100, priority `pcp`, DEI 0, VLAN `vid`) inserted after
/// the source address, as a switch pushes it.
pub fn tagged(f: &[u8], pcp: u8, vid: u16) -> Vec<u8> {
    assert!(pcp < 8 && vid < 4096, "PCP {pcp} VID {vid}");
    let tci = (u16::from(pcp) << 13) | vid;
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&0x8100u16.to_be_bytes());
    t.extend_from_slice(&tci.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// A frame's bytes in hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One line per frame, for assertion messages: addresses, 802.1Q tag if any (VID and PCP),
/// the test's tag, the length.
pub fn describe(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            if f.len() < 16 {
                return format!("short frame {}", hex(f));
            }
            let (vlan, rest) = if f[12..14] == [0x81, 0x00] && f.len() >= 20 {
                let tci = u16::from_be_bytes([f[14], f[15]]);
                (format!("vid {} pcp {}", tci & 0xfff, tci >> 13), &f[16..])
            } else {
                ("untagged".to_owned(), &f[12..])
            };
            format!(
                "{} <- {} {vlan} type {} tag {} len {}",
                hex(&f[0..6]),
                hex(&f[6..12]),
                hex(&rest[0..2]),
                hex(&rest[2..4.min(rest.len())]),
                f.len()
            )
        })
        .collect()
}

/// A config file in a temporary directory, for `--config`.
pub struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    /// Writes `text` as `switch.toml`.
    pub fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("switch.toml"), text).expect("write config");
        ConfigFile { dir }
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("switch.toml")
    }

    /// `--config PATH` as arguments.
    pub fn args(&self) -> Vec<String> {
        vec!["--config".into(), self.path().display().to_string()]
    }
}

/// Reads a classic pcap's frames with their timestamps in seconds; a record cut short at the
/// end (a file still being written) is left out.
pub fn read_pcap_timed(path: &Path) -> Vec<(f64, Vec<u8>)> {
    let Ok(b) = std::fs::read(path) else {
        return Vec::new();
    };
    if b.len() < 24 {
        return Vec::new();
    }
    let (little, nanos) = match u32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("{}: not a pcap (magic {m:#x})", path.display()),
    };
    let u32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let frac = if nanos { 1e-9 } else { 1e-6 };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        if start + incl > b.len() {
            break;
        }
        let ts = f64::from(u32_at(off)) + f64::from(u32_at(off + 4)) * frac;
        out.push((ts, b[start..start + incl].to_vec()));
        off = start + incl;
    }
    out
}

/// The raw-socket helper (`tests/rawsock.py`): tagged frames on a kernel interface.
pub fn rawsock_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rawsock.py")
}

fn in_ns(ns: Option<&Netns>, cmd: &str) -> String {
    match ns {
        Some(ns) => ns.exec(cmd),
        None => cmd.to_owned(),
    }
}

/// Sends `count` frames (cycling through `frames`) out of kernel interface `iface` (in `ns`,
/// or the test's own namespace), `pps` a second (0: as fast as it goes).
pub fn raw_send(ns: Option<&Netns>, iface: &str, count: usize, pps: u32, frames: &[Vec<u8>]) {
    let hexes: Vec<String> = frames.iter().map(|f| hex(f)).collect();
    let cmd = format!(
        "python3 {} send {iface} {count} {pps} {}",
        rawsock_script().display(),
        hexes.join(" ")
    );
    sh(&in_ns(ns, &cmd));
}

/// A raw-socket capture running on a kernel interface: every frame it received, with its
/// 802.1Q tag as it was on the wire.
pub struct RawCapture {
    child: Child,
    what: String,
}

impl RawCapture {
    /// Starts capturing on `iface` (in `ns`) for `secs` seconds; returns once the socket is bound.
    pub fn start(ns: Option<&Netns>, iface: &str, secs: f64) -> RawCapture {
        let what = format!("capture on {iface}");
        let cmd = format!("python3 {} recv {iface} {secs}", rawsock_script().display());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(in_ns(ns, &cmd))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rawsock.py");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let _ = err.read_line(&mut line);
        assert!(line.trim() == "ready", "{what} did not start: {line}");
        RawCapture { child, what }
    }

    /// Waits for the capture to end and returns its frames.
    pub fn frames(self) -> Vec<Vec<u8>> {
        let out = self.child.wait_with_output().expect("rawsock.py");
        assert!(out.status.success(), "{} failed: {}", self.what, out.status);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                    .collect()
            })
            .collect()
    }
}

/// Reads a kernel interface counter (`rx_packets`, `tx_packets`, ...) in `ns`.
pub fn iface_counter(ns: Option<&Netns>, iface: &str, counter: &str) -> u64 {
    sh(&in_ns(
        ns,
        &format!("cat /sys/class/net/{iface}/statistics/{counter}"),
    ))
    .trim()
    .parse()
    .expect("counter")
}

/// One net_pcap port of a configured switch: its name, the TOML lines it adds to its
/// `[[ports]]` table (VLAN mode, security, ...), and the frames it receives.
pub struct PcapPort {
    /// Port name.
    pub name: &'static str,
    /// Extra lines of its `[[ports]]` table.
    pub config: String,
    /// Frames read from its rx pcap.
    pub input: Vec<Vec<u8>>,
}

impl PcapPort {
    /// A port with `config` lines receiving `input`.
    pub fn new(name: &'static str, config: &str, input: Vec<Vec<u8>>) -> PcapPort {
        PcapPort {
            name,
            config: config.to_owned(),
            input,
        }
    }
}

/// The outcome of a configured run on pcap ports.
pub struct PcapRun {
    /// Frames each port sent, by port name, in order.
    pub out: std::collections::HashMap<String, Vec<Vec<u8>>>,
    /// The stats JSON.
    pub stats: Value,
    /// What the switch printed.
    pub output: String,
}

impl PcapRun {
    /// The frames port `name` sent.
    pub fn out(&self, name: &str) -> &[Vec<u8>] {
        &self.out[name]
    }

    /// A drop counter (0 when the reason is absent).
    pub fn drops(&self, reason: &str) -> u64 {
        self.stats["drops"][reason].as_u64().unwrap_or(0)
    }
}

/// Runs the switch on net_pcap ports configured by a TOML file made of `head` (e.g. a
/// `[bridge]` table or `[[fdb]]` entries) and one `[[ports]]` table per port, for `secs`,
/// and collects every port's output. Panics unless it exits 0.
pub fn run_pcap_config(head: &str, ports: &[PcapPort], secs: f64) -> PcapRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut toml = format!("{head}\n");
    for (i, p) in ports.iter().enumerate() {
        let input = dir.path().join(format!("in-{}.pcap", p.name));
        let output = dir.path().join(format!("out-{}.pcap", p.name));
        write_pcap(&input, &p.input);
        toml.push_str(&format!(
            "[[ports]]\nname = \"{}\"\ndevargs = \"net_pcap{i},rx_pcap={},tx_pcap={}\"\n{}\n\n",
            p.name,
            input.display(),
            output.display(),
            p.config
        ));
    }
    let config = ConfigFile::new(&toml);
    let done = run_for(&config.args(), secs);
    assert!(
        done.status.success(),
        "pmdswitch failed: {}\nconfig:\n{toml}\n{}",
        done.status,
        done.output
    );
    let stats = done.stats.expect("stats file written");
    let out = ports
        .iter()
        .map(|p| {
            let f = dir.path().join(format!("out-{}.pcap", p.name));
            (p.name.to_owned(), read_pcap(&f))
        })
        .collect();
    PcapRun {
        out,
        stats,
        output: done.output,
    }
}

/// Asserts that `got` holds exactly the frames of `want`, in any order, byte for byte.
pub fn assert_frames(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    let mut g = got.to_vec();
    let mut w = want.to_vec();
    g.sort();
    w.sort();
    assert_eq!(describe(&g), describe(&w), "{what}: frames");
    assert_eq!(g, w, "{what}: bytes");
}

/// `dpdk-testpmd` as a peer in a process of its own: one lcore for its main thread and one
/// forwarding lcore, both on CPU 0 (the switch's worker keeps CPU 1 alone), never PCI, its own
/// file prefix. Driven interactively (`-i`) through its stdin.
pub struct Testpmd {
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    eal: Vec<String>,
}

impl Testpmd {
    /// Starts testpmd with these `--vdev`s and application arguments (after `--`, besides
    /// `-i`); returns once its prompt is up.
    pub fn start(vdevs: &[String], app: &[&str]) -> Testpmd {
        let eal = eal_args_with(&["--lcores", "0@0,1@0"]);
        // Line-buffered: printf into a pipe would otherwise hold its lines back.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd"])
            .args(&eal)
            .arg("--single-file-segments");
        for v in vdevs {
            cmd.arg("--vdev").arg(v);
        }
        cmd.arg("--")
            .arg("-i")
            .args(app)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn dpdk-testpmd (package dpdk)");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                // testpmd's prompt ends without a newline: split on "> " too.
                while r
                    .read_until(b'\n', &mut buf)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    buf.clear();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut t = Testpmd {
            child: Some(child),
            stdin,
            lines: rx,
            log: Vec::new(),
            eal,
        };
        t.wait_for("Done", Duration::from_secs(30));
        t
    }

    /// Sends one command line.
    pub fn cmd(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("testpmd's stdin");
        writeln!(stdin, "{line}").expect("write to testpmd");
        stdin.flush().expect("flush testpmd's stdin");
    }

    /// Waits for a line containing `needle`; panics with what it printed after `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        if !wait_for_line(&self.lines, &mut self.log, needle, timeout) {
            panic!(
                "testpmd printed no {needle:?} within {timeout:?}:\n{}",
                self.log.join("\n")
            );
        }
    }

    /// Quits (ports closed, pcap files written) and waits for the exit.
    pub fn quit(mut self) {
        self.cmd("quit");
        drop(self.stdin.take());
        self.reap(Duration::from_secs(20));
    }

    /// Kills it with SIGKILL, as a VM dies: its vhost-user connections drop at once.
    pub fn kill(mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.reap(Duration::from_secs(10));
    }

    fn reap(&mut self, timeout: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let t0 = Instant::now();
        while c.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_runtime_dir(&self.eal);
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.reap(Duration::from_secs(5));
    }
}
