//! `pmdswitch ctl`: sends one command to a running switch's control socket and prints the
//! answer, like `ovs-appctl -t SOCKET`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{self, Reply};

/// How long the client waits for an answer (a million-entry `fdb/show` takes a while).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to the control socket {path}: {source} (is pmdswitch running? give its socket with --socket PATH)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("control socket {path}: {what}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The step.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server's answer was not a reply.
    #[error("control socket {path}: not a JSON-RPC reply: {message}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// Sends `command args` (with `format=json` appended when `json`) and returns the reply.
pub fn call(
    socket: &Path,
    command: &str,
    args: &[String],
    json: bool,
) -> Result<Reply, ClientError> {
    let io = |what| {
        move |source| ClientError::Io {
            path: socket.to_owned(),
            what,
            source,
        }
    };
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(io("setting a timeout"))?;
    let mut params = args.to_vec();
    if json {
        params.push("format=json".into());
    }
    s.write_all(&protocol::request(0, command, &params))
        .map_err(io("sending the request"))?;
    // Exactly one JSON value is read off the stream (the server keeps the connection open).
    let mut values = serde_json::Deserializer::from_reader(std::io::BufReader::new(&s))
        .into_iter::<serde_json::Value>();
    let protocol_error = |message: String| ClientError::Protocol {
        path: socket.to_owned(),
        message,
    };
    match values.next() {
        None => Err(protocol_error(
            "the switch closed the connection without answering".into(),
        )),
        Some(Err(e)) if e.is_io() => Err(ClientError::Io {
            path: socket.to_owned(),
            what: "reading the reply",
            source: e.into(),
        }),
        Some(Err(e)) if e.is_eof() => Err(protocol_error(
            "the connection closed in the middle of the reply".into(),
        )),
        Some(Err(e)) => Err(protocol_error(e.to_string())),
        Some(Ok(v)) => protocol::reply_of(v).map_err(|e| protocol_error(e.to_string())),
    }
}
