//! End to end, as root, in network namespaces this test creates: two gatekit gateways (the
//! real binary, on TUN devices and underlay sockets) with a host behind each.
//!
//! ```text
//! hA 10.1.0.10 ─ gwA [lan0 TUN] ═ underlay ═ (nat: nftables masquerade) ═ gwB [lan0 TUN] ─ hB 10.2.0.10
//! ```
//!
//! Native ESP runs over a direct veth; NAT-T runs through a third namespace doing nftables
//! masquerade. Each scenario pings across, moves 100 MB over TCP whose SHA-256 is checked on
//! arrival, exercises the firewall (a DNAT port forward and a drop rule) and floods the
//! gateways with malformed packets while a transfer runs.
//!
//! `garbage_into_the_tun` writes random and malformed packets into both TUN devices (as if
//! from the sites' networks) while a transfer runs.
//!
//! A further scenario bridges one IP subnet across two sites: Ethernet over GRE (`teb`) inside
//! transport-mode ESP, between TAP devices joined to Linux bridges (see
//! `l2_bridge_over_gre_over_esp`).
//!
//! Without root or the tools, the tests fail when `CI` is set and skip (saying so) otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have_root_and_tools() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let tools = ["ip", "nft", "python3", "ping"].iter().all(|t| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let tun = Path::new("/dev/net/tun").exists();
    match (root && tools && tun, std::env::var_os("CI").is_some()) {
        (true, _) => true,
        (false, true) => {
            panic!("CI: namespace tests need root, /dev/net/tun, ip, nft, python3 and ping")
        }
        (false, false) => {
            eprintln!("skipping: needs root, /dev/net/tun, ip, nft, python3 and ping");
            false
        }
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces and processes of one scenario, torn down on drop (also on panic).
struct Topo {
    /// Namespace name prefix: each test family has its own, so nothing else is touched.
    prefix: &'static str,
    tag: String,
    dir: PathBuf,
    gateways: Vec<Child>,
}

impl Topo {
    fn ns(&self, n: &str) -> String {
        format!("{}{}{}", self.prefix, n, self.tag)
    }
    fn exec(&self, n: &str, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.ns(n)))
    }
    fn exec_ok(&self, n: &str, cmd: &str) -> bool {
        sh_ok(&format!("ip netns exec {} {cmd}", self.ns(n)))
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            // SIGTERM: the gateway drains and exits cleanly; check it does.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(g.id().to_string())
                .status();
        }
        for g in &mut self.gateways {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match g.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = g.kill();
                        let _ = g.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        for n in ["hA", "hB", "gA", "gB", "nat"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const KEYS_A_TO_B: &str = "4a4b4c4d4e4f50515253545556575859 01020304";
const KEYS_B_TO_A: &str = "a4b4c4d4e4f405152535455565758595 05060708";

#[allow(clippy::too_many_arguments)]
fn site_config(
    name: &str,
    underlay: &str,
    lan_transit: &str,
    local_net: &str,
    remote_net: &str,
    peer_addr: &str,
    encap: &str,
    spi_out: u32,
    spi_in: u32,
    key_out: &str,
    key_in: &str,
    rules: &str,
    metrics: Option<u16>,
) -> String {
    let metrics = metrics
        .map(|p| format!("metrics = \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[gateway]
name = "{name}"
{metrics}
[underlay]
address = "{underlay}"

[[interface]]
name = "lan0"
kind = "tun"
address = "{lan_transit}"

[[route]]
prefix = "{local_net}"
via = "interface:lan0"

[[route]]
prefix = "{remote_net}"
via = "ipsec:peer"

[[ipsec.peer]]
name = "peer"
remote = "{peer_addr}"
encap = "{encap}"
keepalive = 1

[[ipsec.peer.tunnel]]
local_ts = ["{local_net}"]
remote_ts = ["{remote_net}"]
spi_out = {spi_out}
spi_in = {spi_in}
key_out = "{key_out}"
key_in = "{key_in}"

[firewall]
rules = """
{rules}
"""
"#
    )
}

/// Builds the namespaces; `natted` puts a masquerading NAT between the gateways.
fn topology(natted: bool, rules_b: &str) -> Topo {
    topology_tagged(natted, rules_b, if natted { "n" } else { "d" })
}

/// As [`topology`], with `suffix` in the names so that scenarios of one test process can
/// run side by side.
fn topology_tagged(natted: bool, rules_b: &str, suffix: &str) -> Topo {
    let tag = format!("{}{}", std::process::id() % 100_000, suffix);
    let dir = std::env::temp_dir().join(format!("gatekit-e2e-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Topo {
        prefix: "gk",
        tag,
        dir,
        gateways: Vec::new(),
    };
    for n in ["hA", "hB", "gA", "gB"] {
        sh(&format!("ip netns add {}", t.ns(n)));
        t.exec(n, "ip link set lo up");
    }
    // Hosts to gateways.
    for (h, g, net) in [("hA", "gA", "10.1.0"), ("hB", "gB", "10.2.0")] {
        let (hv, gv) = (format!("h{}", t.tag), format!("g{}", t.tag));
        sh(&format!(
            "ip link add {hv} netns {} type veth peer name {gv} netns {}",
            t.ns(h),
            t.ns(g)
        ));
        t.exec(h, &format!("ip addr add {net}.10/24 dev {hv}"));
        t.exec(h, &format!("ip link set {hv} up mtu 1400"));
        t.exec(h, &format!("ip route add default via {net}.1"));
        t.exec(g, &format!("ip addr add {net}.1/24 dev {gv}"));
        t.exec(g, &format!("ip link set {gv} up mtu 1400"));
        t.exec(g, "sysctl -qw net.ipv4.ip_forward=1");
    }
    // The underlay.
    let (a_addr, b_addr, a_peer) = if natted {
        sh(&format!("ip netns add {}", t.ns("nat")));
        t.exec("nat", "ip link set lo up");
        sh(&format!(
            "ip link add ua{} netns {} type veth peer name na{} netns {}",
            t.tag,
            t.ns("gA"),
            t.tag,
            t.ns("nat")
        ));
        sh(&format!(
            "ip link add ub{} netns {} type veth peer name nb{} netns {}",
            t.tag,
            t.ns("gB"),
            t.tag,
            t.ns("nat")
        ));
        t.exec(
            "gA",
            &format!("ip addr add 198.51.100.1/24 dev ua{}", t.tag),
        );
        t.exec("gA", &format!("ip link set ua{} up", t.tag));
        t.exec(
            "nat",
            &format!("ip addr add 198.51.100.2/24 dev na{}", t.tag),
        );
        t.exec(
            "nat",
            &format!("ip addr add 192.168.0.1/24 dev nb{}", t.tag),
        );
        t.exec("nat", &format!("ip link set na{} up", t.tag));
        t.exec("nat", &format!("ip link set nb{} up", t.tag));
        t.exec("nat", "sysctl -qw net.ipv4.ip_forward=1");
        t.exec("gB", &format!("ip addr add 192.168.0.2/24 dev ub{}", t.tag));
        t.exec("gB", &format!("ip link set ub{} up", t.tag));
        t.exec("gB", "ip route add default via 192.168.0.1");
        let nft = t.dir.join("nat.nft");
        std::fs::write(
            &nft,
            format!(
                "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100;\n    oifname \"na{}\" masquerade\n  }}\n}}\n",
                t.tag
            ),
        )
        .unwrap();
        t.exec("nat", &format!("nft -f {}", nft.display()));
        ("198.51.100.1", "192.168.0.2", "198.51.100.2")
    } else {
        sh(&format!(
            "ip link add ua{} netns {} type veth peer name ub{} netns {}",
            t.tag,
            t.ns("gA"),
            t.tag,
            t.ns("gB")
        ));
        t.exec("gA", &format!("ip addr add 192.0.2.1/24 dev ua{}", t.tag));
        t.exec("gB", &format!("ip addr add 192.0.2.2/24 dev ub{}", t.tag));
        t.exec("gA", &format!("ip link set ua{} up", t.tag));
        t.exec("gB", &format!("ip link set ub{} up", t.tag));
        ("192.0.2.1", "192.0.2.2", "192.0.2.2")
    };
    let encap = if natted { "udp" } else { "native" };
    let b_peer = a_addr;
    let cfg_a = site_config(
        "gw-a",
        a_addr,
        "169.254.10.1/30",
        "10.1.0.0/24",
        "10.2.0.0/24",
        a_peer,
        encap,
        0x1002,
        0x2001,
        KEYS_A_TO_B,
        KEYS_B_TO_A,
        "",
        Some(18_000 + (std::process::id() % 1000) as u16),
    );
    let cfg_b = site_config(
        "gw-b",
        b_addr,
        "169.254.20.1/30",
        "10.2.0.0/24",
        "10.1.0.0/24",
        b_peer,
        encap,
        0x2001,
        0x1002,
        KEYS_B_TO_A,
        KEYS_A_TO_B,
        rules_b,
        Some(19_000 + (std::process::id() % 1000) as u16),
    );
    t.start_gateways(cfg_a, cfg_b);
    // The TUN devices come up with the gateways; then the kernels route the remote site
    // into them.
    for (g, remote) in [("gA", "10.2.0.0/24"), ("gB", "10.1.0.0/24")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.exec_ok(g, "sh -c 'ip link show dev lan0 up | grep -q lan0'") {
            assert!(
                Instant::now() < deadline,
                "{g}: lan0 did not appear: {}",
                t.log(g)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t.exec(g, &format!("ip route add {remote} dev lan0"));
    }
    t
}

impl Topo {
    /// Checks both configs with `--check`, then starts gw-a and gw-b in their namespaces,
    /// each logging to `DIR/gX.log`.
    fn start_gateways(&mut self, cfg_a: String, cfg_b: String) {
        let t = self;
        let bin = env!("CARGO_BIN_EXE_gatekit-gateway");
        for (g, cfg) in [("gA", cfg_a), ("gB", cfg_b)] {
            let path = t.dir.join(format!("{g}.toml"));
            std::fs::write(&path, cfg).unwrap();
            let check = Command::new(bin)
                .arg("-c")
                .arg(&path)
                .arg("--check")
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
            let log = std::fs::File::create(t.dir.join(format!("{g}.log"))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &t.ns(g), bin, "-c"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            t.gateways.push(child);
        }
    }
}

/// The metrics/status endpoint of gateway `g` (on loopback in its own namespace).
fn metrics_port(g: &str) -> u16 {
    (if g == "gA" { 18_000 } else { 19_000 }) + (std::process::id() % 1000) as u16
}

impl Topo {
    /// GET `path` (`/status`, `/metrics`) from gateway `g`'s endpoint.
    fn http_get(&self, g: &str, path: &str) -> String {
        self.exec(
            g,
            &format!(
                "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}{path}', timeout=10).read().decode())\"",
                metrics_port(g)
            ),
        )
    }

    /// Gateway `g`'s status snapshot. The data path publishes one every 100 ms: callers that
    /// need a counter to have moved poll for it.
    fn status(&self, g: &str) -> gatekit_gateway::status::Snapshot {
        let body = self.http_get(g, "/status");
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{g} /status: {e}: {body}"))
    }

    /// Waits until gateway `g`'s data path runs: its first snapshot, which the worker
    /// publishes once it holds all its devices and sockets, names it `name`.
    fn wait_running(&self, g: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = Command::new("ip")
                .args(["netns", "exec", &self.ns(g), "python3", "-c"])
                .arg(format!(
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/status', timeout=5).read().decode())",
                    metrics_port(g)
                ))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let snap: Option<gatekit_gateway::status::Snapshot> =
                serde_json::from_str(body.trim()).ok();
            if snap.is_some_and(|s| s.name == name) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{g}: data path not running: {}",
                self.log(g)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The NAT's rules and connection table, for failures.
    fn nat_state(&self) -> String {
        if !Path::new(&format!("/run/netns/{}", self.ns("nat"))).exists() {
            return String::new();
        }
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("nat"),
                "sh",
                "-c",
                "nft list ruleset; cat /proc/net/nf_conntrack 2>/dev/null; ip -s link",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("--- nat\n{o}")
    }

    /// The gateway's log and its status (JSON from its metrics endpoint), for failures.
    fn log(&self, g: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{g}.log"))).unwrap_or_default();
        let port = metrics_port(g);
        let status = Command::new("ip")
            .args(["netns", "exec", &self.ns(g), "python3", "-c"])
            .arg(format!("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/status').read().decode())"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("--- {g} log\n{log}\n--- {g} status\n{status}")
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        // The first packets may race the NAT mapping or ARP; allow a few tries.
        for _ in 0..5 {
            if self.exec_ok(from, &format!("ping -c 2 -W 1 -i 0.2 {to} >/dev/null")) {
                return true;
            }
        }
        false
    }

    /// Sends `mb` MB from `from` to `to_ns` listening on `to_addr:port`; returns whether the
    /// SHA-256 computed on arrival matches the sent one.
    fn transfer(
        &self,
        from: &str,
        to_ns: &str,
        to_addr: &str,
        port: u16,
        mb: usize,
    ) -> Result<(), String> {
        let server = self.dir.join(format!("server{port}.py"));
        std::fs::write(
            &server,
            format!(
                "import socket, hashlib, sys\n\
                 s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('0.0.0.0', {port})); s.listen(1); s.settimeout(60)\n\
                 c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0\n\
                 while True:\n    b = c.recv(1 << 16)\n    if not b: break\n    h.update(b); n += len(b)\n\
                 print(n, h.hexdigest()); sys.stdout.flush()\n"
            ),
        )
        .unwrap();
        let out = self.dir.join(format!("server{port}.out"));
        let mut srv = Command::new("ip")
            .args(["netns", "exec", &self.ns(to_ns), "python3"])
            .arg(&server)
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let client = self.dir.join(format!("client{port}.py"));
        std::fs::write(
            &client,
            format!(
                "import socket, hashlib, random\n\
                 r = random.Random(42); h = hashlib.sha256()\n\
                 import time\n\
                 for attempt in range(50):\n    try:\n        s = socket.create_connection(('{to_addr}', {port}), timeout=30); break\n    except ConnectionRefusedError:\n        time.sleep(0.2)\n\
                 s.settimeout(60)\n\
                 for i in range({mb} * 16):\n    b = r.randbytes(1 << 16)\n    h.update(b); s.sendall(b)\n\
                 s.close(); print({mb} * 16 * 65536, h.hexdigest())\n"
            ),
        )
        .unwrap();
        let sent = Command::new("ip")
            .args(["netns", "exec", &self.ns(from), "python3"])
            .arg(&client)
            .output()
            .unwrap();
        let status = srv.wait().unwrap();
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        let sent_s = String::from_utf8_lossy(&sent.stdout).to_string();
        if !sent.status.success() || !status.success() {
            return Err(format!(
                "client: {sent_s} {} server: {got}",
                String::from_utf8_lossy(&sent.stderr)
            ));
        }
        if sent_s.trim() != got.trim() || sent_s.trim().is_empty() {
            return Err(format!("sent {sent_s:?}, received {got:?}"));
        }
        Ok(())
    }
}

fn scenario(natted: bool) {
    if !have_root_and_tools() {
        return;
    }
    // On gw-b: a port forward (10.2.0.10:8888 → 10.2.0.10:9000) for traffic from the tunnel,
    // and a drop rule for port 7000.
    let rules_b = "PREROUTING_CUST -i ipsec-peer -p tcp --dport 8888 -j DNAT --to-destination 10.2.0.10:9000\n\
                   FORWARD_CUST -p tcp --dport 7000 -j DROP";
    let t = topology(natted, rules_b);
    // The site behind the NAT speaks first: with static keys there is no IKE exchange to
    // learn its NAT mapping from, so site A learns it from B's first authenticated packet.
    assert!(
        t.ping("hB", "10.1.0.10"),
        "ping B→A failed\n{}\n{}\n{}",
        t.log("gA"),
        t.log("gB"),
        t.nat_state()
    );
    assert!(
        t.ping("hA", "10.2.0.10"),
        "ping A→B failed\n{}\n{}\n{}",
        t.log("gA"),
        t.log("gB"),
        t.nat_state()
    );

    let started = Instant::now();
    t.transfer("hA", "hB", "10.2.0.10", 5001, 100)
        .unwrap_or_else(|e| panic!("100 MB transfer: {e}\n{}\n{}", t.log("gA"), t.log("gB")));
    eprintln!(
        "100 MB A→B through {} ESP in {:?}",
        if natted { "NAT-T" } else { "native" },
        started.elapsed()
    );
    // gw-b's filter table (one drop rule) cannot tell the segments of an established flow
    // apart, so most of them follow the path their flow's previous packet took.
    std::thread::sleep(Duration::from_millis(300));
    let fw = t.status("gB").firewall;
    eprintln!("gw-b firewall: {fw:?}");
    assert!(
        fw.fast_path > fw.packets / 2 && fw.accepted <= fw.packets,
        "firewall counters of gw-b after the transfer: {fw:?}"
    );

    // The port forward: hA connects to 10.2.0.10:8888 and lands on hB's port 9000.
    t.transfer_via("hA", "hB", "10.2.0.10", 8888, 9000).unwrap();
    // The drop rule: nothing gets through to port 7000.
    assert!(
        !t.exec_ok("hA", "python3 -c \"import socket; socket.create_connection(('10.2.0.10', 7000), timeout=2)\" 2>/dev/null"),
        "port 7000 should be dropped"
    );

    // A flood of malformed packets while a transfer runs: only counters change.
    let flooder = t.dir.join("flood.py");
    std::fs::write(
        &flooder,
        "import socket, random, os, sys\n\
         r = random.Random(7); peer = sys.argv[1]\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         e = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)\n\
         g = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)\n\
         for i in range(3000):\n    b = r.randbytes(r.randrange(0, 1400))\n    \
         u.sendto(b, (peer, 4500)); u.sendto(b, (peer, 500)); e.sendto(b, (peer, 0)); g.sendto(b, (peer, 0))\n",
    )
    .unwrap();
    let peer = if natted { "198.51.100.1" } else { "192.0.2.1" };
    let flood_ns = if natted { "nat" } else { "gB" };
    let mut flood = Command::new("ip")
        .args(["netns", "exec", &t.ns(flood_ns), "python3"])
        .arg(&flooder)
        .arg(peer)
        .spawn()
        .unwrap();
    // This flood comes from the underlay; `garbage_into_the_tun` sends malformed packets
    // into the TUN devices, from the sites' side.
    t.transfer("hA", "hB", "10.2.0.10", 5002, 20)
        .unwrap_or_else(|e| panic!("transfer under flood: {e}\n{}", t.log("gA")));
    assert!(flood.wait().unwrap().success());
    assert!(t.ping("hA", "10.2.0.10"), "the tunnel survives the flood");
    for g in ["gA", "gB"] {
        assert!(!t.log(g).contains("panicked"), "{g} panicked: {}", t.log(g));
    }
    if !natted {
        // The metrics endpoint of gw-b shows the SAs' and drops' counters.
        let port = 19_000 + (std::process::id() % 1000) as u16;
        let body = t.exec("gB", &format!("python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())\""));
        assert!(body.contains("gatekit_sa_packets_total"), "{body}");

        // Reload under a running transfer: a new rule is added by SIGHUP while 30 MB flow;
        // the established flow survives (SAs and conntrack kept) and the rule is live after.
        let path = t.dir.join("gB.toml");
        let cfg = std::fs::read_to_string(&path).unwrap();
        let pid = t.gateways[1].id();
        let (good, bad) = (
            cfg.replace("FORWARD_CUST -p tcp --dport 7000 -j DROP", "FORWARD_CUST -p tcp --dport 7000 -j DROP\nFORWARD_CUST -p tcp --dport 7001 -j DROP"),
            cfg.replace("spi_in = 4098", "spi_in = 4098\nspi_inn = 1"),
        );
        let reloader = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                std::fs::write(&path, bad).unwrap();
                sh(&format!("kill -HUP {pid}"));
                std::thread::sleep(Duration::from_millis(700));
                std::fs::write(&path, good).unwrap();
                sh(&format!("kill -HUP {pid}"));
            })
        };
        t.transfer("hA", "hB", "10.2.0.10", 5003, 30)
            .unwrap_or_else(|e| panic!("transfer across reloads: {e}\n{}", t.log("gB")));
        reloader.join().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let status = t.exec("gB", &format!("python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/status').read().decode())\""));
        let snap: gatekit_gateway::status::Snapshot = serde_json::from_str(status.trim()).unwrap();
        assert_eq!(snap.config_generation, 2, "one good reload: {status}");
        assert_eq!(snap.reload_failures, 1, "one bad reload refused: {status}");
        assert!(
            snap.firewall_rules.iter().any(|r| r.text.contains("7001")),
            "{status}"
        );
        assert!(t.log("gB").contains("reload refused"), "{}", t.log("gB"));
    }
    t.stop_cleanly();
}

impl Topo {
    /// SIGTERM to both gateways: each must exit 0 within 5 s and release its TUN/TAP device.
    fn stop_cleanly(mut self) {
        let mut gateways = std::mem::take(&mut self.gateways);
        for g in &gateways {
            sh(&format!("kill -TERM {}", g.id()));
        }
        for (g, name) in gateways.iter_mut().zip(["gA", "gB"]) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                if let Some(s) = g.try_wait().unwrap() {
                    break s;
                }
                assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(
                status.success(),
                "{name} exited with {status}: {}",
                self.log(name)
            );
            for dev in ["lan0", L2_TAP] {
                assert!(
                    !self.exec_ok(name, &format!("ip link show {dev} 2>/dev/null")),
                    "{name}: {dev} still exists"
                );
            }
        }
    }
}

impl Topo {
    /// Connects from `from` to `addr:port`, expecting the server on `to_ns` at `server_port`
    /// (a DNAT in between).
    fn transfer_via(
        &self,
        from: &str,
        to_ns: &str,
        addr: &str,
        port: u16,
        server_port: u16,
    ) -> Result<(), String> {
        let server = self.dir.join(format!("via{server_port}.py"));
        std::fs::write(
            &server,
            format!(
                "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('0.0.0.0', {server_port})); s.listen(1); s.settimeout(20)\n\
                 c, a = s.accept(); c.sendall(b'forwarded:' + c.recv(100)); c.close()\n"
            ),
        )
        .unwrap();
        let mut srv = Command::new("ip")
            .args(["netns", "exec", &self.ns(to_ns), "python3"])
            .arg(&server)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let out = self.exec(
            from,
            &format!("python3 -c \"import socket, time\nfor i in range(50):\n    try:\n        s=socket.create_connection(('{addr}', {port}), timeout=10); break\n    except ConnectionRefusedError: time.sleep(0.2)\ns.sendall(b'hi'); print(s.recv(100).decode())\""),
        );
        let _ = srv.wait();
        if out.trim() == "forwarded:hi" {
            Ok(())
        } else {
            Err(format!("got {out:?}"))
        }
    }
}

#[test]
fn site_to_site_native_esp() {
    scenario(false);
}

#[test]
fn site_to_site_nat_traversal() {
    scenario(true);
}

// ---------------------------------------------------------------------------------------------
// Layer 2: two bridge domains joined by Ethernet over GRE (TEB) inside transport-mode ESP.
//
// ```text
// hA 10.77.0.1 ─ veth ─ [br0 ─ l2tap TAP] gwA ══ ESP(GRE(Ethernet)) ══ gwB [l2tap TAP ─ br0] ─ veth ─ hB 10.77.0.2
// ```
//
// Both hosts are on one IP subnet: ARP, unicast and everything else cross as frames. In each
// gateway namespace a Linux bridge joins the host's veth to the gateway's TAP; in the gateway,
// a bridge domain joins the TAP to the GRE tunnel.
//
// MTU: the hosts' links are 1400 bytes, so the largest frame is 1414 bytes (Ethernet header
// included), which is exactly the GRE tunnel's `mtu` (it counts the whole inner frame in
// `teb` mode). Outer packet: 20 (IPv4) + 8 (ESP header) + 8 (ChaCha20 IV) + 8 (GRE with key)
// + 1414 + 2 padding + 2 (ESP trailer) + 16 (ICV) = 1478 bytes, within the 1500-byte
// underlay: nothing is fragmented and nothing is dropped as too big, which the test checks.

/// The gateways' TAP device.
const L2_TAP: &str = "l2tap";
/// ChaCha20-Poly1305 keys (32 bytes) and salts (4 bytes) of the transport-mode SAs.
const L2_KEY_A_TO_B: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f a0a1a2a3";
const L2_KEY_B_TO_A: &str =
    "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff e0e1e2e3e4e5e6e7e8e9eaebecedeeef b0b1b2b3";

#[allow(clippy::too_many_arguments)]
fn l2_config(
    name: &str,
    underlay: &str,
    peer_addr: &str,
    spi_out: u32,
    spi_in: u32,
    key_out: &str,
    key_in: &str,
    metrics: u16,
) -> String {
    format!(
        r#"[gateway]
name = "{name}"
metrics = "127.0.0.1:{metrics}"

[underlay]
address = "{underlay}"

[[interface]]
name = "{L2_TAP}"
kind = "tap"
mtu = 1400

[[ipsec.peer]]
name = "peer"
remote = "{peer_addr}"
encap = "native"

[[ipsec.peer.tunnel]]
mode = "transport"
suite = "chacha20poly1305"
spi_out = {spi_out}
spi_in = {spi_in}
key_out = "{key_out}"
key_in = "{key_in}"

[[gre]]
name = "gre-peer"
remote = "{peer_addr}"
key = 42
mode = "teb"
over_ipsec = "peer"
mtu = 1414

[[bridge]]
name = "l2br"
ports = ["{L2_TAP}", "gre-peer"]
"#
    )
}

/// Builds the L2 scenario's namespaces (prefix `gkl2-`) and starts both gateways.
fn l2_topology() -> Topo {
    let tag = format!("{}l", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("gatekit-l2-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Topo {
        prefix: "gkl2-",
        tag,
        dir,
        gateways: Vec::new(),
    };
    for n in ["hA", "hB", "gA", "gB"] {
        sh(&format!("ip netns add {}", t.ns(n)));
        t.exec(n, "ip link set lo up");
    }
    for (h, g, addr) in [("hA", "gA", "10.77.0.1"), ("hB", "gB", "10.77.0.2")] {
        let (hv, gv) = (format!("h{}", t.tag), format!("g{}", t.tag));
        sh(&format!(
            "ip link add {hv} netns {} type veth peer name {gv} netns {}",
            t.ns(h),
            t.ns(g)
        ));
        t.exec(h, &format!("ip addr add {addr}/24 dev {hv}"));
        t.exec(h, &format!("ip link set {hv} mtu 1400 up"));
        t.exec(g, "ip link add br0 type bridge");
        t.exec(g, &format!("ip link set {gv} mtu 1400 master br0 up"));
        t.exec(g, "ip link set br0 up");
    }
    sh(&format!(
        "ip link add ua{} netns {} type veth peer name ub{} netns {}",
        t.tag,
        t.ns("gA"),
        t.tag,
        t.ns("gB")
    ));
    for (g, dev, addr) in [("gA", "ua", "192.0.2.1"), ("gB", "ub", "192.0.2.2")] {
        let dev = format!("{dev}{}", t.tag);
        t.exec(g, &format!("ip addr add {addr}/24 dev {dev}"));
        t.exec(g, &format!("ip link set {dev} up"));
        // What crosses the underlay, counted by the kernel independently of the gateway:
        // all IPv4, ESP and GRE, each way.
        let nft = t.dir.join(format!("{g}-count.nft"));
        std::fs::write(
            &nft,
            format!(
                r#"table inet gkl2count {{
  counter ip_out {{}}
  counter esp_out {{}}
  counter gre_out {{}}
  counter ip_in {{}}
  counter esp_in {{}}
  counter gre_in {{}}
  set other {{ type inet_proto . ipv4_addr; flags dynamic; }}
  set icmps {{ type icmp_type . icmp_code . ipv4_addr; flags dynamic; }}
  chain out {{
    type filter hook output priority 0;
    oifname "{dev}" meta nfproto ipv4 counter name ip_out
    oifname "{dev}" meta l4proto esp counter name esp_out
    oifname "{dev}" meta l4proto gre counter name gre_out
    oifname "{dev}" meta nfproto ipv4 meta l4proto != esp add @other {{ meta l4proto . ip daddr }}
    oifname "{dev}" meta l4proto icmp add @icmps {{ icmp type . icmp code . ip daddr }}
  }}
  chain in {{
    type filter hook input priority 0;
    iifname "{dev}" meta nfproto ipv4 counter name ip_in
    iifname "{dev}" meta l4proto esp counter name esp_in
    iifname "{dev}" meta l4proto gre counter name gre_in
    iifname "{dev}" meta nfproto ipv4 meta l4proto != esp add @other {{ meta l4proto . ip saddr }}
    iifname "{dev}" meta l4proto icmp add @icmps {{ icmp type . icmp code . ip saddr }}
  }}
}}
"#
            ),
        )
        .unwrap();
        t.exec(g, &format!("nft -f {}", nft.display()));
    }
    let cfg_a = l2_config(
        "gw-a",
        "192.0.2.1",
        "192.0.2.2",
        0x3002,
        0x3001,
        L2_KEY_A_TO_B,
        L2_KEY_B_TO_A,
        metrics_port("gA"),
    );
    let cfg_b = l2_config(
        "gw-b",
        "192.0.2.2",
        "192.0.2.1",
        0x3001,
        0x3002,
        L2_KEY_B_TO_A,
        L2_KEY_A_TO_B,
        metrics_port("gB"),
    );
    t.start_gateways(cfg_a, cfg_b);
    // The TAP devices come up with the gateways; then they join the Linux bridges.
    for g in ["gA", "gB"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.exec_ok(
            g,
            &format!("sh -c 'ip link show dev {L2_TAP} up | grep -q {L2_TAP}'"),
        ) {
            assert!(
                Instant::now() < deadline,
                "{g}: {L2_TAP} did not appear: {}",
                t.log(g)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t.exec(g, &format!("ip link set {L2_TAP} master br0 up"));
    }
    // Until a gateway's worker has opened its raw ESP socket, its kernel answers ESP from
    // the peer with "protocol unreachable". Count the underlay from when both run.
    for (g, name) in [("gA", "gw-a"), ("gB", "gw-b")] {
        t.wait_running(g, name);
    }
    for g in ["gA", "gB"] {
        t.exec(g, "nft reset counters table inet gkl2count >/dev/null");
        t.exec(g, "nft flush set inet gkl2count other");
        t.exec(g, "nft flush set inet gkl2count icmps");
    }
    t
}

impl Topo {
    /// The packet counts of the L2 scenario's nftables counters in namespace `g`, read at
    /// once (name → packets), and the listing they come from.
    fn nft_counts(&self, g: &str) -> (std::collections::BTreeMap<String, u64>, String) {
        let out = self.exec(g, "nft list counters table inet gkl2count");
        let mut counts = std::collections::BTreeMap::new();
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "counter"
                && let Some(name) = words.next()
            {
                let n = words
                    .by_ref()
                    .skip_while(|w| *w != "packets")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no packet count for {name} in {out:?}"));
                counts.insert(name.to_string(), n);
            }
        }
        (counts, out)
    }

    /// Packets counted by the nftables counter `name` of the L2 scenario in namespace `g`.
    fn nft_packets(&self, g: &str, name: &str) -> u64 {
        let (counts, out) = self.nft_counts(g);
        *counts
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name} in {out}"))
    }

    /// The MAC address of `dev` in namespace `n`.
    fn mac(&self, n: &str, dev: &str) -> String {
        self.exec(n, &format!("cat /sys/class/net/{dev}/address"))
            .trim()
            .to_lowercase()
    }

    /// Polls gateway `g`'s status until `pred` holds (the snapshot is republished every
    /// 100 ms); the last snapshot either way.
    fn status_until(
        &self,
        g: &str,
        pred: impl Fn(&gatekit_gateway::status::Snapshot) -> bool,
    ) -> (bool, gatekit_gateway::status::Snapshot) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.status(g);
            if pred(&s) {
                return (true, s);
            }
            if Instant::now() > deadline {
                return (false, s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `s` lists `mac` learned in bridge domain `l2br` on fabric port `port`.
fn learned(s: &gatekit_gateway::status::Snapshot, mac: &str, port: &str) -> bool {
    s.macs
        .iter()
        .any(|m| m.bridge == "l2br" && m.mac == mac && m.port == port && !m.is_static)
}

#[test]
fn l2_bridge_over_gre_over_esp() {
    if !have_root_and_tools() {
        return;
    }
    let t = l2_topology();
    let (hv, tag) = (format!("h{}", t.tag), t.tag.clone());
    let mac_a = t.mac("hA", &hv);
    let mac_b = t.mac("hB", &hv);
    assert_ne!(mac_a, mac_b);

    // ARP and ping, both ways.
    assert!(
        t.ping("hA", "10.77.0.2"),
        "ping A→B failed\n{}\n{}",
        t.log("gA"),
        t.log("gB")
    );
    assert!(
        t.ping("hB", "10.77.0.1"),
        "ping B→A failed\n{}\n{}",
        t.log("gA"),
        t.log("gB")
    );
    // Each host resolved the other's address to the other's real MAC, across the tunnel.
    for (h, peer_ip, peer_mac) in [("hA", "10.77.0.2", &mac_b), ("hB", "10.77.0.1", &mac_a)] {
        let neigh = t.exec(h, &format!("ip neigh show {peer_ip} dev h{tag}"));
        assert!(
            neigh.to_lowercase().contains(&format!("lladdr {peer_mac}")),
            "{h}: neighbour {peer_ip} is {neigh:?}, expected lladdr {peer_mac}"
        );
        eprintln!("{h}: {}", neigh.trim());
    }
    // Full-sized frames (1400-byte IP packets, 1414-byte frames) cross unfragmented.
    let rtt = t.exec(
        "hA",
        "ping -c 10 -i 0.2 -W 2 -M do -s 1372 10.77.0.2 | tail -2",
    );
    assert!(rtt.contains(" 0% packet loss"), "1400-byte pings: {rtt}");
    eprintln!("1400-byte pings A→B: {}", rtt.trim().replace('\n', "; "));

    // MAC learning: each gateway learned its own host on the TAP and the remote host on the
    // GRE tunnel.
    for (g, local, remote) in [("gA", &mac_a, &mac_b), ("gB", &mac_b, &mac_a)] {
        let (ok, s) = t.status_until(g, |s| {
            learned(s, local, L2_TAP) && learned(s, remote, "gre-peer")
        });
        assert!(
            ok,
            "{g}: expected {local} on {L2_TAP} and {remote} on gre-peer, MAC table: {:?}",
            s.macs
        );
        let metrics = t.http_get(g, "/metrics");
        let entries: u64 = metrics
            .lines()
            .find(|l| l.starts_with("gatekit_mac_entries{bridge=\"l2br\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{g}: no gatekit_mac_entries for l2br in:\n{metrics}"));
        assert!(entries >= 2, "{g}: {entries} MAC entries");
        eprintln!(
            "{g}: MAC table {:?}",
            s.macs
                .iter()
                .map(|m| format!("{} on {}", m.mac, m.port))
                .collect::<Vec<_>>()
        );
    }

    // Bulk traffic across the bridge.
    let esp_before = t.nft_packets("gA", "esp_out");
    let started = Instant::now();
    t.transfer("hA", "hB", "10.77.0.2", 5101, 10)
        .unwrap_or_else(|e| panic!("10 MB transfer: {e}\n{}\n{}", t.log("gA"), t.log("gB")));
    eprintln!(
        "10 MB A→B bridged over GRE over ESP in {:?}",
        started.elapsed()
    );

    // The underlay carried ESP and nothing else: no GRE in clear, no other IPv4.
    let sent = t.nft_packets("gA", "esp_out") - esp_before;
    // 10 MB in segments of at most 1348 bytes of payload: at least 7,700 ESP packets.
    assert!(sent >= 7_700, "gw-a sent {sent} ESP packets during 10 MB");
    for g in ["gA", "gB"] {
        let (c, listing) = t.nft_counts(g);
        eprintln!(
            "{g} underlay since both gateways run: out {} IPv4 = {} ESP + {} GRE; in {} IPv4 = {} ESP + {} GRE",
            c["ip_out"], c["esp_out"], c["gre_out"], c["ip_in"], c["esp_in"], c["gre_in"]
        );
        assert_eq!(
            (c["gre_out"], c["gre_in"]),
            (0, 0),
            "{g}: GRE in clear on the underlay: {listing}"
        );
        assert!(
            c["esp_out"] > 0 && c["esp_in"] > 0,
            "{g}: no ESP: {listing}"
        );
        // Every IPv4 packet that was not ESP, either way, would be in this set.
        let other = t.exec(g, "nft list set inet gkl2count other");
        assert!(
            !other.contains("elements"),
            "{g}: IPv4 other than ESP on the underlay: {}",
            t.exec(g, "nft list table inet gkl2count")
        );
    }
    // The gateways' own view: the transport-mode SAs carried it, nothing was too big for the
    // tunnel, nothing failed authentication.
    for g in ["gA", "gB"] {
        // gw-a encrypted the data, gw-b decrypted it; the ACKs went the other way.
        let data_dir = if g == "gA" { "out" } else { "in" };
        let (ok, s) = t.status_until(g, |s| {
            s.sas.len() == 2
                && s.sas.iter().all(|sa| {
                    sa.mode == "transport"
                        && sa.packets >= if sa.direction == data_dir { 7_700 } else { 1 }
                })
        });
        assert!(ok, "{g}: SAs {:?}", s.sas);
        eprintln!(
            "{g}: SAs {:?}; drops {:?}",
            s.sas
                .iter()
                .map(|sa| format!("{:#x} {} {} packets", sa.spi, sa.direction, sa.packets))
                .collect::<Vec<_>>(),
            s.drops
        );
        assert_eq!(
            s.drops.get("too_big").copied().unwrap_or(0),
            0,
            "{g}: {:?}",
            s.drops
        );
        for sa in &s.sas {
            assert!(
                sa.drops.is_empty(),
                "{g}: SA {:#x} dropped {:?}",
                sa.spi,
                sa.drops
            );
        }
        assert!(!t.log(g).contains("panicked"), "{}", t.log(g));
    }
    t.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// Garbage into the TUN: malformed packets arrive at a gateway from its own site's side.

/// Writes random and malformed packets into a TUN device from the kernel's side (an
/// `AF_PACKET` socket on the device: what the kernel transmits there is what the gateway
/// reads), in rounds of 500 random-length random-byte packets and a fixed set of nasties,
/// until a stop file appears (and at least 4 rounds ran). Writes a ready file after 2 rounds.
/// Prints what it sent as JSON; `surely_invalid` counts packets that are not IP at all
/// (no header of their version fits), which the gateway can only drop as malformed.
///
/// Usage: `tunflood.py IFNAME SEED SRC DST OWN READY_FILE STOP_FILE`: SRC is a site
/// address, DST an address of the remote site, OWN the gateway's address on the TUN.
const TUN_FLOOD_PY: &str = r#"
import socket, struct, random, os, sys, json, time

ifname, seed, src, dst, own, ready, stop = sys.argv[1:8]
r = random.Random(int(seed))
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
A = lambda a: socket.inet_aton(a)
SRC, DST, OWN = A(src), A(dst), A(own)

def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF

def v4(payload, proto=6, ihl=5, total=None, ver=4, frag=0, opts=b"", s_=SRC, d_=DST, ttl=64):
    total = 20 + len(opts) + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", (ver << 4) | ihl, 0, total & 0xFFFF, r.randrange(65536),
                    frag, ttl, proto, 0, s_, d_) + opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload

def v6(payload, nh=59, plen=None, s6=b"\xfd" + bytes(15), d6=b"\xfd" + bytes(14) + b"\x01"):
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", 0x60000000, plen & 0xFFFF, nh, 64, s6, d6) + payload

def tcp(sport=40000, dport=7999, off=5, flags=0x02, data=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, r.randrange(1 << 32), 0, off << 4, flags, 1024, 0, 0) + data

def udp(sport=40000, dport=7998, length=None, data=b""):
    length = 8 + len(data) if length is None else length
    return struct.pack("!HHHH", sport, dport, length & 0xFFFF, 0) + data

def icmp(t, c, body):
    h = struct.pack("!BBHI", t, c, 0, 0) + body
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]

def rb(n):
    return r.randbytes(n)

def nasties():
    yield b""                                            # zero-length (the kernel refuses: EINVAL)
    yield b"\x45"                                        # one byte
    yield rb(19)                                         # shorter than any IP header
    for ihl in (0, 1, 4):                                # IHL below 5
        yield v4(tcp(), ihl=ihl)
    yield v4(tcp(), ihl=15)                              # IHL beyond the packet
    yield v4(tcp(), ihl=6, opts=b"\x07\x00\x00\x00")     # option with length 0
    yield v4(tcp(), ihl=6, opts=b"\x44\xff\x05\x00")     # option running past the header
    yield v4(tcp(), total=1400)                          # total length beyond the packet
    yield v4(tcp(), total=10)                            # total length below the header
    yield v4(tcp(), total=0)
    yield v4(tcp(), ver=5)                               # version 5 (ST)
    yield v4(tcp(), ver=7)                               # version 7
    yield v4(tcp(), ver=0)
    yield v4(tcp(), ver=15)
    yield v4(tcp()[:10])                                 # truncated TCP
    yield v4(tcp(off=2))                                 # TCP data offset below 5
    yield v4(tcp(off=15))                                # TCP data offset beyond the packet
    yield v4(udp()[:4], proto=17)                        # truncated UDP
    yield v4(udp(length=3), proto=17)                    # UDP length below its header
    yield v4(udp(length=900, data=b"x"), proto=17)       # UDP length beyond the packet
    yield v4(b"", proto=6)                               # TCP with no header at all
    yield v4(b"", proto=1)                               # ICMP with no header at all
    yield v4(tcp()[:12], frag=0x2000)                    # first fragment, truncated TCP
    yield v4(rb(8), frag=0x0001)                         # later fragment alone
    yield v4(rb(8), frag=0x1fff)                         # fragment offset at the limit
    yield v4(rb(8), frag=0x8000)                         # reserved flag set
    yield v4(tcp(), ttl=0)                               # TTL 0
    yield v4(tcp(), ttl=1)                               # TTL 1: expires here
    # ICMP errors quoting garbage, a truncated header, a header claiming options.
    for t_, c_ in ((3, 4), (3, 1), (11, 0), (12, 0), (5, 1)):
        yield v4(icmp(t_, c_, rb(r.randrange(0, 60))), proto=1)
        yield v4(icmp(t_, c_, b"\x4f" + rb(7)), proto=1)
        yield v4(icmp(t_, c_, v4(tcp(), ihl=15)[:28]), proto=1)
    yield v4(icmp(3, 4, b""), proto=1)
    yield v4(icmp(3, 4, b"")[:4], proto=1)               # truncated ICMP header
    # Echo requests to the gateway itself, truncated or with a bogus IHL.
    yield v4(icmp(8, 0, b"")[:4], proto=1, d_=OWN)
    yield v4(icmp(8, 0, rb(8)), proto=1, d_=OWN, ihl=15)
    yield v4(icmp(8, 0, rb(8)), proto=1, d_=OWN, ihl=6, opts=b"\x01\x01\x01\x01")
    yield v4(icmp(8, 1, rb(8)), proto=1, d_=OWN)
    # IPv6: lengths and extension headers.
    yield v6(b"", plen=1000)                             # payload length beyond the packet
    yield v6(rb(10), plen=0)
    yield v6(b"\x3b\x00", nh=0)                          # hop-by-hop header cut short
    yield v6(b"\x3b\xff" + bytes(6), nh=0)               # hop-by-hop claiming 2 KiB
    yield v6(b"\x3b\x10\x00\x01", nh=43)                 # routing header cut short
    yield v6(b"\x06\x00\x00", nh=44)                     # fragment header cut short
    yield v6(b"\x00\x00" + bytes(6), nh=0)               # hop-by-hop followed by nothing
    yield v6(b"".join(bytes([0, 0]) + bytes(6) for _ in range(40)), nh=0)  # 40 headers
    yield v6(tcp()[:10], nh=6)                           # truncated TCP
    yield v6(struct.pack("!BBHI", 1, 4, 0, 0) + rb(30), nh=58)   # ICMPv6 error quoting garbage
    yield v6(struct.pack("!BBHI", 2, 0, 0, 1280) + rb(3), nh=58)  # packet too big, garbage
    yield v6(b"\x00", nh=58)                             # ICMPv6 header cut short
    yield rb(39)                                         # shorter than an IPv6 header
    yield b"\x60" + rb(38)
    yield rb(1400)                                       # MTU-sized garbage

def surely_invalid(b):
    # Not an IP packet at all: the gateway cannot even read a destination from it.
    if not b:
        return True
    v = b[0] >> 4
    return v not in (4, 6) or (v == 4 and len(b) < 20) or (v == 6 and len(b) < 40)

sent = invalid = errors = rounds = 0
err_kinds = {}
def send(b):
    global sent, invalid, errors
    proto = 0x86DD if b and b[0] >> 4 == 6 else 0x0800
    try:
        s.sendto(b, (ifname, proto))
        sent += 1
        invalid += surely_invalid(b)
    except OSError as e:
        errors += 1
        err_kinds[e.strerror] = err_kinds.get(e.strerror, 0) + 1

started = time.time()
while True:
    for i in range(500):
        send(rb(r.randrange(0, 1401)))
        if i % 50 == 0:
            time.sleep(0.001)
    for b in nasties():
        send(b)
    rounds += 1
    if rounds == 2:
        open(ready, "w").write("ready")
    if (os.path.exists(stop) and rounds >= 4) or time.time() - started > 300:
        break
print(json.dumps({"sent": sent, "surely_invalid": invalid, "errors": errors,
                  "error_kinds": err_kinds, "rounds": rounds}))
"#;

/// A helper process killed when the test ends, also on a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Topo {
    /// Packets the kernel of `g` dropped on the way into lan0 (the TUN's queue was full).
    fn tun_tx_dropped(&self, g: &str) -> u64 {
        self.exec(g, "cat /sys/class/net/lan0/statistics/tx_dropped")
            .trim()
            .parse()
            .unwrap()
    }
}

/// Drops by reason, from a status snapshot.
fn drops_of(s: &gatekit_gateway::status::Snapshot, reason: &str) -> u64 {
    s.drops.get(reason).copied().unwrap_or(0)
}

#[test]
fn garbage_into_the_tun() {
    if !have_root_and_tools() {
        return;
    }
    // gw-b runs the same firewall as the site-to-site scenarios (so its side goes through
    // conntrack and NAT); gw-a has no rules.
    let rules_b = "PREROUTING_CUST -i ipsec-peer -p tcp --dport 8888 -j DNAT --to-destination 10.2.0.10:9000\n\
                   FORWARD_CUST -p tcp --dport 7000 -j DROP";
    let mut t = topology_tagged(false, rules_b, "g");
    assert!(
        t.ping("hA", "10.2.0.10") && t.ping("hB", "10.1.0.10"),
        "no ping before the flood\n{}\n{}",
        t.log("gA"),
        t.log("gB")
    );
    let sites = [
        ("gA", "10.1.0.99", "10.2.0.10", "169.254.10.1", 1),
        ("gB", "10.2.0.99", "10.1.0.10", "169.254.20.1", 2),
    ];
    let before: Vec<_> = sites
        .iter()
        .map(|(g, ..)| (t.status(g), t.tun_tx_dropped(g)))
        .collect();

    let script = t.dir.join("tunflood.py");
    std::fs::write(&script, TUN_FLOOD_PY).unwrap();
    let mut floods = Vec::new();
    for (g, src, dst, own, seed) in sites {
        let (ready, stop, out) = (
            t.dir.join(format!("{g}.flood-ready")),
            t.dir.join(format!("{g}.flood-stop")),
            t.dir.join(format!("{g}.flood-out")),
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &t.ns(g), "python3"])
            .arg(&script)
            .args(["lan0", &seed.to_string(), src, dst, own])
            .arg(&ready)
            .arg(&stop)
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap();
        floods.push((g, KillOnDrop(child), ready, stop, out));
    }
    // The transfer starts once both floods run, and they run until it is over.
    for (g, child, ready, ..) in &mut floods {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "{g}: the flooder exited early"
            );
            assert!(Instant::now() < deadline, "{g}: the flood did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let started = Instant::now();
    let transferred = t.transfer("hA", "hB", "10.2.0.10", 5201, 20);
    let took = started.elapsed();
    let mut sent = Vec::new();
    for (g, mut child, _, stop, out) in floods {
        std::fs::write(&stop, "stop").unwrap();
        let status = child.0.wait().unwrap();
        let out = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(status.success(), "{g}: flooder failed: {out}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        eprintln!("{g} flood: {v}");
        sent.push((
            v["sent"].as_u64().unwrap(),
            v["surely_invalid"].as_u64().unwrap(),
        ));
    }
    transferred.unwrap_or_else(|e| {
        panic!(
            "20 MB under a TUN flood: {e}\n{}\n{}",
            t.log("gA"),
            t.log("gB")
        )
    });
    eprintln!("20 MB A→B under garbage into both TUNs in {took:?}");

    // The gateways are alive, did not panic, and the tunnel still works.
    for (i, (g, ..)) in sites.iter().enumerate() {
        assert!(
            t.gateways[i].try_wait().unwrap().is_none(),
            "{g} exited: {}",
            t.log(g)
        );
        assert!(!t.log(g).contains("panicked"), "{g} panicked: {}", t.log(g));
    }
    assert!(
        t.ping("hA", "10.2.0.10") && t.ping("hB", "10.1.0.10"),
        "the tunnel does not survive garbage from the sites\n{}\n{}",
        t.log("gA"),
        t.log("gB")
    );

    // Only counters changed. Every packet that is not IP at all reached the gateway's data
    // path as a drop, less what the kernel itself dropped on the TUN's queue.
    let (total_sent, mut total_dropped) = (sent.iter().map(|s| s.0).sum::<u64>(), 0);
    for (i, (g, ..)) in sites.iter().enumerate() {
        let (b, b_txd) = &before[i];
        let (sent_here, invalid_here) = sent[i];
        assert!(
            sent_here >= 2_000 && invalid_here >= 1_000,
            "{g}: the flood was too small to show anything: {sent_here} sent, {invalid_here} not IP"
        );
        let kernel_dropped = t.tun_tx_dropped(g) - b_txd;
        let floor = invalid_here.saturating_sub(kernel_dropped);
        let (ok, a) = t.status_until(g, |s| {
            drops_of(s, "malformed") - drops_of(b, "malformed") >= floor
        });
        let malformed = drops_of(&a, "malformed") - drops_of(b, "malformed");
        let rx = |s: &gatekit_gateway::status::Snapshot| {
            s.interfaces
                .iter()
                .find(|i| i.name == "lan0")
                .map_or(0, |i| i.rx_packets)
        };
        let deltas: std::collections::BTreeMap<&String, u64> = a
            .drops
            .iter()
            .map(|(r, n)| (r, n - b.drops.get(r).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        eprintln!(
            "{g}: sent {sent_here} ({invalid_here} not IP), kernel dropped {kernel_dropped} on lan0, \
             gateway read {} packets on lan0; drops since the flood began: {deltas:?}",
            rx(&a) - rx(b)
        );
        assert!(
            ok,
            "{g}: {malformed} malformed drops, expected at least {floor} ({invalid_here} packets not IP, {kernel_dropped} dropped by the kernel)"
        );
        total_dropped += deltas
            .iter()
            .filter(|(r, _)| !matches!(r.as_str(), "queue_full" | "no_buffer"))
            .map(|(_, n)| n)
            .sum::<u64>();
        // The state is the one before the flood: same SAs, all active and authenticating
        // everything, same routes and config.
        let sas = |s: &gatekit_gateway::status::Snapshot| {
            s.sas
                .iter()
                .map(|sa| (sa.spi, sa.direction.clone(), sa.state.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sas(&a), sas(b), "{g}: SAs changed");
        assert!(
            a.sas
                .iter()
                .all(|sa| sa.state == "active" && sa.drops.is_empty()),
            "{g}: {:?}",
            a.sas
        );
        assert_eq!(a.routes, b.routes, "{g}: routes changed");
        assert_eq!(a.config_generation, b.config_generation);
    }
    // A flood packet is dropped once at most (here, or at the far side if it was forwarded),
    // so the drops cannot outnumber the packets.
    assert!(
        total_dropped <= total_sent,
        "{total_dropped} drops for {total_sent} flood packets"
    );
    t.stop_cleanly();
}
