//! The control socket over a real Unix socket: status, bad requests, commands forwarded to
//! the runtime's queue and answered, the socket file's life cycle, and the `gatekitctl`
//! library against it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_gateway::control::ctl::{self, Action, CtlError, View};
use gatekit_gateway::control::{ControlPlane, CtlSocket, MAX_LINE};
use gatekit_gateway::status::{Command, Reply, SaStatus, Snapshot};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("gatekit-ctl-{}-{tag}-{n}.sock", std::process::id()))
}

fn snapshot() -> Snapshot {
    Snapshot {
        name: "site-a".into(),
        config_generation: 1,
        sas: vec![SaStatus {
            peer: "site-b".into(),
            spi: 0x1001,
            direction: "in".into(),
            mode: "tunnel".into(),
            suite: "aes128gcm16".into(),
            encap: "native".into(),
            packets: 5,
            bytes: 500,
            state: "active".into(),
            ..SaStatus::default()
        }],
        ..Snapshot::default()
    }
}

/// Writes raw lines, reads one reply line per request line.
fn exchange(path: &std::path::Path, lines: &[&[u8]]) -> Vec<serde_json::Value> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    lines
        .iter()
        .map(|l| {
            s.write_all(l).unwrap();
            let mut answer = String::new();
            r.read_line(&mut answer).unwrap();
            assert!(answer.ends_with('\n'), "one reply per line: {answer:?}");
            serde_json::from_str(&answer).unwrap()
        })
        .collect()
}

#[test]
fn status_and_bad_requests() {
    let path = temp_path("status");
    let control = ControlPlane::new();
    control.publish(snapshot());
    let sock = CtlSocket::bind(&path, control.handle()).unwrap();

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let replies = exchange(
        &path,
        &[
            b"{\"cmd\":\"status\"}\n",
            b"status\n",
            b"{\"cmd\":\"format_disk\"}\n",
            b"\xff\xfe\n",
            b"{\"cmd\":\"capture_start\",\"port\":\"lan0\"}\n",
            // The connection still works after all that.
            b"{\"cmd\":\"status\"}\n",
        ],
    );
    assert_eq!(replies[0]["result"], "status");
    assert_eq!(replies[0]["name"], "site-a");
    let back: Reply = serde_json::from_value(replies[5].clone()).unwrap();
    assert_eq!(back, Reply::Status(Box::new(snapshot())));
    for r in &replies[1..5] {
        assert_eq!(r["result"], "error", "{r}");
        let m = r["message"].as_str().unwrap();
        assert!(m.contains("expected one JSON object per line"), "{m}");
    }
    assert!(
        replies[4]["message"].as_str().unwrap().contains("file"),
        "names the missing field: {}",
        replies[4]
    );
    // Nothing reached the runtime: status is answered from the snapshot, junk is refused.
    assert!(control.try_recv().is_none());

    sock.stop();
    assert!(!path.exists(), "socket file removed on stop");
}

#[test]
fn overlong_line_is_refused_and_closed() {
    let path = temp_path("long");
    let control = ControlPlane::new();
    let _sock = CtlSocket::bind(&path, control.handle()).unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let junk = vec![b'x'; MAX_LINE + 10];
    let _ = s.write_all(&junk);
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than"), "{answer}");
    // And the server still answers others.
    assert_eq!(
        exchange(&path, &[b"{\"cmd\":\"status\"}\n"])[0]["result"],
        "status"
    );
}

