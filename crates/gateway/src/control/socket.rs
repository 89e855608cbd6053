//! The control socket: a Unix stream socket, one JSON [`Command`] per line in, one JSON
//! [`Reply`] per line out.
//!
//! The socket file is created with mode 0600 (bound under a temporary name, restricted, then
//! renamed into place, so it is never reachable with looser permissions) and removed on stop.
//! A stale socket left by a gateway that died is replaced; a live one is an error.

use super::{ControlHandle, REPLY_TIMEOUT, accept};
use crate::status::{Command, Reply};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may stay idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const EXPECTED: &str = "expected one JSON object per line with a \"cmd\" of \
     status, reload, capture_start (with \"port\" and \"file\"), capture_stop (with \"port\") \
     or stop, e.g. {\"cmd\":\"status\"}";

/// Parses one request line (without or with its newline) into a [`Command`], or the
/// [`Reply::Error`] that says what was expected. Never panics.
pub fn parse_request(line: &[u8]) -> Result<Command, Reply> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(Reply::Error {
            message: format!("request longer than {MAX_LINE} bytes; {EXPECTED}"),
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| Reply::Error {
        message: format!("request is not UTF-8 ({e}); {EXPECTED}"),
    })?;
    serde_json::from_str(text).map_err(|e| Reply::Error {
        message: format!("bad request: {e}; {EXPECTED}"),
    })
}

/// The listening control socket; stops, joins its thread and removes the socket file on
/// [`CtlSocket::stop`] or drop.
#[derive(Debug)]
pub struct CtlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CtlSocket {
    /// Creates the socket at `path` (mode 0600) and serves it on a thread of its own.
    pub fn bind(path: impl Into<PathBuf>, control: ControlHandle) -> io::Result<Self> {
        let path = path.into();
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        remove_stale(&path).map_err(ctx)?;
        let tmp = temp_name(&path);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(ctx)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(ctx(e));
        }
        listener.set_nonblocking(true).map_err(ctx)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("gatekit-ctl".into())
            .spawn({
                let stop = stop.clone();
                move || accept_loop(listener, control, stop)
            })
            .map_err(ctx)?;
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(CtlSocket {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the accept thread and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for CtlSocket {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// Removes a socket file nobody listens on; refuses to touch a live socket or another file.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket; refusing to replace it",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another gateway is listening on this control socket",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

fn accept_loop(listener: UnixListener, control: ControlHandle, stop: Arc<AtomicBool>) {
    let ep = accept::Endpoint {
        what: "control socket",
        thread: "gatekit-ctl-conn",
        max: MAX_CONNECTIONS,
        refuse,
        serve: {
            let stop = stop.clone();
            move |stream| serve(stream, &control, &stop)
        },
    };
    accept::run(listener, &stop, ep);
}

fn refuse(mut stream: UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    write_reply(
        &mut stream,
        &Reply::Error {
            message: format!("too many control connections ({MAX_CONNECTIONS}); try again"),
        },
    )
}

fn serve(stream: UnixStream, control: &ControlHandle, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    // One byte over the limit tells an over-long line from one that just fits.
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") && n > MAX_LINE {
            write_reply(
                &mut writer,
                &Reply::Error {
                    message: format!("request line longer than {MAX_LINE} bytes; closing"),
                },
            )?;
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match parse_request(&line) {
            Ok(cmd) => control.execute(cmd, REPLY_TIMEOUT),
            Err(reply) => reply,
        };
        write_reply(&mut writer, &reply)?;
    }
    Ok(())
}

fn write_reply(w: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let mut out = serde_json::to_vec(reply).map_err(io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_request(b"{\"cmd\":\"status\"}\n"),
            Ok(Command::Status)
        );
        assert_eq!(
            parse_request(b"{\"cmd\":\"reload\"}\r\n"),
            Ok(Command::Reload)
        );
        assert_eq!(
            parse_request(br#"{"cmd":"capture_start","port":"lan0","file":"/tmp/x.pcap"}"#),
            Ok(Command::CaptureStart {
                port: "lan0".into(),
                file: "/tmp/x.pcap".into()
            })
        );
    }

    #[test]
    fn bad_requests_say_what_was_expected() {
        for bad in [
            &b"status"[..],
            b"{\"cmd\":\"reboot\"}",
            b"{\"cmd\":\"capture_stop\"}",
            b"\xff{}",
            b"",
        ] {
            match parse_request(bad) {
                Err(Reply::Error { message }) => {
                    assert!(message.contains("expected one JSON object"), "{message}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
