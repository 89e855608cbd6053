//! The operator's side of the gateway: what it shows and how it is told what to do.
//!
//! - [`ControlPlane`] holds the latest [`Snapshot`] (published by the data path every ~100 ms;
//!   a pointer swap, never a wait) and the command queue that the runtime drains from its loop
//!   with [`ControlPlane::try_recv`].
//! - [`MetricsServer`]: `GET /metrics` (Prometheus text format 0.0.4), `GET /status` (the
//!   snapshot as JSON) and `GET /healthz`, on a loopback address, on a thread of its own.
//! - [`CtlSocket`]: a Unix stream socket (mode 0600) speaking one JSON [`Command`] per line in
//!   and one JSON [`Reply`] per line out; `gatekitctl` is its client ([`ctl`]).
//! - [`SignalHandler`]: SIGHUP becomes [`Command::Reload`], SIGTERM and SIGINT
//!   [`Command::Stop`], queued like any other command.
//! - [`Captures`]: pcap capture of any port, switched on and off at run time.
//!
//! The servers never touch the data path: status requests are answered from the latest
//! snapshot, and everything else is queued for the runtime, which answers each request with
//! [`Request::reply`]. A runtime that does not answer within [`REPLY_TIMEOUT`] makes the
//! client see an error, not a hang.
//!
//! # Example
//!
//! ```
//! use gatekit_gateway::control::ControlPlane;
//! use gatekit_gateway::status::{Command, Reply, Snapshot};
//!
//! let mut control = ControlPlane::new();
//! let handle = control.handle();
//!
//! // The data path publishes its state now and then.
//! control.publish(Snapshot { name: "site-a".into(), config_generation: 1, ..Snapshot::default() });
//! assert_eq!(handle.snapshot().name, "site-a");
//!
//! // A server (ctl socket, signal) queues a command; the runtime's loop answers it.
//! let pending = handle.submit(Command::Reload)?;
//! while let Some(request) = control.try_recv() {
//!     assert_eq!(request.command(), &Command::Reload);
//!     request.reply(Reply::Ok { message: "configuration 2 applied".into() });
//! }
//! assert_eq!(pending.wait(std::time::Duration::from_secs(1)),
//!            Reply::Ok { message: "configuration 2 applied".into() });
//! # Ok::<(), gatekit_gateway::control::QueueFull>(())
//! ```

mod accept;
mod capture;
pub mod ctl;
mod http;
mod metrics;
pub mod render;
mod signals;
mod socket;

pub use capture::{CaptureError, Captures, LinkType};
pub use http::{MetricsServer, ServeError};
pub use metrics::render_prometheus;
pub use signals::SignalHandler;
pub use socket::{CtlSocket, MAX_LINE, parse_request};

use crate::status::{Command, Reply, Snapshot};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

/// Commands that may wait in the queue before new ones are refused as busy.
pub const QUEUE_DEPTH: usize = 64;

/// How long a server waits for the runtime to answer a queued command.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The command queue is full: the runtime is not draining it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway is busy: {QUEUE_DEPTH} commands are already waiting")]
pub struct QueueFull;

/// The runtime's end of the control plane: it publishes snapshots and drains commands.
///
/// Not `Sync` (one runtime loop drains it); the servers get a [`ControlHandle`] instead.
#[derive(Debug)]
pub struct ControlPlane {
    handle: ControlHandle,
    commands: Receiver<Request>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlPlane {
    /// A control plane with an empty snapshot and an empty queue.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        ControlPlane {
            handle: ControlHandle {
                snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
                commands: tx,
            },
            commands: rx,
        }
    }

    /// A handle for a server or a signal thread (cheap to clone, `Send + Sync`).
    pub fn handle(&self) -> ControlHandle {
        self.handle.clone()
    }

    /// Makes `snapshot` the one readers see. A pointer swap: readers holding the previous
    /// snapshot keep it until they are done, and nobody waits.
    pub fn publish(&self, snapshot: Snapshot) {
        self.handle.snapshot.store(Arc::new(snapshot));
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.handle.snapshot()
    }

    /// The next queued command, if any; never blocks. Answer each with [`Request::reply`].
    pub fn try_recv(&self) -> Option<Request> {
        self.commands.try_recv().ok()
    }
}

/// The servers' end of the control plane: reads snapshots, queues commands.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    commands: SyncSender<Request>,
}

