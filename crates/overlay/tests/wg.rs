//! Client packs against WireGuard's own tools (Debian wireguard-tools).
//!
//! `wg-quick strip` removes the wg-quick-only settings, then `wg setconf` parses the rest with
//! WireGuard's own configuration parser. This kernel has no WireGuard module, so instead of a
//! kernel interface the test plays a userspace WireGuard device: `wg` talks to any interface
//! that has a socket at `/var/run/wireguard/NAME.sock` with the cross-platform userspace API
//! (the protocol wireguard-go and boringtun speak). The test listens there, answers `errno=0`,
//! and checks the `set=1` request `wg` sends: that is exactly what `wg` understood of the
//! file. Nothing goes on any network.
//!
//! Needs `wg`, `wg-quick` and write access to /var/run/wireguard (root). Missing: the test
//! fails when `CI` is set, and is skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use gatekit_overlay::*;
use gatekit_packet::Instant;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn tools_present() -> bool {
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok =
        have("wg") && have("wg-quick") && std::fs::create_dir_all("/var/run/wireguard").is_ok();
    if !ok {
        let why = "wg/wg-quick (wireguard-tools) missing or /var/run/wireguard not writable";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must have them (scripts/install-deps.sh)");
        }
        eprintln!("skipping: {why}");
    }
    ok
}

