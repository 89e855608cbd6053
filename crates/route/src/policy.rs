//! Redistribution: which routes one source exports into another, with prefix lists, metric
//! and tag rewrites, and loop prevention by tag.

use crate::rib::{Rib, Route, Source};
use ipnet::IpNet;

/// What a prefix-list entry does with the prefixes it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the route through.
    Permit,
    /// Stop the route.
    Deny,
}

/// One line of a prefix list: `permit|deny <prefix> [ge N] [le M]`.
///
/// Without `ge`/`le` it matches exactly `prefix`. With them it matches every prefix inside
/// `prefix` whose length is in `ge..=le` (`ge` defaults to the prefix length, `le` to the
/// family width), as in Cisco IOS and FRR prefix lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixListEntry {
    /// Permit or deny.
    pub verdict: Verdict,
    /// The covering prefix.
    pub prefix: IpNet,
    /// Shortest length matched.
    pub ge: Option<u8>,
    /// Longest length matched.
    pub le: Option<u8>,
}

impl PrefixListEntry {
    /// A checked entry: `prefix length <= ge <= le <= family width`.
    pub fn new(
        verdict: Verdict,
        prefix: IpNet,
        ge: Option<u8>,
        le: Option<u8>,
    ) -> Result<Self, PolicyError> {
        let (len, max) = (prefix.prefix_len(), prefix.max_prefix_len());
        let lo = ge.unwrap_or(len);
        let hi = le.unwrap_or(if ge.is_some() { max } else { len });
        if lo < len || lo > hi || hi > max {
            return Err(PolicyError::BadRange { prefix, ge, le });
        }
        Ok(PrefixListEntry {
            verdict,
            prefix: prefix.trunc(),
            ge,
            le,
        })
    }

    /// True if `p` falls inside this entry's prefix with a length in range.
    pub fn matches(&self, p: &IpNet) -> bool {
        let len = self.prefix.prefix_len();
        let lo = self.ge.unwrap_or(len);
        let hi = self.le.unwrap_or(if self.ge.is_some() {
            self.prefix.max_prefix_len()
        } else {
            len
        });
        (lo..=hi).contains(&p.prefix_len()) && self.prefix.contains(p)
    }
}

/// An ordered prefix list: the first matching entry decides; no match means deny.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// The entries, in order.
    pub entries: Vec<PrefixListEntry>,
}

impl PrefixList {
    /// A list that permits everything (`permit 0.0.0.0/0 le 32`, `permit ::/0 le 128`).
    pub fn permit_all() -> Self {
        let any4 = IpNet::V4(ipnet::Ipv4Net::default());
        let any6 = IpNet::V6(ipnet::Ipv6Net::default());
        PrefixList {
            entries: vec![
                PrefixListEntry {
                    verdict: Verdict::Permit,
                    prefix: any4,
                    ge: None,
                    le: Some(32),
                },
                PrefixListEntry {
                    verdict: Verdict::Permit,
                    prefix: any6,
                    ge: None,
                    le: Some(128),
                },
            ],
        }
    }

    /// True if the first entry matching `p` permits it.
    pub fn permits(&self, p: &IpNet) -> bool {
        self.entries
            .iter()
            .find(|e| e.matches(p))
            .is_some_and(|e| e.verdict == Verdict::Permit)
    }

