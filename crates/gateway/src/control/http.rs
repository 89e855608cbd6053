//! The status and metrics HTTP endpoint: `GET /metrics`, `GET /status`, `GET /healthz`.
//!
//! A deliberately small HTTP/1.x server on std: it reads one request head per connection
//! (bounded in size and time), answers it and closes. That is all a Prometheus scraper or
//! `curl` needs, and it leaves no room for a slow or hostile client to hold the endpoint: each
//! connection has [`REQUEST_DEADLINE`] in all, a head larger than [`MAX_HEAD`] is refused,
//! and at most [`MAX_CONNECTIONS`] are served at once (others get `503` at once).

use super::ControlHandle;
use super::accept;
use super::metrics::{CONTENT_TYPE, render_prometheus};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// The time a client has to send its request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address is not a loopback address; the endpoint has no authentication.
    #[error(
        "metrics endpoint {0}: expected a loopback address (the endpoint has no authentication)"
    )]
    NotLoopback(SocketAddr),
    /// Binding or configuring a socket failed.
    #[error("metrics endpoint {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
}

/// The running HTTP endpoint; stops (and joins its thread) on [`MetricsServer::stop`] or drop.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves from `control`'s
    /// latest snapshot on a thread of its own.
    pub fn start(addr: SocketAddr, control: ControlHandle) -> Result<Self, ServeError> {
        if !addr.ip().is_loopback() {
            return Err(ServeError::NotLoopback(addr));
        }
        let io_err = |source| ServeError::Io { addr, source };
        let listener = TcpListener::bind(addr).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let local = listener.local_addr().map_err(io_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("gatekit-metrics".into())
            .spawn({
                let stop = stop.clone();
                move || accept_loop(listener, control, stop)
            })
            .map_err(io_err)?;
        tracing::info!(addr = %local, "metrics endpoint listening");
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port picked, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread to end (connections being served
    /// finish within their 2 s request deadline on their own).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, control: ControlHandle, stop: Arc<AtomicBool>) {
    let ep = accept::Endpoint {
        what: "metrics endpoint",
        thread: "gatekit-metrics-conn",
        max: MAX_CONNECTIONS,
        refuse: refuse_busy,
        serve: move |stream| serve(stream, &control),
    };
    accept::run(listener, &stop, ep);
}

fn refuse_busy(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    respond(&mut stream, 503, "text/plain", b"busy\n", false)
}

/// What a request asked for: the method and the path without its query string.
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    method: &'a str,
    path: &'a str,
}

/// Why a request head was refused, as the status code to answer with.
fn parse_head(head: &[u8]) -> Result<Head<'_>, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(505);
    }
    let path = target.split('?').next().unwrap_or_default();
    Ok(Head { method, path })
}

fn serve(mut stream: TcpStream, control: &ControlHandle) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let head_len = loop {
        if let Some(end) = find_end_of_head(&buf[..len]) {
            break end;
        }
        if len == buf.len() {
            return respond(
                &mut stream,
                431,
                "text/plain",
                b"request head too large\n",
                false,
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(&mut stream, 408, "text/plain", b"request timeout\n", false);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return respond(&mut stream, 408, "text/plain", b"request timeout\n", false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let head = match parse_head(&buf[..head_len]) {
        Ok(h) => h,
        Err(code) => return respond(&mut stream, code, "text/plain", b"bad request\n", false),
    };
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"only GET and HEAD\n",
            false,
        );
    }
    match head.path {
        "/metrics" => {
            let body = render_prometheus(&control.snapshot());
            respond(&mut stream, 200, CONTENT_TYPE, body.as_bytes(), head_only)
        }
        "/status" => {
            let body = serde_json::to_vec(&*control.snapshot()).map_err(io::Error::other)?;
            respond(&mut stream, 200, "application/json", &body, head_only)
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n", head_only),
        _ => respond(
            &mut stream,
            404,
            "text/plain",
            b"not found; try /metrics, /status or /healthz\n",
            head_only,
        ),
    }
}

/// The length of the head including its blank line, once it is all there.
fn find_end_of_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    linger(stream);
    Ok(())
}

/// Closes our side, then reads and discards what the client still sends for a moment:
/// closing a socket with unread data makes the kernel send a reset, which can destroy the
/// answer before the client reads it (a refused request is usually not read to its end).
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut left = 256 * 1024usize;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Head {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n"), Err(505));
        assert_eq!(parse_head(b"GET  / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), Err(400));
    }

    #[test]
    fn end_of_head() {
        assert_eq!(find_end_of_head(b"GET / HTTP/1.0\r\n\r\nbody"), Some(18));
        assert_eq!(find_end_of_head(b"GET / HTTP/1.0\r\n"), None);
    }

    #[test]
    fn refuses_non_loopback() {
        let control = super::super::ControlPlane::new();
        let err = MetricsServer::start("0.0.0.0:0".parse().unwrap(), control.handle());
        assert!(matches!(err, Err(ServeError::NotLoopback(_))));
    }
}
