//! The client side of the control socket: what `gatekitctl` does, as a library.
//!
//! ```no_run
//! use gatekit_gateway::control::ctl::{self, Action, View};
//!
//! let socket = ctl::default_socket();
//! let mut out = std::io::stdout();
//! if let Err(e) = ctl::run(&socket, &Action::Show(View::Sas), false, &mut out) {
//!     eprintln!("gatekitctl: {e}");
//!     std::process::exit(e.exit_code());
//! }
//! ```

use super::render;
use super::{MAX_LINE, REPLY_TIMEOUT};
use crate::status::{Command, Reply, Snapshot};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `gatekitctl` looks for the control socket when neither `-s` nor `GATEKIT_CTL` says.
pub const DEFAULT_SOCKET: &str = "/run/gatekit/gatekit.sock";

/// The socket path from `GATEKIT_CTL`, or [`DEFAULT_SOCKET`].
pub fn default_socket() -> PathBuf {
    std::env::var_os("GATEKIT_CTL").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// A part of the status to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The overview and the interfaces.
    Status,
    /// IPsec SAs.
    Sas,
    /// The RIB.
    Routes,
    /// What the gateway advertises to the mesh.
    Advertised,
    /// The MAC tables.
    Macs,
    /// Tracked connections.
    Conntrack,
    /// Interface counters and drops by reason.
    Counters,
    /// Firewall rules and their hit counters.
    Rules,
}

/// What `gatekitctl` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show part of the status.
    Show(View),
    /// Reload the configuration.
    Reload,
    /// Stop the gateway.
    Stop,
    /// Start capturing a port to a pcap file (a relative path is made absolute here, since
    /// the gateway runs elsewhere).
    CaptureStart {
        /// Port name.
        port: String,
        /// Output file.
        file: PathBuf,
    },
    /// Stop capturing a port.
    CaptureStop {
        /// Port name.
        port: String,
    },
}

/// Why `gatekitctl` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// Nobody listens on the socket.
    #[error("the gateway is not running (cannot connect to {}: {source})", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Talking to the gateway failed half-way.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The gateway answered something that is not a reply.
    #[error("control socket {}: unexpected answer: {detail}", path.display())]
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// The gateway refused or failed the command.
    #[error("the gateway says: {0}")]
    Refused(String),
}

impl CtlError {
    /// The process exit status for this error: 1 when the gateway refused, 3 when it could not
    /// be reached or answered nonsense (2 is left to argument errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Refused(_) => 1,
            _ => 3,
        }
    }
}

/// Sends one command and reads its reply.
pub fn request(socket: &Path, command: &Command) -> Result<Reply, CtlError> {
    let io_err = |source| CtlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| CtlError::NotRunning {
        path: socket.to_path_buf(),
        source,
    })?;
    // The gateway itself gives up on a command after REPLY_TIMEOUT; wait a little longer.
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT + Duration::from_secs(5)))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(command).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    // A snapshot of a big gateway is larger than a request line may be; still bounded.
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take((MAX_LINE as u64) * 1024)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    if !answer.ends_with(b"\n") {
        return Err(CtlError::BadReply {
            path: socket.to_path_buf(),
            detail: "connection closed before a complete reply".into(),
        });
    }
    serde_json::from_slice(&answer).map_err(|e| CtlError::BadReply {
        path: socket.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Does `action` against the gateway at `socket` and writes the result to `out`: readable
/// tables, or JSON when `json` is set.
pub fn run(
    socket: &Path,
    action: &Action,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let command = match action {
        Action::Show(_) => Command::Status,
        Action::Reload => Command::Reload,
        Action::Stop => Command::Stop,
        Action::CaptureStart { port, file } => Command::CaptureStart {
            port: port.clone(),
            file: std::path::absolute(file)
                .unwrap_or_else(|_| file.clone())
                .display()
                .to_string(),
        },
        Action::CaptureStop { port } => Command::CaptureStop { port: port.clone() },
    };
    let reply = request(socket, &command)?;
    let out_err = |source| CtlError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    let text = match (reply, action) {
        (Reply::Error { message }, _) => return Err(CtlError::Refused(message)),
        (Reply::Status(s), Action::Show(view)) => show(&s, *view, json),
        (reply @ Reply::Ok { .. }, _) if json => json_line(&reply),
        (Reply::Ok { message }, _) => format!("{message}\n"),
        (reply, _) => {
            return Err(CtlError::BadReply {
                path: socket.to_path_buf(),
                detail: format!("{reply:?} does not answer {command:?}"),
            });
        }
    };
    out.write_all(text.as_bytes()).map_err(out_err)?;
    out.flush().map_err(out_err)
}

/// One view of a snapshot, as a table or as pretty JSON.
pub fn show(s: &Snapshot, view: View, json: bool) -> String {
    if !json {
        return match view {
            View::Status => render::status(s),
            View::Sas => render::sas(s),
            View::Routes => render::routes(s),
            View::Advertised => render::advertised(s),
            View::Macs => render::macs(s),
            View::Conntrack => render::conntrack(s),
            View::Counters => render::counters(s),
            View::Rules => render::rules(s),
        };
    }
    let value = match view {
        View::Status => serde_json::to_value(s),
        View::Sas => serde_json::to_value(&s.sas),
        View::Routes => serde_json::to_value(&s.routes),
        View::Advertised => serde_json::to_value(serde_json::json!({
            "tag": s.advertise_tag,
            "routes": s.advertised,
        })),
        View::Macs => serde_json::to_value(&s.macs),
        View::Conntrack => serde_json::to_value(serde_json::json!({
            "total": s.conntrack_total,
            "entries": s.conntrack,
        })),
        View::Counters => serde_json::to_value(serde_json::json!({
            "interfaces": s.interfaces,
            "drops": s.drops,
            "sas": s.sas.iter().map(|sa| serde_json::json!({
                "peer": sa.peer, "spi": sa.spi, "direction": sa.direction,
                "packets": sa.packets, "bytes": sa.bytes, "drops": sa.drops,
            })).collect::<Vec<_>>(),
        })),
        View::Rules => serde_json::to_value(&s.firewall_rules),
    };
    match value.and_then(|v| serde_json::to_string_pretty(&v)) {
        Ok(text) => text + "\n",
        Err(e) => format!("{{\"error\":{:?}}}\n", e.to_string()),
    }
}

fn json_line(reply: &Reply) -> String {
    serde_json::to_string(reply).unwrap_or_default() + "\n"
}