    /// Parses one entry per line, `permit|deny <prefix> [ge N] [le M]`; blank lines and
    /// `#` comments are skipped. Errors name the line (1-based).
    ///
    /// ```
    /// use gatekit_route::PrefixList;
    /// let pl = PrefixList::parse("deny 10.0.0.0/8 ge 32\npermit 10.0.0.0/8 le 24\n")?;
    /// assert!(pl.permits(&"10.1.0.0/16".parse()?));
    /// assert!(!pl.permits(&"10.1.2.3/32".parse()?));
    /// assert!(!pl.permits(&"192.168.0.0/16".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |reason: String| PolicyError::Syntax {
                line: n + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let verdict = match words.next() {
                Some("permit") => Verdict::Permit,
                Some("deny") => Verdict::Deny,
                other => {
                    return Err(err(format!(
                        "expected `permit` or `deny`, found {:?}",
                        other.unwrap_or("")
                    )));
                }
            };
            let prefix_text = words.next().ok_or_else(|| err("missing prefix".into()))?;
            let prefix: IpNet = prefix_text.parse().map_err(|_| {
                err(format!(
                    "{prefix_text:?} is not a prefix (a.b.c.d/len or x::/len)"
                ))
            })?;
            let (mut ge, mut le) = (None, None);
            while let Some(kw) = words.next() {
                let value = words
                    .next()
                    .ok_or_else(|| err(format!("`{kw}` needs a length")))?;
                let v: u8 = value
                    .parse()
                    .map_err(|_| err(format!("{value:?} is not a prefix length")))?;
                match kw {
                    "ge" if ge.is_none() => ge = Some(v),
                    "le" if le.is_none() => le = Some(v),
                    _ => {
                        return Err(err(format!(
                            "unexpected {kw:?} (expected `ge N` or `le M`, once each)"
                        )));
                    }
                }
            }
            let entry =
                PrefixListEntry::new(verdict, prefix, ge, le).map_err(|e| PolicyError::Syntax {
                    line: n + 1,
                    reason: e.to_string(),
                })?;
            entries.push(entry);
        }
        Ok(PrefixList { entries })
    }
}

/// A policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `ge`/`le` out of order or out of the family's range.
    #[error("prefix-list entry {prefix} ge {ge:?} le {le:?}: need length <= ge <= le <= width")]
    BadRange {
        /// The entry's prefix.
        prefix: IpNet,
        /// Its `ge`.
        ge: Option<u8>,
        /// Its `le`.
        le: Option<u8>,
    },
    /// A prefix-list line does not parse.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One redistribution rule: routes selected from any of `from` are exported into `into`,
/// if the prefix list permits them and they carry none of `deny_tags`, with the metric and
/// tag rewritten as asked.
///
/// Loop prevention: give every export into the mesh a tag that names this gateway
/// (`set_tag`) and deny that tag on the way back in (`deny_tags` of the import rule), so a
/// route never returns to where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redistribution {
    /// Sources whose selected routes this rule exports.
    pub from: Vec<Source>,
    /// The source (protocol) the routes are exported into.
    pub into: Source,
    /// Which prefixes pass; `None` passes every prefix.
    pub prefix_list: Option<PrefixList>,
    /// The metric exported routes get (`None` keeps theirs).
    pub set_metric: Option<u32>,
    /// Added to the metric (after `set_metric`), saturating: one hop further away.
    pub add_metric: u32,
    /// The tag exported routes get (`None` keeps theirs).
    pub set_tag: Option<u32>,
    /// Routes carrying one of these tags are not exported.
    pub deny_tags: Vec<u32>,
}

impl Redistribution {
    /// A rule exporting every route of `from` into `into`, unchanged.
    pub fn new(from: &[Source], into: Source) -> Self {
        Redistribution {
            from: from.to_vec(),
            into,
            prefix_list: None,
            set_metric: None,
            add_metric: 0,
            set_tag: None,
            deny_tags: Vec::new(),
        }
    }
    /// With this prefix list.
    pub fn prefix_list(mut self, list: PrefixList) -> Self {
        self.prefix_list = Some(list);
        self
    }
    /// Exported routes get this metric.
    pub fn set_metric(mut self, metric: u32) -> Self {
        self.set_metric = Some(metric);
        self
    }
    /// Exported routes get this much added to their metric.
    pub fn add_metric(mut self, n: u32) -> Self {
        self.add_metric = n;
        self
    }
    /// Exported routes get this tag.
    pub fn set_tag(mut self, tag: u32) -> Self {
        self.set_tag = Some(tag);
        self
    }
    /// Routes with this tag are not exported.
    pub fn deny_tag(mut self, tag: u32) -> Self {
        self.deny_tags.push(tag);
        self
    }

