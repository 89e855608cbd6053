//! The gateway on real devices: TUN/TAP interfaces, the underlay's UDP and raw sockets, one
//! data-path worker, and the control plane (metrics endpoint, control socket, signals).
//!
//! One worker owns every port and the whole data path. SAs keep sequence numbers and replay
//! windows, and conntrack keeps flows, per data path: one worker keeps them exact. The
//! kernel's side of the TUN and socket I/O runs on the other cores.

use crate::config::{Config, Encap, InterfaceKind};
use crate::control::{
    Captures, ControlHandle, ControlPlane, CtlSocket, LinkType, MetricsServer, SignalHandler,
};
use crate::pipeline::{Egress, Gateway, Ingress, Sink};
use crate::status::{Command, Reply};
use gatekit_io::{
    Event, EventLoop, EventLoopConfig, IPPROTO_ESP, IPPROTO_GRE, Interest, IoError, RawConfig,
    RawPort, Token, TunConfig, TunPort, TunQueue, UdpConfig, UdpPort, Worker, WorkerCtx,
};
use gatekit_packet::{Batch, DropReason, Instant, Meta, PacketBuf, Pool, PoolBuf, Port, PortId};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Packet buffers: 2 KiB with 256 bytes of headroom (outer IPv6 + UDP + ESP + GRE + VLAN).
const BUF_SIZE: usize = 2048 + 256;
const HEADROOM: usize = 256;
const BATCH: usize = 64;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file (re-read on reload).
    pub config: PathBuf,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The config is wrong (file, line, key, what was expected).
    #[error("{0}")]
    Config(String),
    /// A device or socket could not be opened or used.
    #[error("{0}")]
    Io(#[from] IoError),
    /// The control plane could not start.
    #[error("control plane: {0}")]
    Control(String),
}

/// What the setup closure moves into the worker thread.
struct Devices {
    tuns: Vec<(usize, TunQueue)>,
}

/// One port of the worker.
enum AnyPort {
    Tun(usize, TunPort<PoolBuf>),
    Udp(UdpPort<PoolBuf>),
    Vxlan(UdpPort<PoolBuf>),
    Esp(RawPort<PoolBuf>),
    Gre(RawPort<PoolBuf>),
}

impl AnyPort {
    fn recv(
        &mut self,
        b: &mut Batch<PoolBuf>,
        now: Instant,
    ) -> Result<usize, gatekit_packet::PortError> {
        match self {
            AnyPort::Tun(_, p) => p.recv(b, now),
            AnyPort::Udp(p) | AnyPort::Vxlan(p) => p.recv(b, now),
            AnyPort::Esp(p) | AnyPort::Gre(p) => p.recv(b, now),
        }
    }
    fn send(
        &mut self,
        b: &mut Batch<PoolBuf>,
        now: Instant,
    ) -> Result<usize, gatekit_packet::PortError> {
        match self {
            AnyPort::Tun(_, p) => p.send(b, now),
            AnyPort::Udp(p) | AnyPort::Vxlan(p) => p.send(b, now),
            AnyPort::Esp(p) | AnyPort::Gre(p) => p.send(b, now),
        }
    }
    fn ingress(&self) -> Ingress {
        match self {
            AnyPort::Tun(i, _) => Ingress::Iface(*i),
            _ => Ingress::Underlay,
        }
    }
}

/// The worker's sink: per-port output batches, flushed after each wake-up.
struct PortSink {
    pool: Pool,
    out: Vec<Batch<PoolBuf>>,
    /// Port index for each interface.
    iface_port: Vec<Option<usize>>,
    udp: Option<usize>,
    vxlan: Option<(usize, u16)>,
    esp: Option<usize>,
    gre: Option<usize>,
    unsendable: u64,
}

impl Sink<PoolBuf> for PortSink {
    fn emit(&mut self, to: Egress, buf: PoolBuf, meta: Meta) {
        let port = match to {
            Egress::Iface(i) => self.iface_port.get(i).copied().flatten(),
            Egress::Underlay => match underlay_kind(buf.data()) {
                Some((17, dport)) => match self.vxlan {
                    Some((p, vport)) if dport == vport => Some(p),
                    _ => self.udp,
                },
                Some((50, _)) => self.esp,
                Some((47, _)) => self.gre,
                _ => None,
            },
        };
        match port.and_then(|p| self.out.get_mut(p)) {
            Some(batch) => {
                if batch.push(buf, meta).is_err() {
                    self.unsendable += 1;
                }
            }
            None => self.unsendable += 1,
        }
    }
    fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.get()
    }
}

