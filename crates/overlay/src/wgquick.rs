//! Client packs: a member's configuration in the wg-quick format stock WireGuard clients read.

use crate::{MemberId, PrivateKey, PublicKey, Registry};
use core::net::IpAddr;
use ipnet::IpNet;

/// Why no client pack could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// No member has this id.
    #[error("member {0} does not exist")]
    UnknownMember(MemberId),
    /// The private key given is not the member's.
    #[error("the private key's public key {given} is not member {member}'s key {expected}")]
    KeyMismatch {
        /// The member.
        member: String,
        /// The member's key.
        expected: PublicKey,
        /// The public key of the private key given.
        given: PublicKey,
    },
    /// The member is disabled: the gateway would not route it.
    #[error("member {0} is disabled")]
    Disabled(String),
    /// The endpoint is not `host:port`.
    #[error("endpoint {0:?}: expected HOST:PORT, IPv4:PORT or [IPv6]:PORT with a port 1-65535")]
    BadEndpoint(String),
    /// MTU outside what WireGuard accepts for IPv4 and IPv6 (1280 to 65535).
    #[error("MTU {0}: expected 1280 to 65535")]
    BadMtu(u16),
}

/// The gateway as the member's client sees it: its key, where to reach it, and what to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPeer {
    /// The gateway's public key.
    pub public_key: PublicKey,
    /// Where clients reach it on the underlay (`vpn.example.com:51820`, `[2001:db8::1]:51820`).
    pub endpoint: String,
    /// What clients send into the tunnel; empty means the overlay prefixes.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds; `None` leaves it off. NATed clients need it to stay
    /// reachable (25 s is WireGuard's suggestion).
    pub keepalive: Option<u16>,
    /// DNS servers for the client (`DNS =`, a wg-quick setting).
    pub dns: Vec<IpAddr>,
    /// Tunnel MTU (`MTU =`, a wg-quick setting).
    pub mtu: Option<u16>,
}

impl GatewayPeer {
    /// A gateway at `endpoint` with a 25 s keepalive, sending the overlay prefixes.
    pub fn new(public_key: PublicKey, endpoint: &str) -> Result<GatewayPeer, PackError> {
        check_endpoint(endpoint)?;
        Ok(GatewayPeer {
            public_key,
            endpoint: endpoint.to_string(),
            allowed_ips: Vec::new(),
            keepalive: Some(25),
            dns: Vec::new(),
            mtu: None,
        })
    }
}

/// Checks `host:port` the way wg(8) resolves an endpoint: the host is an IPv4 literal, an IPv6
/// literal in brackets or a DNS name; the port 1-65535.
fn check_endpoint(ep: &str) -> Result<(), PackError> {
    let bad = || PackError::BadEndpoint(ep.to_string());
    if ep
        .parse::<core::net::SocketAddr>()
        .is_ok_and(|s| s.port() != 0)
    {
        return Ok(());
    }
    let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if port == 0 || !name_ok {
        return Err(bad());
    }
    Ok(())
}

/// A member's ready client configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientPack {
    /// The member's name.
    pub member: String,
    /// The configuration file, in wg-quick format (it holds the private key: handle with care).
    pub text: String,
}

impl core::fmt::Debug for ClientPack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientPack")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

fn join<T: core::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Registry {
    /// The wg-quick configuration for member `id`, whose private key is `key` (the registry
    /// keeps only public keys), talking to `gateway`.
    ///
    /// `Address` holds the member's overlay addresses as host routes (/32, /128), so what goes
    /// into the tunnel is decided by `AllowedIPs` alone.
    pub fn client_pack(
        &self,
        id: MemberId,
        key: &PrivateKey,
        gateway: &GatewayPeer,
    ) -> Result<ClientPack, PackError> {
        let m = self.member(id).ok_or(PackError::UnknownMember(id))?;
        if key.public_key() != m.key {
            return Err(PackError::KeyMismatch {
                member: m.name.clone(),
                expected: m.key,
                given: key.public_key(),
            });
        }
        if !m.enabled {
            return Err(PackError::Disabled(m.name.clone()));
        }
        check_endpoint(&gateway.endpoint)?;
        if let Some(mtu) = gateway.mtu.filter(|m| *m < 1280) {
            return Err(PackError::BadMtu(mtu));
        }
        let allowed = if gateway.allowed_ips.is_empty() {
            self.plan().prefixes().to_vec()
        } else {
            gateway.allowed_ips.clone()
        };
        let mut t = String::new();
        t.push_str(&format!(
            "# gatekit overlay: member {} (segment {})\n[Interface]\n",
            m.name, m.segment
        ));
        t.push_str(&format!("PrivateKey = {}\n", key.to_base64()));
        t.push_str(&format!(
            "Address = {}\n",
            join(m.addresses.iter().map(|a| IpNet::from(*a)))
        ));
        if !gateway.dns.is_empty() {
            t.push_str(&format!("DNS = {}\n", join(&gateway.dns)));
        }
        if let Some(mtu) = gateway.mtu {
            t.push_str(&format!("MTU = {mtu}\n"));
        }
        t.push_str("\n[Peer]\n# gatekit overlay gateway\n");
        t.push_str(&format!("PublicKey = {}\n", gateway.public_key));
        t.push_str(&format!("Endpoint = {}\n", gateway.endpoint));
        t.push_str(&format!("AllowedIPs = {}\n", join(&allowed)));
        if let Some(k) = gateway.keepalive.filter(|k| *k > 0) {
            t.push_str(&format!("PersistentKeepalive = {k}\n"));
        }
        Ok(ClientPack {
            member: m.name.clone(),
            text: t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "vpn.example.com:51820",
            "192.0.2.1:1",
            "[2001:db8::1]:51820",
            "gw:65535",
        ] {
            check_endpoint(ok).unwrap();
        }
        for bad in [
            "vpn.example.com",
            "vpn.example.com:0",
            "vpn.example.com:70000",
            ":51820",
            "a b:1",
            "2001:db8::1:51820x",
            "-x.example:1",
            "x..y:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