#[test]
fn commands_are_forwarded_to_the_runtime_and_answered() {
    let path = temp_path("reload");
    let control = ControlPlane::new();
    control.publish(snapshot());
    let _sock = CtlSocket::bind(&path, control.handle()).unwrap();

    // The runtime's loop: drains the queue without blocking, answers each request.
    let runtime = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            while let Some(req) = control.try_recv() {
                let reply = match req.command() {
                    Command::Reload => Reply::Ok {
                        message: "configuration 2 applied".into(),
                    },
                    Command::CaptureStart { file, .. } => Reply::Error {
                        message: format!("cannot create {file}"),
                    },
                    other => Reply::Ok {
                        message: format!("{other:?}"),
                    },
                };
                seen.push(req.command().clone());
                req.reply(reply);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });

    let mut out = Vec::new();
    ctl::run(&path, &Action::Reload, false, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "configuration 2 applied\n");

    let mut out = Vec::new();
    ctl::run(&path, &Action::Reload, true, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"], "ok");

    // A relative capture file is made absolute before it is sent.
    let err = ctl::run(
        &path,
        &Action::CaptureStart {
            port: "lan0".into(),
            file: "rel.pcap".into(),
        },
        false,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "the gateway says: cannot create {}",
            cwd.join("rel.pcap").display()
        )
    );

    let seen = runtime.join().unwrap();
    assert_eq!(seen[0], Command::Reload);
    assert_eq!(seen[1], Command::Reload);
    assert!(matches!(seen[2], Command::CaptureStart { .. }));
}

#[test]
fn gatekitctl_shows_tables_and_json() {
    let path = temp_path("show");
    let control = ControlPlane::new();
    control.publish(snapshot());
    let _sock = CtlSocket::bind(&path, control.handle()).unwrap();

    let mut out = Vec::new();
    ctl::run(&path, &Action::Show(View::Sas), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("PEER    SPI         DIR  MODE"), "{text}");
    assert!(text.contains("site-b  0x00001001  in   tunnel"), "{text}");

    let mut out = Vec::new();
    ctl::run(&path, &Action::Show(View::Sas), true, &mut out).unwrap();
    let sas: Vec<SaStatus> = serde_json::from_slice(&out).unwrap();
    assert_eq!(sas, snapshot().sas);

    let mut out = Vec::new();
    ctl::run(&path, &Action::Show(View::Status), true, &mut out).unwrap();
    let s: Snapshot = serde_json::from_slice(&out).unwrap();
    assert_eq!(s, snapshot());
}

#[test]
fn not_running_is_a_clear_error() {
    let path = temp_path("absent");
    let err = ctl::run(&path, &Action::Show(View::Status), false, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CtlError::NotRunning { .. }));
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string()
            .starts_with("the gateway is not running (cannot connect to "),
        "{err}"
    );
}

#[test]
fn stale_socket_is_replaced_live_one_and_other_files_are_not() {
    let path = temp_path("stale");
    // A socket file nobody listens on, as a crashed gateway leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let control = ControlPlane::new();
    let sock = CtlSocket::bind(&path, control.handle()).unwrap();
    assert_eq!(
        exchange(&path, &[b"{\"cmd\":\"status\"}\n"])[0]["result"],
        "status"
    );

    // A second gateway on the same path is refused, and the first keeps its socket.
    let other = ControlPlane::new();
    let err = CtlSocket::bind(&path, other.handle()).unwrap_err();
    assert!(err.to_string().contains("another gateway"), "{err}");
    assert_eq!(
        exchange(&path, &[b"{\"cmd\":\"status\"}\n"])[0]["result"],
        "status"
    );
    drop(sock);
    assert!(!path.exists());

    // A regular file is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let err = CtlSocket::bind(&path, other.handle()).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

/// Sixteen connections are served at once; the seventeenth is told so and closed, and the
/// socket takes new connections again as soon as one of the sixteen goes.
#[test]
fn connection_limit_refuses_then_recovers() {
    let path = temp_path("limit");
    let control = ControlPlane::new();
    control.publish(snapshot());
    let sock = CtlSocket::bind(&path, control.handle()).unwrap();

    // Sixteen held open, each proven served (a status answered) before the next.
    let mut held: Vec<UnixStream> = (0..16)
        .map(|_| {
            let s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            (&s).write_all(b"{\"cmd\":\"status\"}\n").unwrap();
            let mut answer = String::new();
            BufReader::new(&s).read_line(&mut answer).unwrap();
            assert!(answer.contains("site-a"), "{answer}");
            s
        })
        .collect();

    let refused = UnixStream::connect(&path).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&refused).read_line(&mut answer).unwrap();
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many control connections"), "{v}");

    // One goes; its slot comes back once its thread sees the close.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = exchange(&path, &[b"{\"cmd\":\"status\"}\n"]);
        if r[0]["name"] == "site-a" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slot came back: {}",
            r[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    sock.stop();
}
