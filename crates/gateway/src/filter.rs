//! The gateway's firewall: `gatekit-firewall` loaded from the config's rules, with the
//! gateway's interfaces, IPsec peers and GRE tunnels as its ports.
//!
//! Port names the rules can match with `-i`/`-o`: the interface names of the config, and
//! `ipsec-PEER` for traffic into or out of an IPsec peer's tunnel, and the GRE tunnel names.

use crate::config::{Config, InterfaceKind};
use gatekit_firewall as fw;
use gatekit_packet::{DropCounters, Instant, PortId};
use std::net::IpAddr;

/// The firewall port id of IPsec peer `p`.
pub fn peer_port(p: usize) -> PortId {
    PortId(256 + p as u16)
}
/// The firewall port id of GRE tunnel `g`.
pub fn gre_port(g: usize) -> PortId {
    PortId(512 + g as u16)
}

/// The gateway's firewall. Without rules it is not in the path at all.
#[derive(Debug)]
pub struct Filter {
    engine: Option<fw::Firewall>,
    rules: Vec<String>,
    /// For each rule line of the text (by position in `rules`), its index in the engine's
    /// counters.
    counter_index: Vec<Option<usize>>,
    sets: Vec<fw::ir::SetDecl>,
    empty: DropCounters,
    next_sweep: Instant,
}

/// Maps the non-empty, non-comment lines of `text` to the engine's counter indices: the
/// engine counts rules in rule-set order (filter chains, then nat chains), and each parsed
/// rule remembers its source line.
fn counter_index(text: &str, rs: &fw::ir::RuleSet) -> Vec<Option<usize>> {
    let mut by_line = std::collections::HashMap::new();
    let mut k = 0usize;
    for table in [&rs.filter, &rs.nat] {
        for chain in &table.chains {
            for rule in &chain.rules {
                if rule.origin.line > 0 {
                    by_line.insert(rule.origin.line, k);
                }
                k += 1;
            }
        }
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .map(|(n, _)| by_line.get(&(n as u32 + 1)).copied())
        .collect()
}

fn sets_of(cfg: &Config) -> Vec<fw::ir::SetDecl> {
    let mut sets = Vec::new();
    for s in &cfg.firewall.set {
        let kind = if s.addresses.is_empty() && !s.ports.is_empty() {
            fw::ir::SetKind::Port
        } else {
            fw::ir::SetKind::Addr
        };
        let mut d = fw::ir::SetDecl::new(&s.name, kind);
        for a in &s.addresses {
            match a {
                ipnet::IpNet::V4(v4) => {
                    if let Some(r) = fw::ir::AddrRange::prefix(v4.network(), v4.prefix_len()) {
                        d.addrs.push(r);
                    }
                }
                ipnet::IpNet::V6(v6) => {
                    if let Some(r) = fw::ir::Addr6Range::prefix(v6.network(), v6.prefix_len()) {
                        d.addrs6.push(r);
                    }
                }
            }
        }
        for p in &s.ports {
            d.ports.push(fw::ir::PortRange { lo: *p, hi: *p });
        }
        sets.push(d);
    }
    sets
}

/// Why the rules do not load: the firewall's own error, with the line of the rules text.
fn rules_error(e: &fw::ParseError) -> String {
    format!("firewall.rules line {}, column {}: {e}", e.line, e.column)
}

impl Filter {
    /// Compiles the config's rules (and its sets) into a firewall.
    pub fn new(cfg: &Config) -> Result<Filter, String> {
        let text = cfg
            .firewall
            .rules
            .as_ref()
            .map(|r| r.get_ref().as_str())
            .unwrap_or("");
        let rules: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        if rules.is_empty() {
            return Ok(Filter {
                engine: None,
                counter_index: Vec::new(),
                rules,
                sets: sets_of(cfg),
                empty: DropCounters::default(),
                next_sweep: Instant::ZERO,
            });
        }
        let sets = sets_of(cfg);
        let rs = fw::iptables::parse_with_sets(text, &sets).map_err(|e| rules_error(&e))?;
        let fcfg = fw::Config {
            conntrack_capacity: cfg.firewall.conntrack_max,
            ..fw::Config::default()
        };
        let mut engine =
            fw::Firewall::with_config(&rs, fcfg).map_err(|e| format!("firewall: {e}"))?;
        let v4 = |a: IpAddr| match a {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        };
        let underlay = v4(cfg.underlay.address);
        for (i, iface) in cfg.interface.iter().enumerate() {
            if iface.kind == InterfaceKind::Tun {
                engine.set_iface(
                    PortId(i as u16),
                    &iface.name,
                    iface.address.and_then(|a| v4(a.addr())),
                );
            }
        }
        for (p, peer) in cfg.ipsec.peer.iter().enumerate() {
            engine.set_iface(peer_port(p), &format!("ipsec-{}", peer.name), underlay);
        }
        for (g, t) in cfg.gre.iter().enumerate() {
            engine.set_iface(gre_port(g), &t.name, underlay);
        }
        let counter_index = counter_index(text, &rs);
        Ok(Filter {
            engine: Some(engine),
            counter_index,
            rules,
            sets,
            empty: DropCounters::default(),
            next_sweep: Instant::ZERO,
        })
    }

    /// Applies the rules of a new config. Flows and their NAT bindings are kept when rules
    /// were loaded before; on error nothing changes.
    pub fn reload(&mut self, cfg: &Config) -> Result<String, String> {
        let mut new = Filter::new(cfg)?;
        if new.rules == self.rules && sets_of(cfg) == self.sets {
            return Ok("firewall rules unchanged".into());
        }
        let kept = match (self.engine.as_mut(), new.engine.take()) {
            (Some(old), Some(fresh)) => {
                // Move the running engine onto the new rules so conntrack survives.
                let rs = fw::iptables::parse_with_sets(&new.rules.join("\n"), &new.sets)
                    .map_err(|e| rules_error(&e))?;
                old.replace(&rs).map_err(|e| format!("firewall: {e}"))?;
                drop(fresh);
                old.conntrack().len()
            }
            (_, fresh) => {
                self.engine = fresh;
                0
            }
        };
        self.rules = new.rules;
        self.counter_index = new.counter_index;
        self.sets = new.sets;
        Ok(format!(
            "firewall: {} rules, {kept} flows kept",
            self.rules.len()
        ))
    }

    /// The engine, when rules are configured.
    pub fn engine_mut(&mut self) -> Option<&mut fw::Firewall> {
        self.engine.as_mut()
    }

    /// The engine, when rules are configured.
    pub fn engine(&self) -> Option<&fw::Firewall> {
        self.engine.as_ref()
    }

    /// The rules as written, in order (for status).
    pub fn rules(&self) -> &[String] {
        &self.rules
    }

    /// Packets and bytes matched by the `i`-th rule of [`rules`](Self::rules).
    pub fn rule_counter(&self, i: usize) -> [u64; 2] {
        match (
            self.engine.as_ref(),
            self.counter_index.get(i).copied().flatten(),
        ) {
            (Some(e), Some(k)) => e.rule_counters().get(k).copied().unwrap_or([0, 0]),
            _ => [0, 0],
        }
    }

    /// Drops by reason.
    pub fn drops(&self) -> &DropCounters {
        self.engine.as_ref().map_or(&self.empty, |e| e.drops())
    }

    /// Next connection-expiry sweep (every second while rules are loaded).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.as_ref().map(|_| self.next_sweep)
    }

    /// Expires connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(e) = self.engine.as_mut()
            && now >= self.next_sweep
        {
            e.handle_timeout(now);
            self.next_sweep = now + std::time::Duration::from_secs(1);
        }
    }
}