fn underlay_kind(p: &[u8]) -> Option<(u8, u16)> {
    let (proto, l4) = match p.first()? >> 4 {
        4 => (*p.get(9)?, usize::from(p[0] & 0x0f) * 4),
        6 => (*p.get(6)?, 40),
        _ => return None,
    };
    let dport = match p.get(l4 + 2..l4 + 4) {
        Some(d) if proto == 17 => u16::from_be_bytes([d[0], d[1]]),
        _ => 0,
    };
    Some((proto, dport))
}

struct GatewayWorker {
    gw: Gateway,
    ports: Vec<AnyPort>,
    sink: PortSink,
    rx: Batch<PoolBuf>,
    control: Arc<Mutex<ControlPlane>>,
    config_path: PathBuf,
    captures: Captures,
    stop: gatekit_io::StopHandle,
    next_tick: Instant,
    started: Instant,
    generation: u64,
    reload_failures: u64,
}

impl GatewayWorker {
    fn flush_ports(&mut self, now: Instant) {
        for (i, port) in self.ports.iter_mut().enumerate() {
            let batch = &mut self.sink.out[i];
            if batch.is_empty() {
                continue;
            }
            if self.captures.any_active() {
                for k in 0..batch.len() {
                    if let Some((b, _, _)) = batch.get(k) {
                        self.captures.record(PortId(i as u16), now, b.data());
                    }
                }
            }
            if let Err(e) = port.send(batch, now) {
                tracing::warn!(port = i, "send failed: {e}");
            }
            // What the port could not take now (a full socket buffer) is dropped, counted:
            // holding it would only add latency to a congested path.
            self.sink.unsendable += batch.len() as u64;
            batch.clear();
        }
    }

    fn handle_command(&mut self, cmd: &Command, now: Instant) -> Reply {
        if let Some(r) = self.captures.execute(cmd) {
            return r;
        }
        match cmd {
            Command::Status => Reply::Status(Box::new(self.snapshot(now))),
            Command::Stop => {
                self.stop.stop();
                Reply::Ok {
                    message: "stopping".into(),
                }
            }
            Command::Reload => match Config::load(&self.config_path) {
                Ok(cfg) => match self.gw.reconfigure(cfg, now) {
                    Ok(msg) => {
                        self.generation += 1;
                        tracing::info!("reloaded: {msg}");
                        Reply::Ok { message: msg }
                    }
                    Err(e) => {
                        self.reload_failures += 1;
                        tracing::error!("reload refused, running config unchanged: {e}");
                        Reply::Error { message: e }
                    }
                },
                Err(e) => {
                    self.reload_failures += 1;
                    tracing::error!("reload refused, running config unchanged: {e}");
                    Reply::Error {
                        message: e.to_string(),
                    }
                }
            },
            _ => Reply::Error {
                message: "unknown command".into(),
            },
        }
    }

    fn snapshot(&self, now: Instant) -> crate::status::Snapshot {
        let mut s = self.gw.snapshot(now);
        s.uptime_secs = (now - self.started).as_secs_f64();
        s.config_generation = self.generation;
        s.reload_failures = self.reload_failures;
        s.captures = self.captures.active();
        for p in &self.ports {
            let (name, kind, st) = match p {
                AnyPort::Tun(_, t) => (None, "", t.stats()),
                AnyPort::Udp(u) => (Some("underlay-udp"), "udp", u.stats()),
                AnyPort::Vxlan(u) => (Some("underlay-vxlan"), "udp", u.stats()),
                AnyPort::Esp(r) => (Some("underlay-esp"), "raw-esp", r.stats()),
                AnyPort::Gre(r) => (Some("underlay-gre"), "raw-gre", r.stats()),
            };
            if let Some(name) = name {
                s.interfaces.push(crate::status::InterfaceStatus {
                    name: name.into(),
                    kind: kind.into(),
                    rx_packets: st.rx_packets,
                    rx_bytes: st.rx_bytes,
                    tx_packets: st.tx_packets,
                    tx_bytes: st.tx_bytes,
                    drops: st.drops.total(),
                });
            }
        }
        if self.sink.unsendable > 0 {
            *s.drops
                .entry(DropReason::QueueFull.as_str().into())
                .or_default() += self.sink.unsendable;
        }
        s
    }
}

