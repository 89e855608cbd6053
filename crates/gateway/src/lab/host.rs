//! A host of the lab: a smoltcp TCP/IP stack on an in-memory device.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
};
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// An in-memory device: what the stack sends queues in `tx`, what is pushed to `rx` it reads.
#[derive(Debug)]
pub struct QueueDevice {
    medium: Medium,
    mtu: usize,
    /// Packets waiting for the stack.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets the stack sent.
    pub tx: VecDeque<Vec<u8>>,
}

/// Receive token of [`QueueDevice`].
pub struct Rx(Vec<u8>);
/// Transmit token of [`QueueDevice`].
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// A host with a smoltcp stack.
pub struct Host {
    /// Its name in the transcript.
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    iface: Interface,
    /// Its device (push received packets to `dev.rx`, take sent ones from `dev.tx`).
    pub dev: QueueDevice,
    sockets: SocketSet<'static>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

fn smol_now(now: gatekit_packet::Instant) -> SmolInstant {
    SmolInstant::from_micros(i64::try_from(now.as_nanos() / 1000).unwrap_or(i64::MAX))
}

impl Host {
    /// A host on a routed (IP) link, e.g. behind a gateway's TUN.
    pub fn ip(name: &str, addr: Ipv4Addr, prefix: u8, gw: Ipv4Addr, mtu: usize) -> Host {
        Self::build(name, Medium::Ip, HardwareAddress::Ip, addr, prefix, gw, mtu)
    }

    /// A host on an Ethernet segment, e.g. behind a gateway's bridge port.
    pub fn ethernet(name: &str, mac: [u8; 6], addr: Ipv4Addr, prefix: u8, mtu: usize) -> Host {
        let hw = HardwareAddress::Ethernet(EthernetAddress(mac));
        Self::build(name, Medium::Ethernet, hw, addr, prefix, addr, mtu)
    }

    fn build(
        name: &str,
        medium: Medium,
        hw: HardwareAddress,
        addr: Ipv4Addr,
        prefix: u8,
        gw: Ipv4Addr,
        mtu: usize,
    ) -> Host {
        let mut dev = QueueDevice {
            medium,
            mtu,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut config = Config::new(hw);
        config.random_seed = u64::from(u32::from(addr));
        let mut iface = Interface::new(config, &mut dev, SmolInstant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), prefix));
        });
        if gw != addr {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        Host {
            name: name.into(),
            addr,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
        }
    }

    /// Runs the stack at `now`: reads what arrived, sends what is due.
    pub fn poll(&mut self, now: gatekit_packet::Instant) {
        self.iface
            .poll(smol_now(now), &mut self.dev, &mut self.sockets);
    }

    fn tcp_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65_536]),
            tcp::SocketBuffer::new(vec![0; 65_536]),
        )
    }

    /// A TCP socket listening on `port`.
    pub fn tcp_listen(&mut self, port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket();
        let _ = s.listen(port);
        self.sockets.add(s)
    }

    /// A TCP socket connecting to `to:port` from `local_port`.
    pub fn tcp_connect(&mut self, to: Ipv4Addr, port: u16, local_port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket();
        let remote = IpEndpoint::new(IpAddress::Ipv4(to), port);
        let _ = s.connect(self.iface.context(), remote, local_port);
        self.sockets.add(s)
    }

    /// The state of a TCP socket.
    pub fn tcp_state(&self, h: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket<'_>>(h).state()
    }

    /// Queues bytes on a TCP socket; returns how many were accepted.
    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8]) -> usize {
        self.sockets
            .get_mut::<tcp::Socket<'_>>(h)
            .send_slice(data)
            .unwrap_or(0)
    }

    /// Takes received bytes from a TCP socket.
    pub fn tcp_recv(&mut self, h: SocketHandle, out: &mut Vec<u8>) {
        let s = self.sockets.get_mut::<tcp::Socket<'_>>(h);
        while s.can_recv() {
            let got = s.recv(|b| (b.len(), b.to_vec())).unwrap_or_default();
            if got.is_empty() {
                break;
            }
            out.extend_from_slice(&got);
        }
    }

    /// Closes a TCP socket (FIN).
    pub fn tcp_close(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket<'_>>(h).close();
    }

    /// An ICMP socket for sending echo requests with identifier `ident`.
    pub fn icmp_socket(&mut self, ident: u16) -> SocketHandle {
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
        );
        let _ = s.bind(icmp::Endpoint::Ident(ident));
        self.sockets.add(s)
    }

    /// Sends an echo request.
    pub fn ping(&mut self, h: SocketHandle, to: Ipv4Addr, ident: u16, seq: u16) -> bool {
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: seq,
            data: b"gatekit lab ping",
        };
        let s = self.sockets.get_mut::<icmp::Socket<'_>>(h);
        let dst = IpAddress::Ipv4(to);
        match s.send(repr.buffer_len(), dst) {
            Ok(buf) => {
                let mut pkt = Icmpv4Packet::new_unchecked(buf);
                repr.emit(&mut pkt, &smoltcp::phy::ChecksumCapabilities::default());
                true
            }
            Err(_) => false,
        }
    }

    /// Echo replies received on an ICMP socket: their sequence numbers.
    pub fn ping_replies(&mut self, h: SocketHandle) -> Vec<u16> {
        let s = self.sockets.get_mut::<icmp::Socket<'_>>(h);
        let mut seqs = Vec::new();
        while let Ok((data, _from)) = s.recv() {
            if let Ok(p) = Icmpv4Packet::new_checked(data)
                && let Ok(Icmpv4Repr::EchoReply { seq_no, .. }) =
                    Icmpv4Repr::parse(&p, &Default::default())
            {
                seqs.push(seq_no);
            }
        }
        seqs
    }
}