impl ControlHandle {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Queues `command` for the runtime and returns where its reply will arrive.
    pub fn submit(&self, command: Command) -> Result<PendingReply, QueueFull> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(Request {
            command,
            reply: Some(tx),
        })?;
        Ok(PendingReply(rx))
    }

    /// Queues `command` without waiting for the reply (signals: nobody is there to read it).
    pub fn notify(&self, command: Command) -> Result<(), QueueFull> {
        self.enqueue(Request {
            command,
            reply: None,
        })
    }

    /// Answers `command` the way a server should: status from the latest snapshot, anything
    /// else queued for the runtime and waited for (at most `timeout`).
    pub fn execute(&self, command: Command, timeout: Duration) -> Reply {
        if command == Command::Status {
            return Reply::Status(Box::new((*self.snapshot()).clone()));
        }
        match self.submit(command) {
            Ok(pending) => pending.wait(timeout),
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    fn enqueue(&self, request: Request) -> Result<(), QueueFull> {
        match self.commands.try_send(request) {
            Ok(()) => Ok(()),
            // A runtime that has gone away will not drain the queue either.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(QueueFull),
        }
    }
}

/// A command waiting for the runtime, with where to send its answer.
#[derive(Debug)]
pub struct Request {
    command: Command,
    reply: Option<SyncSender<Reply>>,
}

impl Request {
    /// What is asked.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// Sends the answer to whoever asked (dropped quietly if they stopped waiting, logged if
    /// nobody waits: a signal).
    pub fn reply(self, reply: Reply) {
        match self.reply {
            Some(tx) => {
                let _ = tx.try_send(reply);
            }
            None => match &reply {
                Reply::Error { message } => {
                    tracing::warn!(command = ?self.command, "{message}");
                }
                Reply::Ok { message } => tracing::info!(command = ?self.command, "{message}"),
                Reply::Status(_) => {}
            },
        }
    }
}

/// Where the reply to a submitted command will arrive.
#[derive(Debug)]
pub struct PendingReply(Receiver<Reply>);

impl PendingReply {
    /// Waits at most `timeout` for the reply; a timeout or a request dropped unanswered
    /// becomes a [`Reply::Error`] that says so.
    pub fn wait(self, timeout: Duration) -> Reply {
        match self.0.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Reply::Error {
                message: format!(
                    "the gateway did not answer within {} s",
                    timeout.as_secs_f64()
                ),
            },
            Err(RecvTimeoutError::Disconnected) => Reply::Error {
                message: "the gateway dropped the request without answering".into(),
            },
        }
    }
}

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz {
    /// The control socket's request parser on arbitrary bytes: never panics, and whatever it
    /// returns serializes to one line of JSON.
    pub fn ctl_request(data: &[u8]) {
        match super::parse_request(data) {
            Ok(cmd) => {
                let line = serde_json::to_string(&cmd).unwrap_or_default();
                assert!(!line.contains('\n'));
                // What we accepted, written back out, is accepted again as the same command.
                assert_eq!(super::parse_request(line.as_bytes()).ok(), Some(cmd));
            }
            Err(reply) => {
                let line = serde_json::to_string(&reply).unwrap_or_default();
                assert!(!line.is_empty() && !line.contains('\n'));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_answered_without_the_runtime() {
        let control = ControlPlane::new();
        control.publish(Snapshot {
            name: "gw".into(),
            ..Snapshot::default()
        });
        let reply = control
            .handle()
            .execute(Command::Status, Duration::from_millis(1));
        match reply {
            Reply::Status(s) => assert_eq!(s.name, "gw"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(control.try_recv().is_none());
    }

    #[test]
    fn unanswered_command_times_out_with_an_error() {
        let control = ControlPlane::new();
        let reply = control
            .handle()
            .execute(Command::Reload, Duration::from_millis(20));
        assert!(matches!(reply, Reply::Error { message } if message.contains("did not answer")));
        // It was queued all the same.
        assert_eq!(
            control.try_recv().map(|r| r.command().clone()),
            Some(Command::Reload)
        );
    }

    #[test]
    fn dropped_request_is_an_error_not_a_hang() {
        let control = ControlPlane::new();
        let pending = control.handle().submit(Command::Stop).unwrap();
        drop(control.try_recv());
        assert!(matches!(
            pending.wait(Duration::from_secs(5)),
            Reply::Error { message } if message.contains("dropped")
        ));
    }

    #[test]
    fn full_queue_is_refused() {
        let control = ControlPlane::new();
        let h = control.handle();
        for _ in 0..QUEUE_DEPTH {
            h.notify(Command::Reload).unwrap();
        }
        assert_eq!(h.notify(Command::Reload), Err(QueueFull));
        assert!(matches!(
            h.execute(Command::Stop, Duration::from_secs(1)),
            Reply::Error { message } if message.contains("busy")
        ));
    }
}