    /// The route as this rule exports it, or `None` if the rule does not pass it.
    pub fn apply(&self, route: &Route) -> Option<Route> {
        if !self.from.contains(&route.source) || self.deny_tags.contains(&route.tag) {
            return None;
        }
        if let Some(pl) = &self.prefix_list
            && !pl.permits(&route.prefix)
        {
            return None;
        }
        let metric = self
            .set_metric
            .unwrap_or(route.metric)
            .saturating_add(self.add_metric);
        Some(Route {
            source: self.into,
            distance: self.into.default_distance(),
            metric,
            tag: self.set_tag.unwrap_or(route.tag),
            ..*route
        })
    }
}

/// A set of redistribution rules.
///
/// ```
/// use gatekit_packet::PortId;
/// use gatekit_route::{NextHop, PrefixList, Redistribution, Redistributor, Rib, Route, Source};
///
/// let mut rib = Rib::new();
/// let lan = NextHop::port(PortId(1));
/// rib.add(Route::new("10.1.0.0/16".parse()?, Source::Connected, lan))?;
/// rib.add(Route::new("192.168.0.0/24".parse()?, Source::Connected, lan))?;
///
/// // Advertise the site's 10/8 subnets into the mesh, tagged with this gateway's id.
/// let site = PrefixList::parse("permit 10.0.0.0/8 le 24")?;
/// let policy = Redistributor::new(vec![
///     Redistribution::new(&[Source::Connected, Source::Static], Source::Mesh)
///         .prefix_list(site)
///         .set_metric(10)
///         .set_tag(65001),
/// ]);
/// let out = policy.export(&rib, Source::Mesh);
/// assert_eq!(out.len(), 1);
/// assert_eq!((out[0].prefix.to_string(), out[0].metric, out[0].tag), ("10.1.0.0/16".into(), 10, 65001));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redistributor {
    /// The rules, in order: for each route, the first rule into the target that passes it
    /// decides how it is exported.
    pub rules: Vec<Redistribution>,
}

impl Redistributor {
    /// A redistributor with these rules.
    pub fn new(rules: Vec<Redistribution>) -> Self {
        Redistributor { rules }
    }

    /// The route as exported into `into`, by the first rule that passes it.
    pub fn apply(&self, route: &Route, into: Source) -> Option<Route> {
        self.rules
            .iter()
            .filter(|r| r.into == into)
            .find_map(|r| r.apply(route))
    }

    /// Every route of the RIB's selection exported into `into`, one per prefix (the first of
    /// equal-cost paths), sorted by prefix. Routes of `into` itself are exported only by a
    /// rule that names `into` among its sources (transit).
    pub fn export(&self, rib: &Rib, into: Source) -> Vec<Route> {
        let mut out: Vec<Route> = rib
            .best_routes()
            .filter_map(|r| self.apply(r, into))
            .collect();
        out.sort_by_key(|r| (r.prefix, r.next_hop));
        out.dedup_by_key(|r| r.prefix);
        out
    }

    /// Adds to `rib` every route of `routes` (learned from peers of source `into`, and of
    /// that source) that a rule into `into` passes, as rewritten by it; returns how many were
    /// added. Keep import rules in their own `Redistributor`, with `from: [into]`, e.g.
    /// `Redistribution::new(&[Source::Mesh], Source::Mesh).deny_tag(my_tag)`.
    pub fn import(
        &self,
        rib: &mut Rib,
        into: Source,
        routes: impl IntoIterator<Item = Route>,
    ) -> Result<usize, crate::RibError> {
        let mut n = 0;
        for r in routes {
            if let Some(r) = self.apply(&r, into) {
                rib.add(r)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