fn run(cmd: &mut Command, stdin: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hex(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A userspace WireGuard device that records each `set` request and accepts it.
struct FakeDevice {
    sock: PathBuf,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDevice {
    fn new(name: &str) -> FakeDevice {
        let sock = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(&conn);
                let mut req = String::new();
                // A request ends with an empty line; `wg` also opens and closes a connection
                // just to see that the device is alive.
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\n" => break,
                        Ok(_) => req.push_str(&line),
                    }
                }
                if !req.is_empty() {
                    let _ = (&conn).write_all(b"errno=0\n\n");
                    r.lock().unwrap().push(req);
                }
            }
        });
        FakeDevice {
            sock,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn write_private(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn public_keys_match_wg_pubkey() {
    if !tools_present() {
        return;
    }
    for _ in 0..4 {
        let k = PrivateKey::generate();
        let (ok, out, err) = run(
            Command::new("wg").arg("pubkey"),
            &format!("{}\n", k.to_base64()),
        );
        assert!(ok, "{err}");
        assert_eq!(out.trim(), k.public_key().to_base64());
    }
    // And the other way: a key wg made, read by us.
    let (ok, private, _) = run(Command::new("wg").arg("genkey"), "");
    assert!(ok);
    let (ok, public, _) = run(Command::new("wg").arg("pubkey"), &private);
    assert!(ok);
    let k: PrivateKey = private.trim().parse().unwrap();
    assert_eq!(k.public_key().to_base64(), public.trim());
}

#[test]
fn client_pack_is_accepted_by_wg_quick_strip_and_wg_setconf() {
    if !tools_present() {
        return;
    }
    let plan = AddressPlan::new(PlanSpec {
        prefixes: vec![
            "10.100.0.0/16".parse().unwrap(),
            "fd00:100::/48".parse().unwrap(),
        ],
        segments: vec![SegmentSpec::new(
            "eng",
            [
                "10.100.1.0/24".parse().unwrap(),
                "fd00:100:0:1::/64".parse().unwrap(),
            ],
        )],
        ..PlanSpec::default()
    })
    .unwrap();
    let mut reg = Registry::new(plan);
    let member_key = PrivateKey::generate();
    let id = reg
        .add_member(
            NewMember::new(member_key.public_key(), "alice", "eng"),
            Instant::from_secs(1),
        )
        .unwrap();
    let gw_key = PrivateKey::generate();
    let mut gw = GatewayPeer::new(gw_key.public_key(), "192.0.2.1:51820").unwrap();
    gw.dns = vec!["10.100.0.1".parse().unwrap()];
    gw.mtu = Some(1420);
    let pack = reg.client_pack(id, &member_key, &gw).unwrap();

    let name = format!("gko{}", std::process::id() % 1_000_000);
    let dir = std::env::temp_dir().join(format!("gk-overlay-wg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join(format!("{name}.conf"));
    write_private(&conf, &pack.text);

    let (ok, stripped, err) = run(Command::new("wg-quick").arg("strip").arg(&conf), "");
    assert!(ok, "wg-quick strip refused the pack: {err}\n{}", pack.text);
    // The wg-quick settings are gone, the WireGuard ones are left.
    for gone in ["Address", "DNS", "MTU"] {
        assert!(!stripped.contains(gone), "{gone} left in:\n{stripped}");
    }
    let stripped_path = dir.join("stripped.conf");
    write_private(&stripped_path, &stripped);

    let dev = FakeDevice::new(&name);
    let (ok, _, err) = run(
        Command::new("wg")
            .arg("setconf")
            .arg(&name)
            .arg(&stripped_path),
        "",
    );
    assert!(ok, "wg setconf refused the pack: {err}\n{stripped}");
    let reqs = dev.take();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let lines: Vec<&str> = reqs[0].lines().collect();
    let want = [
        "set=1".to_string(),
        format!("private_key={}", hex(&member_key.to_base64())),
        "replace_peers=true".to_string(),
        format!("public_key={}", hex(&gw_key.public_key().to_base64())),
        "endpoint=192.0.2.1:51820".to_string(),
        "persistent_keepalive_interval=25".to_string(),
        "replace_allowed_ips=true".to_string(),
        "allowed_ip=10.100.0.0/16".to_string(),
        "allowed_ip=fd00:100::/48".to_string(),
    ];
    for w in &want {
        assert!(
            lines.contains(&w.as_str()),
            "wg did not send {w:?}: {lines:?}"
        );
    }
    // The peer's settings follow its public_key line, as the protocol requires.
    let pk = lines
        .iter()
        .position(|l| l.starts_with("public_key="))
        .unwrap();
    let ep = lines
        .iter()
        .position(|l| l.starts_with("endpoint="))
        .unwrap();
    assert!(ep > pk);

    // The check can fail: a pack with a mangled key is refused by wg.
    let broken = stripped.replace("PublicKey = ", "PublicKey = x");
    write_private(&stripped_path, &broken);
    let (ok, _, err) = run(
        Command::new("wg")
            .arg("setconf")
            .arg(&name)
            .arg(&stripped_path),
        "",
    );
    assert!(!ok, "wg accepted a broken key");
    assert!(
        err.contains("Key is not the correct length or format"),
        "{err}"
    );
    assert!(dev.take().is_empty());

    drop(dev);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pack_refuses_wrong_key_and_disabled_members() {
    let plan = AddressPlan::new(PlanSpec {
        prefixes: vec!["10.100.0.0/16".parse().unwrap()],
        segments: vec![SegmentSpec::new("eng", ["10.100.1.0/24".parse().unwrap()])],
        ..PlanSpec::default()
    })
    .unwrap();
    let mut reg = Registry::new(plan);
    let k = PrivateKey::from_bytes([7; 32]);
    let id = reg
        .add_member(NewMember::new(k.public_key(), "bob", "eng"), Instant::ZERO)
        .unwrap();
    let gw = GatewayPeer::new(
        PrivateKey::from_bytes([9; 32]).public_key(),
        "vpn.example.com:51820",
    )
    .unwrap();
    let text = reg.client_pack(id, &k, &gw).unwrap().text;
    assert!(text.contains("Address = 10.100.1.1/32\n"), "{text}");
    assert!(text.contains("Endpoint = vpn.example.com:51820\n"));
    assert!(text.contains("AllowedIPs = 10.100.0.0/16\n"));
    assert!(text.contains("PersistentKeepalive = 25\n"));
    assert!(matches!(
        reg.client_pack(id, &PrivateKey::from_bytes([8; 32]), &gw),
        Err(PackError::KeyMismatch { .. })
    ));
    reg.set_enabled(id, false, Instant::ZERO).unwrap();
    assert_eq!(
        reg.client_pack(id, &k, &gw).unwrap_err(),
        PackError::Disabled("bob".into())
    );
    assert!(matches!(
        GatewayPeer::new(k.public_key(), "nohost"),
        Err(PackError::BadEndpoint(_))
    ));
}