impl Worker for GatewayWorker {
    fn on_event(&mut self, event: Event, now: Instant) {
        let Some(port) = self.ports.get_mut(event.token.0) else {
            return;
        };
        let ingress = port.ingress();
        // A bounded amount per event keeps the sources fair (the loop is level-triggered).
        for _ in 0..4 {
            self.rx.clear();
            match port.recv(&mut self.rx, now) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(port = event.token.0, "receive failed: {e}");
                    break;
                }
            }
            for (buf, meta, _) in self.rx.drain() {
                if self.captures.any_active() {
                    self.captures
                        .record(PortId(event.token.0 as u16), now, buf.data());
                }
                self.gw.process(ingress, buf, meta, now, &mut self.sink);
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        self.flush_ports(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.gw.poll_timeout() {
            Some(t) => t.min(self.next_tick),
            None => self.next_tick,
        })
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gw.handle_timeout(now, &mut self.sink);
        if now >= self.next_tick {
            self.next_tick = now + Duration::from_millis(100);
            let requests: Vec<_> = {
                let cp = self.control.lock().unwrap_or_else(|e| e.into_inner());
                std::iter::from_fn(|| cp.try_recv()).collect()
            };
            for req in requests {
                let reply = self.handle_command(req.command(), now);
                req.reply(reply);
            }
            let snap = self.snapshot(now);
            self.control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .publish(snap);
        }
        self.flush_ports(now);
    }

    fn on_stop(&mut self, now: Instant) {
        self.flush_ports(now);
        self.captures.stop_all();
        tracing::info!("data path stopped");
    }
}

fn v4_prefix(a: Option<ipnet::IpNet>) -> Option<(IpAddr, u8)> {
    a.map(|n| (n.addr(), n.prefix_len()))
}

