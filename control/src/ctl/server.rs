//! The control socket's server, run by the control thread: non-blocking listeners (the unixctl
//! socket, and the Prometheus endpoint when asked for) and their connections, serviced a
//! bounded amount per tick so no client, and no crowd of clients, can stall the control loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::commands::{Commands, Flow};
use super::protocol::{self, Parsed, MAX_REQUEST};
use super::{Context, CtlError};
use crate::metrics;

/// Connections open at once on each listener; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that makes no progress (no byte read or written) this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// New connections taken per listener per tick (the rest wait in the kernel's backlog).
const ACCEPTS_PER_TICK: usize = 16;
/// Bytes read from one connection per tick.
const READ_PER_TICK: usize = 16 * 1024;
/// Bytes written to one connection per tick (a big reply goes out over several wake-ups).
const WRITE_PER_TICK: usize = 4 * 1024 * 1024;
/// A command that keeps the control thread longer than this is logged.
const SLOW_COMMAND: Duration = Duration::from_millis(100);
/// Requests served per tick, all connections together.
const REQUESTS_PER_TICK: usize = 32;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// unixctl JSON-RPC.
    Ctl,
    /// HTTP for /metrics.
    Http,
}

struct Conn {
    stream: Stream,
    kind: Kind,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    last_progress: Instant,
    /// Close once the output is written (after an error reply, or an HTTP response).
    closing: bool,
    dead: bool,
    /// Bytes arrived (or a request was taken) since the input was last found incomplete.
    unparsed: bool,
    /// The client has shut its sending side (or the connection broke).
    peer_done: bool,
}

impl Conn {
    fn new(stream: Stream, kind: Kind) -> Conn {
        Conn {
            stream,
            kind,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            last_progress: Instant::now(),
            closing: false,
            dead: false,
            unparsed: false,
            peer_done: false,
        }
    }

    fn pending_output(&self) -> bool {
        self.written < self.output.len()
    }

    fn queue(&mut self, bytes: Vec<u8>) {
        if self.pending_output() {
            self.output.extend_from_slice(&bytes);
        } else {
            self.output = bytes;
            self.written = 0;
        }
    }

