//! A layer-2 switching fabric for software gateways: bridge domains, MAC learning with aging,
//! static entries, MAC-move detection, MAC limits (flood protection), 802.1Q access and trunk
//! ports, flooding with split horizon, and ARP suppression.
//!
//! The fabric is a sans-IO library the gateway drives. Ports are [`PortId`]s of any kind —
//! TAP devices, GRE/TEB and VXLAN tunnels (after `gatekit-gre` decapsulates), overlay links,
//! in-memory ports — configured with a [`VlanMode`], an MTU, a MAC limit and an optional
//! [`HorizonGroup`]. For each received frame, [`Switch::forward`] learns the source and fills a
//! caller-owned [`Egress`] list with the ports the frame goes to; the caller sends it there,
//! [`retag`]ging it per port. Time is passed in: [`Switch::poll_timeout`] and
//! [`Switch::handle_timeout`] run aging.
//!
//! **Bursts.** A receive loop that has many frames at once hands them to
//! [`Switch::forward_batch`]: the same decisions, counters and learning as `forward` frame by
//! frame, but each frame's MAC-table lines are asked for [`Switch::AHEAD`] frames before it is
//! decided, so that their cache misses overlap with each other and with the decisions. The
//! MAC table is open addressing over 64-byte buckets (a lookup reads one cache line), in an
//! anonymous mapping that asks Linux for transparent huge pages, so that a table of a million
//! MACs does not miss the TLB on every lookup.
//!
//! **Loop freedom across sites.** Put every tunnel of a full mesh of sites in one split-horizon
//! group: a frame that came from a mesh tunnel is never flooded to another mesh tunnel (nor
//! forwarded to one), so each site floods only what its own ports received, every other site
//! gets it exactly once, and no frame circulates, however many sites are meshed.
//!
//! Not here: spanning tree (split horizon replaces it for meshes; local ports must not form
//! loops), IGMP/MLD snooping (multicast floods), IPv6 ND suppression, 802.1ad QinQ, and the
//! I/O itself.
//!
//! # Example
//!
//! ```
//! use gatekit_packet::{Instant, PortId};
//! use gatekit_switch::{DomainConfig, Egress, HorizonGroup, PortConfig, PortKind, Switch, Verdict};
//!
//! let mut sw = Switch::new();
//! sw.add_domain(DomainConfig::new(10))?;
//! let (host, tun_b, tun_c) = (PortId(0), PortId(1), PortId(2));
//! let mesh = HorizonGroup(1);
//! sw.set_port(host, PortConfig::access(10))?;
//! sw.set_port(tun_b, PortConfig::tunnel(PortKind::GreTeb, 10, mesh))?;
//! sw.set_port(tun_c, PortConfig::tunnel(PortKind::Vxlan, 10, mesh))?;
//!
//! let mut out = Egress::with_capacity(8);
//! // A broadcast from site B arrives over its tunnel: it goes to the local host only.
//! let mut frame = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xb, 0x08, 0x06];
//! assert_eq!(sw.forward(tun_b, &mut frame, Instant::ZERO, &mut out), Verdict::Flood);
//! assert_eq!(out.ports().iter().map(|e| e.port).collect::<Vec<_>>(), [host]);
//!
//! // The host answers; B's address was learned behind tun_b.
//! let mut reply = [2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x08, 0x06];
//! assert_eq!(sw.forward(host, &mut reply, Instant::ZERO, &mut out), Verdict::Forward);
//! assert_eq!(out.ports()[0].port, tun_b);
//! # Ok::<(), gatekit_switch::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod arp;
mod mac;
mod port;
mod switch;
mod table;

pub use arp::{Arp, ETHERTYPE_ARP};
pub use gatekit_packet::PortId;
pub use mac::{L2Header, MacAddr, TPID_8021Q, retag};
pub use port::{HorizonGroup, MAX_VLAN, PortConfig, PortKind, PortStats, VlanMode, VlanSet};
pub use switch::{DomainConfig, DomainStats, Egress, EgressPort, Switch, SwitchEvent, Verdict};
pub use table::{EntryKind, MacEntry};

