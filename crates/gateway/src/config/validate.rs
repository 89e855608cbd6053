//! The checks a parsed config must pass before anything is built from it: names, references,
//! addresses, keys, rules and sets, each failure a [`ConfigError`] at its place in the file.

use super::span::{at, find_line, line_col};
use super::*;

impl Config {
    pub(super) fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let err0 = |key: String, message: String| ConfigError {
            file: file.into(),
            line: find_line(text, &key),
            column: 1,
            key,
            message,
        };
        // Names are unique across everything a route or bridge can refer to.
        let mut names = BTreeSet::new();
        let all_names = self
            .interface
            .iter()
            .map(|i| ("interface", &i.name))
            .chain(self.ipsec.peer.iter().map(|p| ("ipsec.peer", &p.name)))
            .chain(self.gre.iter().map(|g| ("gre", &g.name)))
            .chain(self.vxlan.iter().map(|v| ("vxlan", &v.name)))
            .chain(self.bridge.iter().map(|b| ("bridge", &b.name)));
        for (kind, name) in all_names {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(err0(
                    format!("{kind}.name"),
                    format!(
                        "`{name}`: expected 1 to 15 letters, digits, `-`, `_` or `.` (an interface name)"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err0(
                    format!("{kind}.name"),
                    format!("`{name}` is defined twice"),
                ));
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if self.resolve_via(r.via.get_ref()).is_none() {
                return Err(at(
                    file,
                    text,
                    r.via.span(),
                    &format!("route[{i}].via"),
                    format!(
                        "`{}` names nothing: expected `interface:NAME`, `ipsec:PEER` or `gre:NAME` of a defined one",
                        r.via.get_ref()
                    ),
                ));
            }
        }
        for (pi, p) in self.ipsec.peer.iter().enumerate() {
            for (ti, t) in p.tunnel.iter().enumerate() {
                let key = format!("ipsec.peer[{pi}].tunnel[{ti}]");
                let want = match t.suite {
                    Suite::Aes128Gcm => 20,
                    Suite::Aes256Gcm | Suite::ChaCha20Poly1305 => 36,
                };
                for (name, k) in [("key_out", &t.key_out), ("key_in", &t.key_in)] {
                    match decode_hex(k.get_ref()) {
                        Some(b) if b.len() == want => {}
                        Some(b) => {
                            return Err(at(
                                file,
                                text,
                                k.span(),
                                &format!("{key}.{name}"),
                                format!(
                                    "{} bytes of key material, expected {want} (key + 4-byte salt) for {:?}",
                                    b.len(),
                                    t.suite
                                ),
                            ));
                        }
                        None => {
                            return Err(at(
                                file,
                                text,
                                k.span(),
                                &format!("{key}.{name}"),
                                "expected hexadecimal digits (an even number of them)".into(),
                            ));
                        }
                    }
                }
                for (name, spi) in [("spi_out", t.spi_out), ("spi_in", t.spi_in)] {
                    // RFC 4303 §2.1: SPIs 1..=255 are reserved by IANA, 0 is local-use only.
                    if spi < 256 {
                        return Err(err0(
                            format!("{key}.{name}"),
                            format!("SPI {spi} is reserved (RFC 4303 §2.1): expected 256 or more"),
                        ));
                    }
                }
                if t.mode == Mode::Tunnel && (t.local_ts.is_empty() || t.remote_ts.is_empty()) {
                    return Err(err0(
                        key.clone(),
                        "a tunnel-mode SA needs local_ts and remote_ts prefixes".into(),
                    ));
                }
                if !t.replay_window.is_power_of_two() || t.replay_window < 64 {
                    return Err(err0(
                        format!("{key}.replay_window"),
                        format!("{}: expected a power of two, 64 or more", t.replay_window),
                    ));
                }
            }
            if p.encap == Encap::Udp && p.remote_port == 0 {
                return Err(err0(
                    format!("ipsec.peer[{pi}].remote_port"),
                    "expected a UDP port, not 0".into(),
                ));
            }
        }
        let mut spis = BTreeSet::new();
        for p in &self.ipsec.peer {
            for t in &p.tunnel {
                if !spis.insert(t.spi_in) {
                    return Err(err0(
                        "ipsec.peer.tunnel.spi_in".into(),
                        format!(
                            "inbound SPI {:#x} is used twice: inbound SPIs identify SAs and must be unique",
                            t.spi_in
                        ),
                    ));
                }
            }
        }
        for (gi, g) in self.gre.iter().enumerate() {
            if let Some(peer) = &g.over_ipsec {
                let ok = self.ipsec.peer.iter().any(|p| {
                    &p.name == peer.get_ref() && p.tunnel.iter().any(|t| t.mode == Mode::Transport)
                });
                if !ok {
                    return Err(at(
                        file,
                        text,
                        peer.span(),
                        &format!("gre[{gi}].over_ipsec"),
                        format!(
                            "`{}`: expected the name of an IPsec peer with a transport-mode tunnel",
                            peer.get_ref()
                        ),
                    ));
                }
            }
        }
        for (vi, v) in self.vxlan.iter().enumerate() {
            if v.vni >= 1 << 24 {
                return Err(err0(
                    format!("vxlan[{vi}].vni"),
                    format!("{}: expected a 24-bit VNI (0 to 16777215)", v.vni),
                ));
            }
        }
        for (bi, b) in self.bridge.iter().enumerate() {
            for p in &b.ports {
                let name = p.get_ref();
                let ok = self
                    .interface
                    .iter()
                    .any(|i| &i.name == name && i.kind == InterfaceKind::Tap)
                    || self
                        .gre
                        .iter()
                        .any(|g| &g.name == name && g.mode == GreMode::Teb)
                    || self.vxlan.iter().any(|v| &v.name == name);
                if !ok {
                    return Err(at(
                        file,
                        text,
                        p.span(),
                        &format!("bridge[{bi}].ports"),
                        format!(
                            "`{name}`: expected a TAP interface, a GRE tunnel in `teb` mode or a VXLAN tunnel"
                        ),
                    ));
                }
            }
        }
        for (ri, r) in self.route.iter().enumerate() {
            if r.distance == Some(0) {
                return Err(err0(
                    format!("route[{ri}].distance"),
                    "0 is the distance of connected routes: expected 1 to 255".into(),
                ));
            }
        }
        for (gi, g) in self.gre.iter().enumerate() {
            if g.mode == GreMode::Teb && !(g.subnets.is_empty() && g.mesh_prefixes.is_empty()) {
                return Err(err0(
                    format!("gre[{gi}].subnets"),
                    format!(
                        "`{}` bridges Ethernet (mode `teb`): only a tunnel in `ip` mode routes subnets",
                        g.name
                    ),
                ));
            }
        }
        self.validate_overlay(file, text)?;
        if let Some(Err(e)) = self.advertise.parsed_prefix_list() {
            let (line, reason) = match &e {
                gatekit_route::PolicyError::Syntax { line, reason } => (*line, reason.clone()),
                other => (1, other.to_string()),
            };
            let span = self
                .advertise
                .prefix_list
                .as_ref()
                .map_or(0..0, |p| p.span());
            // A multi-line string's first line is the one after its opening quotes.
            let opening = text.get(span.clone()).unwrap_or("");
            let skip = usize::from(opening.starts_with("\"\"\"\n") || opening.starts_with("'''\n"));
            let (first, _) = line_col(text, span.start);
            return Err(ConfigError {
                file: file.into(),
                line: first + skip + line - 1,
                column: 1,
                key: "advertise.prefix_list".into(),
                message: format!("line {line} of the list: {reason}"),
            });
        }
        if let Some(m) = self.gateway.metrics
            && !m.ip().is_loopback()
        {
            return Err(err0(
                "gateway.metrics".into(),
                format!("{m}: expected a loopback address (the endpoint has no authentication)"),
            ));
        }
        Ok(())
    }
}
