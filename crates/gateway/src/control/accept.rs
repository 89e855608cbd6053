//! The accept loop both control endpoints run: the HTTP status endpoint on TCP and the control
//! socket on a Unix stream socket.
//!
//! The listener is non-blocking and polled, so that the loop sees its stop flag within
//! [`POLL`]; each connection is served on a thread of its own, at most `max` at once; one over
//! that gets the endpoint's refusal at once. A connection's slot is given back when its thread
//! ends or, if no thread could be started, at once: a failed spawn never leaks a slot.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// A listening socket the loop can take connections from.
pub(super) trait Listener {
    /// A connection.
    type Stream: Send + 'static;
    /// The next waiting connection (`WouldBlock` when there is none).
    fn next(&self) -> io::Result<Self::Stream>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn next(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn next(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// What an endpoint does with its connections.
pub(super) struct Endpoint<R, S> {
    /// The endpoint's name in log lines ("metrics endpoint", "control socket").
    pub what: &'static str,
    /// The name of each connection's thread.
    pub thread: &'static str,
    /// Connections served at once.
    pub max: usize,
    /// Answers a connection over the limit (best effort; its error is ignored).
    pub refuse: R,
    /// Serves one connection on its own thread; an error ends only that connection.
    pub serve: S,
}

/// Accepts connections on `listener` until `stop` is set, serving each as `ep` says.
pub(super) fn run<L, R, S>(listener: L, stop: &AtomicBool, ep: Endpoint<R, S>)
where
    L: Listener,
    R: Fn(L::Stream) -> io::Result<()>,
    S: Fn(L::Stream) -> io::Result<()> + Clone + Send + 'static,
{
    let busy = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.next() {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!("{}: accept: {e}", ep.what);
                std::thread::sleep(POLL);
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= ep.max {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = (ep.refuse)(stream);
            continue;
        }
        let slot = Slot(busy.clone());
        let serve = ep.serve.clone();
        let what = ep.what;
        let spawned = std::thread::Builder::new()
            .name(ep.thread.into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve(stream) {
                    tracing::debug!("{what}: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("{}: cannot spawn a connection thread: {e}", ep.what);
        }
    }
}

/// Gives a connection slot back when dropped: when the connection's thread ends, or with the
/// closure of a thread that never started.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