/// Why the fabric could not be configured as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A VLAN id outside 1..=4094.
    #[error("VLAN {vlan} out of range 1..=4094")]
    Vlan {
        /// The VLAN asked for.
        vlan: u16,
    },
    /// A second domain for the same VLAN.
    #[error("a bridge domain for VLAN {vlan} exists already")]
    DuplicateDomain {
        /// The VLAN.
        vlan: u16,
    },
    /// No domain for the VLAN.
    #[error("no bridge domain for VLAN {vlan}")]
    NoDomain {
        /// The VLAN.
        vlan: u16,
    },
    /// No such port.
    #[error("no port {}", port.0)]
    NoPort {
        /// The port.
        port: PortId,
    },
    /// A port MTU below the Ethernet minimum payload (46).
    #[error("port MTU {mtu} below the Ethernet minimum of 46")]
    Mtu {
        /// The MTU asked for.
        mtu: usize,
    },
    /// An aging time of zero.
    #[error("MAC aging time must not be zero")]
    Aging,
}

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::{
        DomainConfig, Egress, EgressPort, HorizonGroup, PortConfig, PortKind, Switch, Verdict,
        VlanSet,
    };
    use gatekit_packet::{Instant, PortId};

    /// Runs arbitrary frames through a fabric with access, trunk and mesh tunnel ports, MAC
    /// limits and ARP suppression; each frame is `[ingress, time step, len, bytes...]`. Checks
    /// that decisions never send a frame back where it came from nor across the mesh, and
    /// that a second fabric given the frames of each instant as one `forward_batch` decides,
    /// rewrites, counts and learns exactly as the first one does frame by frame.
    pub fn switch_forward(data: &[u8]) {
        let (mut sw, mut batched) = (fabric(), fabric());
        let mut out = Egress::with_capacity(8);
        let mut now = Instant::ZERO;
        let mut rest = data;
        // The frames of the current instant, as received and as decided one by one.
        let mut burst: Vec<(PortId, Vec<u8>)> = Vec::new();
        let mut decided: Vec<(Verdict, Vec<EgressPort>, Vec<u8>)> = Vec::new();
        while let [ingress, step, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            let mut frame = tail[..n].to_vec();
            rest = &tail[n..];
            if *step != 0 {
                replay(&mut batched, now, &mut burst, &mut decided);
            }
            now += core::time::Duration::from_secs(u64::from(*step));
            sw.handle_timeout(now);
            let ingress = PortId(u16::from(*ingress % 6));
            burst.push((ingress, frame.clone()));
            let v = sw.forward(ingress, &mut frame, now, &mut out);
            let ing_group = sw.port(ingress).and_then(|p| p.horizon);
            match v {
                Verdict::Forward => assert_eq!(out.len(), 1),
                Verdict::Reply => assert_eq!(out.ports()[0].port, ingress),
                Verdict::Flood => {}
                Verdict::Drop(_) => assert!(out.is_empty()),
            }
            if v != Verdict::Reply {
                for e in out.ports() {
                    assert_ne!(e.port, ingress);
                    let g = sw.port(e.port).and_then(|p| p.horizon);
                    assert!(ing_group.is_none() || g != ing_group);
                }
            }
            decided.push((v, out.ports().to_vec(), frame));
        }
        replay(&mut batched, now, &mut burst, &mut decided);
        assert_eq!(state(&mut sw, 6), state(&mut batched, 6));
    }

    /// Decides `burst` as one batch at `now` and checks it against `decided`; empties both.
    fn replay(
        sw: &mut Switch,
        now: Instant,
        burst: &mut Vec<(PortId, Vec<u8>)>,
        decided: &mut Vec<(Verdict, Vec<EgressPort>, Vec<u8>)>,
    ) {
        sw.handle_timeout(now);
        let mut outs = vec![Egress::default(); burst.len()];
        let mut verdicts = vec![Verdict::Flood; burst.len()];
        assert_eq!(
            sw.forward_batch(burst, now, &mut outs, &mut verdicts),
            burst.len()
        );
        for (i, (v, ports, frame)) in decided.iter().enumerate() {
            assert_eq!(
                (verdicts[i], outs[i].ports()),
                (*v, &ports[..]),
                "frame {i}"
            );
            assert_eq!(burst[i].1, *frame, "frame {i}");
        }
        burst.clear();
        decided.clear();
    }

    /// Everything a fabric counts and learns (its table, the counters of ports `0..ports`
    /// and of bridge domains 10 and 20, its events, drops and next timeout), in a form two
    /// fabrics can be compared by. Draining the events is part of reading them.
    pub fn state(sw: &mut Switch, ports: u16) -> String {
        let mut entries: Vec<_> = sw.entries().collect();
        entries.sort_by_key(|(v, m, _)| (*v, *m));
        let ports: Vec<_> = (0..ports)
            .map(|p| sw.port_stats(PortId(p)).cloned())
            .collect();
        let domains = [sw.domain_stats(10).copied(), sw.domain_stats(20).copied()];
        let events: Vec<_> = core::iter::from_fn(|| sw.poll_event()).collect();
        format!(
            "{entries:?}\n{ports:?}\n{domains:?}\n{events:?}\n{:?}\n{}\n{:?}",
            sw.drops(),
            sw.events_lost(),
            sw.poll_timeout()
        )
    }

    fn fabric() -> Switch {
        let mut sw = Switch::new();
        for vlan in [10, 20] {
            let _ = sw.add_domain(DomainConfig {
                max_macs: Some(64),
                arp_suppression: true,
                ..DomainConfig::new(vlan)
            });
        }
        let mesh = HorizonGroup(1);
        let ports = [
            PortConfig::access(10),
            PortConfig::trunk(Some(10), [10, 20].into_iter().collect::<VlanSet>()),
            PortConfig::tunnel(PortKind::GreTeb, 10, mesh),
            PortConfig::tunnel(PortKind::Vxlan, 10, mesh),
            PortConfig {
                max_macs: Some(4),
                mtu: 100,
                ..PortConfig::access(20)
            },
        ];
        for (i, p) in ports.into_iter().enumerate() {
            let _ = sw.set_port(PortId(i as u16), p);
        }
        sw
    }
}