/// Runs the gateway of `opts.config` until SIGTERM/SIGINT or a `stop` command.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    let cfg = Config::load(&opts.config).map_err(|e| RunError::Config(e.to_string()))?;
    // Build once here so that config errors the data path finds (keys, rules) stop us
    // before any device is touched.
    Gateway::new(cfg.clone(), Instant::ZERO)
        .map_err(|e| RunError::Config(format!("{}: {e}", opts.config.display())))?;

    let mut tuns = Vec::new();
    for (i, iface) in cfg.interface.iter().enumerate() {
        let mut tc = match iface.kind {
            InterfaceKind::Tun => TunConfig::tun(&iface.name),
            InterfaceKind::Tap => TunConfig::tap(&iface.name),
        }
        .mtu(u32::from(iface.mtu))
        // virtio-net offloads where the kernel agrees: the port cuts received super-packets
        // into MTU-sized ones and coalesces sent TCP segments, so the pipeline sees ordinary
        // packets and the kernel does far fewer writes (23× in gatekit-io's relay test).
        .offload(true)
        .up(true);
        if let Some((addr, len)) = v4_prefix(iface.address) {
            tc = tc.address(addr, len);
        }
        let tun = gatekit_io::Tun::create(&tc)?;
        tracing::info!(interface = %iface.name, kind = ?iface.kind, "device up");
        let q = tun
            .into_queues()
            .into_iter()
            .next()
            .ok_or_else(|| RunError::Control(format!("{}: no queue", iface.name)))?;
        tuns.push((i, q));
    }
    let devices = Mutex::new(Some(Devices { tuns }));

    let plane = Arc::new(Mutex::new(ControlPlane::new()));
    let handle: ControlHandle = plane.lock().unwrap_or_else(|e| e.into_inner()).handle();
    let metrics = match cfg.gateway.metrics {
        Some(addr) => Some(
            MetricsServer::start(addr, handle.clone())
                .map_err(|e| RunError::Control(e.to_string()))?,
        ),
        None => None,
    };
    let ctl = match &cfg.gateway.ctl {
        Some(p) => Some(
            CtlSocket::bind(p.clone(), handle.clone())
                .map_err(|e| RunError::Control(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let signals =
        SignalHandler::install(handle.clone()).map_err(|e| RunError::Control(e.to_string()))?;

    let cfg2 = cfg.clone();
    let path = opts.config.clone();
    let plane2 = plane.clone();
    let evcfg = EventLoopConfig {
        workers: 1,
        name: format!("gatekit-{}", cfg.gateway.name),
        ..EventLoopConfig::default()
    };
    let ev = EventLoop::spawn(&evcfg, move |ctx: &mut WorkerCtx<'_>| {
        let devs = devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(IoError::Invalid {
                field: "workers",
                reason: "the gateway runs one data-path worker".into(),
            })?;
        build_worker(ctx, &cfg2, devs, path.clone(), plane2.clone())
    })?;
    tracing::info!(name = %cfg.gateway.name, "gateway running");
    let r = ev.join();
    signals.stop();
    if let Some(c) = ctl {
        c.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    tracing::info!("gateway stopped");
    r.map_err(RunError::from)
}

fn build_worker(
    ctx: &mut WorkerCtx<'_>,
    cfg: &Config,
    devs: Devices,
    config_path: PathBuf,
    control: Arc<Mutex<ControlPlane>>,
) -> Result<GatewayWorker, IoError> {
    let pool = Pool::new(cfg.gateway.buffers.max(4 * BATCH), BUF_SIZE, HEADROOM);
    let now = ctx.clock.now();
    let gw = Gateway::new(cfg.clone(), now).map_err(|e| IoError::Invalid {
        field: "config",
        reason: e.to_string(),
    })?;
    let mut ports = Vec::new();
    let mut iface_port = vec![None; cfg.interface.len()];
    let mut captures = Captures::new(SystemTime::now());
    for (i, q) in devs.tuns {
        let id = PortId(ports.len() as u16);
        let link = match cfg.interface[i].kind {
            InterfaceKind::Tun => LinkType::RawIp,
            InterfaceKind::Tap => LinkType::Ethernet,
        };
        let _ = captures.register(&cfg.interface[i].name, id, link);
        iface_port[i] = Some(ports.len());
        ports.push(AnyPort::Tun(i, TunPort::new(q, pool.clone(), id)?));
    }
    let local = cfg.underlay.address;
    let ucfg = UdpConfig::default();
    let mut udp = None;
    let mut vxlan = None;
    let mut esp = None;
    let mut gre = None;
    let needs_udp = cfg.ipsec.peer.iter().any(|p| p.encap == Encap::Udp);
    if needs_udp && cfg.underlay.natt_port != 0 {
        let id = PortId(ports.len() as u16);
        udp = Some(ports.len());
        let _ = captures.register("underlay-udp", id, LinkType::RawIp);
        ports.push(AnyPort::Udp(UdpPort::bind(
            SocketAddr::new(local, cfg.underlay.natt_port),
            &ucfg,
            pool.clone(),
            id,
        )?));
    }
    if !cfg.vxlan.is_empty() && cfg.underlay.vxlan_port != 0 {
        let id = PortId(ports.len() as u16);
        vxlan = Some((ports.len(), cfg.underlay.vxlan_port));
        let _ = captures.register("underlay-vxlan", id, LinkType::RawIp);
        ports.push(AnyPort::Vxlan(UdpPort::bind(
            SocketAddr::new(local, cfg.underlay.vxlan_port),
            &ucfg,
            pool.clone(),
            id,
        )?));
    }
    let rcfg = RawConfig::default();
    if cfg.underlay.native_esp && cfg.ipsec.peer.iter().any(|p| p.encap == Encap::Native) {
        let id = PortId(ports.len() as u16);
        esp = Some(ports.len());
        let _ = captures.register("underlay-esp", id, LinkType::RawIp);
        ports.push(AnyPort::Esp(RawPort::open(
            local,
            IPPROTO_ESP,
            &rcfg,
            pool.clone(),
            id,
        )?));
    }
    if cfg.underlay.gre && !cfg.gre.is_empty() {
        let id = PortId(ports.len() as u16);
        gre = Some(ports.len());
        let _ = captures.register("underlay-gre", id, LinkType::RawIp);
        ports.push(AnyPort::Gre(RawPort::open(
            local,
            IPPROTO_GRE,
            &rcfg,
            pool.clone(),
            id,
        )?));
    }
    for (i, p) in ports.iter().enumerate() {
        let token = Token(i);
        match p {
            AnyPort::Tun(_, t) => ctx.registry.register(t, token, Interest::READABLE)?,
            AnyPort::Udp(u) | AnyPort::Vxlan(u) => {
                ctx.registry.register(u, token, Interest::READABLE)?
            }
            AnyPort::Esp(r) | AnyPort::Gre(r) => {
                ctx.registry.register(r, token, Interest::READABLE)?
            }
        }
    }
    let out = (0..ports.len()).map(|_| Batch::new(BATCH * 4)).collect();
    Ok(GatewayWorker {
        gw,
        sink: PortSink {
            pool: pool.clone(),
            out,
            iface_port,
            udp,
            vxlan,
            esp,
            gre,
            unsendable: 0,
        },
        ports,
        rx: Batch::new(BATCH),
        control,
        config_path,
        captures,
        stop: ctx.stop.clone(),
        next_tick: now,
        started: now,
        generation: 1,
        reload_failures: 0,
    })
}

/// Validates a config file as `--check` does: parse, cross-references, keys, and the
/// firewall rules compiled. Returns a one-line summary.
pub fn check(path: &Path) -> Result<String, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    let gw = Gateway::new(cfg, Instant::ZERO).map_err(|e| format!("{}: {e}", path.display()))?;
    let c = gw.config();
    Ok(format!(
        "{}: ok ({} interfaces, {} static routes, {} prefixes in the RIB, {} advertised, {} IPsec peers with {} SAs, {} GRE, {} VXLAN, {} bridges, {} firewall rules)",
        path.display(),
        c.interface.len(),
        c.route.len(),
        gw.routing().rib().len(),
        gw.routing().advertised().len(),
        c.ipsec.peer.len(),
        gw.esp().iter().count(),
        c.gre.len(),
        c.vxlan.len(),
        c.bridge.len(),
        gw.firewall().rules().len()
    ))
}