    /// Writes what the socket takes, up to the per-tick budget.
    fn flush(&mut self, now: Instant) {
        let stop = (self.written + WRITE_PER_TICK).min(self.output.len());
        while self.written < stop {
            match self.stream.write(&self.output[self.written..stop]) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.written += n;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if !self.pending_output() {
            self.output = Vec::new();
            self.written = 0;
            if self.closing {
                self.dead = true;
            }
        }
    }

    /// Reads what is waiting, up to the per-tick budget. Returns false at end of stream.
    fn fill(&mut self, now: Instant) -> bool {
        let mut chunk = [0u8; 4096];
        let mut got = 0;
        while got < READ_PER_TICK {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    got += n;
                    self.last_progress = now;
                    self.unparsed = true;
                    if self.input.len() > MAX_REQUEST + READ_PER_TICK {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

/// The control socket: where it is, and how to reach the metrics endpoint.
#[derive(Debug, Clone)]
pub struct CtlOptions {
    /// The unixctl socket's path.
    pub socket: PathBuf,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<SocketAddr>,
}

/// The listeners, their connections, and the commands.
pub struct Server {
    unix: UnixListener,
    path: PathBuf,
    http: Option<TcpListener>,
    conns: Vec<Conn>,
    commands: Commands,
    /// Where the next tick starts servicing, so that no connection is always served last.
    rotate: usize,
}

impl Server {
    /// Creates the socket (its directory too; a stale socket of a dead switch is replaced;
    /// mode 0600) and the metrics listener.
    pub fn bind(opts: &CtlOptions) -> Result<Server, CtlError> {
        // The metrics listener first: if it fails, no socket file is left behind.
        let http = match opts.metrics {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .map_err(|source| CtlError::MetricsBind { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| CtlError::MetricsBind { addr, source })?;
                log::info!("metrics: http://{}/metrics", l.local_addr().unwrap_or(addr));
                Some(l)
            }
            None => None,
        };
        let unix = bind_unix(&opts.socket)?;
        log::info!(
            "control socket {} (ovs-appctl -t {0} list-commands)",
            opts.socket.display()
        );
        Ok(Server {
            unix,
            path: opts.socket.clone(),
            http,
            conns: Vec::new(),
            commands: Commands::new(),
            rotate: 0,
        })
    }

    /// Sleeps until a listener or a connection has something to do, or `timeout` passes:
    /// the control loop's tick, cut short when a client is waiting.
    pub fn wait(&self, timeout: Duration) {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.conns.len() + 2);
        fds.push(PollFd::new(self.unix.as_fd(), PollFlags::POLLIN));
        if let Some(h) = &self.http {
            fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.conns {
            let ev = if c.pending_output() {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            fds.push(PollFd::new(c.stream.fd(), ev));
        }
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        // An error (EINTR from a signal) just ends the wait early.
        let _ = nix::poll::poll(&mut fds, ms);
    }

    /// Accepts, reads, answers and writes, a bounded amount. Returns [`Flow::Exit`] when a
    /// client asked the switch to stop.
    pub fn poll(&mut self, ctx: &mut Context<'_>) -> Flow {
        let now = Instant::now();
        self.accept(now);
        let mut flow = Flow::Continue;
        let mut budget = REQUESTS_PER_TICK;
        // Start at a different connection each tick so that a busy one cannot keep the others
        // waiting for the budget.
        let n = self.conns.len();
        self.rotate = self.rotate.wrapping_add(1);
        let start = if n == 0 { 0 } else { self.rotate % n };
        for k in 0..n {
            let c = &mut self.conns[(start + k) % n];
            if c.pending_output() {
                c.flush(now);
                continue;
            }
            if c.closing || c.dead {
                continue;
            }
            // A client may shut its side once its request is sent (`socat`, `nc -N`): what it
            // sent is still answered, then the connection closes.
            if !c.peer_done && !c.fill(now) {
                c.peer_done = true;
            }
            if !c.unparsed {
                c.dead |= c.peer_done;
                continue;
            }
            if budget == 0 {
                continue;
            }
            match c.kind {
                Kind::Ctl => {
                    if let Some(f) = serve_ctl(c, &mut self.commands, ctx) {
                        budget -= 1;
                        if f == Flow::Exit {
                            flow = Flow::Exit;
                        }
                    }
                }
                Kind::Http => {
                    if serve_http(c, ctx) {
                        budget -= 1;
                    }
                }
            }
            if c.peer_done && !c.unparsed {
                c.closing = true;
            }
            c.flush(now);
        }
        self.conns
            .retain(|c| !c.dead && now.duration_since(c.last_progress) < IDLE_TIMEOUT);
        flow
    }

    fn accept(&mut self, now: Instant) {
        let open = |conns: &[Conn], kind| conns.iter().filter(|c| c.kind == kind).count();
        for _ in 0..ACCEPTS_PER_TICK {
            match self.unix.accept() {
                Ok((s, _)) => {
                    // Over the limit: dropped, i.e. closed at once.
                    if open(&self.conns, Kind::Ctl) < MAX_CONNECTIONS
                        && s.set_nonblocking(true).is_ok()
                    {
                        self.conns.push(Conn::new(Stream::Unix(s), Kind::Ctl));
                    }
                }
                Err(_) => break,
            }
        }
        if let Some(h) = &self.http {
            for _ in 0..ACCEPTS_PER_TICK {
                match h.accept() {
                    Ok((s, _)) => {
                        if open(&self.conns, Kind::Http) < MAX_CONNECTIONS
                            && s.set_nonblocking(true).is_ok()
                        {
                            let mut c = Conn::new(Stream::Tcp(s), Kind::Http);
                            c.last_progress = now;
                            self.conns.push(c);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Serves one request if a whole one has arrived. Returns its outcome for the loop.
fn serve_ctl(c: &mut Conn, commands: &mut Commands, ctx: &mut Context<'_>) -> Option<Flow> {
    match protocol::parse(&c.input) {
        Parsed::NeedMore => {
            c.unparsed = false;
            None
        }
        Parsed::Error(e) => {
            log::debug!("control socket: {e}; closing the connection");
            c.queue(protocol::reply(
                &serde_json::Value::Null,
                Err(e.to_string()),
            ));
            c.closing = true;
            c.input = Vec::new();
            Some(Flow::Continue)
        }
        Parsed::Request(req, used) => {
            c.input.drain(..used);
            let t0 = Instant::now();
            let (mut outcome, flow) = commands.run(&req.method, &req.params, ctx);
            if t0.elapsed() > SLOW_COMMAND {
                log::info!(
                    "control command {} took {:.3} s",
                    req.method,
                    t0.elapsed().as_secs_f64()
                );
            }
            // As Open vSwitch's unixctl: a non-empty answer ends with a newline.
            let (Ok(s) | Err(s)) = &mut outcome;
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            c.queue(protocol::reply(&req.id, outcome));
            Some(flow)
        }
    }
}

/// Answers one HTTP request if its head has arrived. Returns true when it did.
fn serve_http(c: &mut Conn, ctx: &mut Context<'_>) -> bool {
    let response = match metrics::parse_http_head(&c.input) {
        metrics::Head::NeedMore => {
            c.unparsed = false;
            return false;
        }
        metrics::Head::Request { method, path } => metrics::respond(&method, &path, ctx),
        metrics::Head::Bad(status) => metrics::error_response(status),
    };
    c.queue(response);
    c.closing = true;
    c.input = Vec::new();
    true
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: a reply still queued (to `exit`) gets one last chance.
        for c in &mut self.conns {
            if c.pending_output() {
                c.flush(Instant::now());
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener, CtlError> {
    let err = |what: &'static str, source: std::io::Error| CtlError::Socket {
        path: path.to_owned(),
        what,
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(CtlError::InUse(path.to_owned()));
            }
            // Nobody answers: left by a switch that died. Replace it.
            std::fs::remove_file(path).map_err(|e| err("removing the stale socket", e))?;
        }
        Ok(_) => return Err(CtlError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(err("checking the path", e)),
    }
    // Bound under a temporary name, restricted to its owner, then renamed into place: the
    // socket is never reachable at its path with a wider mode.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp).map_err(|e| err("binding", e))?;
    let set = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| l.set_nonblocking(true));
    if let Err(e) = set {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("setting up", e));
    }
    Ok(l)
}
