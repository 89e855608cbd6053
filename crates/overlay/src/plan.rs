//! The overlay's definition: its prefixes, the networks it must stay clear of, its segments
//! (a CIDR tree inside the prefixes) and the addresses no member may have.

use core::net::IpAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How long a released address stays out of use unless the plan says otherwise: one hour.
pub const DEFAULT_QUARANTINE_SECS: u64 = 3600;

fn default_quarantine() -> u64 {
    DEFAULT_QUARANTINE_SECS
}

/// The overlay as an operator writes it: plain data, checked by [`AddressPlan::new`].
///
/// ```
/// use gatekit_overlay::{AddressPlan, PlanSpec, SegmentSpec};
/// let spec = PlanSpec {
///     prefixes: vec!["10.100.0.0/16".parse()?, "fd00:100::/48".parse()?],
///     underlay: vec!["172.31.0.0/16".parse()?],
///     segments: vec![SegmentSpec::new("eng", ["10.100.1.0/24".parse()?])],
///     ..PlanSpec::default()
/// };
/// let plan = AddressPlan::new(spec)?;
/// assert_eq!(plan.segment("eng").unwrap().prefixes[0].to_string(), "10.100.1.0/24");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The overlay's own address space: one or more IPv4 and IPv6 prefixes.
    pub prefixes: Vec<IpNet>,
    /// Underlay networks (the clouds' VPC/VNet ranges) the overlay must not overlap.
    #[serde(default)]
    pub underlay: Vec<IpNet>,
    /// Site subnets reached through the gateway, which the overlay must not overlap either.
    #[serde(default)]
    pub sites: Vec<IpNet>,
    /// The gateway's own overlay addresses. Empty means the first host of each overlay prefix.
    #[serde(default)]
    pub gateway: Vec<IpAddr>,
    /// Further addresses no member may have (DNS resolvers, appliances, ...).
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
    /// The segments, in any order (a parent need not come before its children).
    #[serde(default, rename = "segment")]
    pub segments: Vec<SegmentSpec>,
    /// Seconds a released address stays in quarantine before it may be handed out again.
    #[serde(default = "default_quarantine")]
    pub quarantine_secs: u64,
}

impl Default for PlanSpec {
    fn default() -> Self {
        PlanSpec {
            prefixes: Vec::new(),
            underlay: Vec::new(),
            sites: Vec::new(),
            gateway: Vec::new(),
            reserved: Vec::new(),
            segments: Vec::new(),
            quarantine_secs: DEFAULT_QUARANTINE_SECS,
        }
    }
}

/// One segment as written: a name, its prefixes and, for a nested segment, its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// Unique name (letters, digits, `.`, `_`, `-`, `@`, `+`; at most 64).
    pub name: String,
    /// The segment's prefixes (at least one; IPv4, IPv6 or both).
    pub prefixes: Vec<IpNet>,
    /// The enclosing segment; `None` for a segment directly inside the overlay prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl SegmentSpec {
    /// A top-level segment.
    pub fn new(name: &str, prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        SegmentSpec {
            name: name.to_string(),
            prefixes: prefixes.into_iter().collect(),
            parent: None,
        }
    }
    /// The same segment nested inside `parent`.
    pub fn inside(mut self, parent: &str) -> Self {
        self.parent = Some(parent.to_string());
        self
    }
}

/// Why a plan was refused. Every variant names the things in conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The plan has no overlay prefix.
    #[error("the overlay has no prefix")]
    NoPrefix,
    /// A prefix has host bits set (`10.1.2.3/16`), which usually hides a typo.
    #[error("{what} prefix {prefix} has host bits set (did you mean {canonical}?)")]
    HostBits {
        /// Where the prefix was written ("overlay", "segment eng", ...).
        what: String,
        /// The prefix as written.
        prefix: IpNet,
        /// The prefix with host bits cleared.
        canonical: IpNet,
    },
    /// Two prefixes that must be disjoint overlap.
    #[error("{what} {a} overlaps {other} {b}")]
    Overlap {
        /// What the first prefix is ("overlay prefix", "segment eng", ...).
        what: String,
        /// The first prefix.
        a: IpNet,
        /// What the second prefix is ("underlay network", "site subnet", "segment ops", ...).
        other: String,
        /// The second prefix.
        b: IpNet,
    },
    /// A segment prefix is not inside its parent (or, for a top-level segment, the overlay).
    #[error("segment {segment}: prefix {prefix} is not inside {parent}")]
    OutsideParent {
        /// The segment.
        segment: String,
        /// Its prefix.
        prefix: IpNet,
        /// "segment NAME" or "the overlay prefixes".
        parent: String,
    },
    /// A segment name is used twice.
    #[error("segment {0} is defined twice")]
    DuplicateSegment(String),
    /// A segment names a parent that does not exist.
    #[error("segment {segment}: parent {parent} does not exist")]
    UnknownParent {
        /// The segment.
        segment: String,
        /// The missing parent.
        parent: String,
    },
    /// Parents form a cycle.
    #[error("segment {0} is its own ancestor")]
    Cycle(String),
    /// A segment has no prefix.
    #[error("segment {0} has no prefix")]
    EmptySegment(String),
    /// A name with characters outside the allowed set, empty or too long.
    #[error("invalid {what} name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - @ +")]
    BadName {
        /// "segment", "member", "tag".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A gateway or reserved address outside every overlay prefix.
    #[error("{what} address {addr} is outside the overlay prefixes")]
    AddressOutside {
        /// "gateway" or "reserved".
        what: &'static str,
        /// The address.
        addr: IpAddr,
    },
}

/// Checks a segment, member or tag name.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// Whether two prefixes share any address.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Index of a segment in its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub(crate) u32);

impl SegmentId {
    /// The index, dense from 0 in the plan's segment order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A validated segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its name.
    pub name: String,
    /// Its prefixes, canonical.
    pub prefixes: Vec<IpNet>,
    /// The enclosing segment.
    pub parent: Option<SegmentId>,
    /// The segments directly inside it.
    pub children: Vec<SegmentId>,
}

/// Why an address is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reservation {
    /// The network address of an overlay or segment prefix (and IPv6's Subnet-Router anycast,
    /// RFC 4291 §2.6.1).
    Network,
    /// The IPv4 broadcast address of an overlay or segment prefix.
    Broadcast,
    /// One of the gateway's own addresses.
    Gateway,
    /// Listed as reserved in the plan.
    Listed,
}

impl core::fmt::Display for Reservation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Reservation::Network => "a network address",
            Reservation::Broadcast => "a broadcast address",
            Reservation::Gateway => "the gateway's own address",
            Reservation::Listed => "reserved by the plan",
        })
    }
}

/// The edge addresses a prefix keeps for itself: the network address (not for IPv4 /31 and
/// /32, RFC 3021, nor IPv6 /127 and /128, RFC 6164) and the IPv4 broadcast address.
pub(crate) fn edge_reservations(p: &IpNet) -> Vec<(IpAddr, Reservation)> {
    let mut out = Vec::new();
    let (host_bits, v4) = match p {
        IpNet::V4(n) => (32 - n.prefix_len(), true),
        IpNet::V6(n) => (128 - n.prefix_len(), false),
    };
    if host_bits >= 2 {
        out.push((p.network(), Reservation::Network));
        if v4 {
            out.push((p.broadcast(), Reservation::Broadcast));
        }
    }
    out
}

/// A checked overlay definition: the spec it came from plus the segment tree and the reserved
/// addresses, ready for allocation.
#[derive(Debug, Clone)]
pub struct AddressPlan {
    spec: PlanSpec,
    segments: Vec<Segment>,
    by_name: HashMap<String, SegmentId>,
    reserved: BTreeMap<IpAddr, Reservation>,
    gateway: Vec<IpAddr>,
}

impl AddressPlan {
    /// Checks `spec` and builds the plan.
    pub fn new(spec: PlanSpec) -> Result<AddressPlan, PlanError> {
        if spec.prefixes.is_empty() {
            return Err(PlanError::NoPrefix);
        }
        let canonical = |what: &str, p: &IpNet| {
            if p.trunc() == *p {
                Ok(())
            } else {
                Err(PlanError::HostBits {
                    what: what.to_string(),
                    prefix: *p,
                    canonical: p.trunc(),
                })
            }
        };
        for p in &spec.prefixes {
            canonical("overlay", p)?;
        }
        disjoint("overlay prefix", &spec.prefixes)?;
        for (kind, list) in [
            ("underlay network", &spec.underlay),
            ("site subnet", &spec.sites),
        ] {
            for o in list {
                for p in &spec.prefixes {
                    if overlaps(p, o) {
                        return Err(PlanError::Overlap {
                            what: "overlay prefix".into(),
                            a: *p,
                            other: kind.into(),
                            b: *o,
                        });
                    }
                }
            }
        }
        let in_overlay = |a: &IpAddr| spec.prefixes.iter().any(|p| p.contains(a));

        // Segments: names, then parents, then prefixes against parents and siblings.
        let mut by_name = HashMap::new();
        for (i, s) in spec.segments.iter().enumerate() {
            check_name("segment", &s.name)?;
            if s.prefixes.is_empty() {
                return Err(PlanError::EmptySegment(s.name.clone()));
            }
            if by_name
                .insert(s.name.clone(), SegmentId(i as u32))
                .is_some()
            {
                return Err(PlanError::DuplicateSegment(s.name.clone()));
            }
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(spec.segments.len());
        for s in &spec.segments {
            let parent = match &s.parent {
                None => None,
                Some(p) => Some(*by_name.get(p).ok_or_else(|| PlanError::UnknownParent {
                    segment: s.name.clone(),
                    parent: p.clone(),
                })?),
            };
            segments.push(Segment {
                name: s.name.clone(),
                prefixes: s.prefixes.clone(),
                parent,
                children: Vec::new(),
            });
        }
        for (i, s) in segments.iter().enumerate() {
            // Walking up more steps than there are segments means a cycle.
            let mut cur = s.parent;
            let mut steps = 0;
            while let Some(p) = cur {
                steps += 1;
                if p.index() == i || steps > segments.len() {
                    return Err(PlanError::Cycle(s.name.clone()));
                }
                cur = segments[p.index()].parent;
            }
        }
        for i in 0..segments.len() {
            if let Some(p) = segments[i].parent {
                segments[p.index()].children.push(SegmentId(i as u32));
            }
        }
        for s in &segments {
            let what = format!("segment {}", s.name);
            for p in &s.prefixes {
                canonical(&what, p)?;
            }
            disjoint(&what, &s.prefixes)?;
            let (outer, outer_name) = match s.parent {
                Some(p) => (
                    &segments[p.index()].prefixes,
                    format!("segment {}", segments[p.index()].name),
                ),
                None => (&spec.prefixes, "the overlay prefixes".to_string()),
            };
            for p in &s.prefixes {
                if !outer.iter().any(|o| o.contains(p)) {
                    return Err(PlanError::OutsideParent {
                        segment: s.name.clone(),
                        prefix: *p,
                        parent: outer_name,
                    });
                }
            }
        }
        // Siblings (segments with the same parent) must be disjoint.
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if a.parent != b.parent {
                    continue;
                }
                for pa in &a.prefixes {
                    if let Some(pb) = b.prefixes.iter().find(|pb| overlaps(pa, pb)) {
                        return Err(PlanError::Overlap {
                            what: format!("segment {}", a.name),
                            a: *pa,
                            other: format!("segment {}", b.name),
                            b: *pb,
                        });
                    }
                }
            }
        }

        // Reserved addresses. Listed first so the more specific reasons below win.
        let mut reserved = BTreeMap::new();
        for a in &spec.reserved {
            if !in_overlay(a) {
                return Err(PlanError::AddressOutside {
                    what: "reserved",
                    addr: *a,
                });
            }
            reserved.insert(*a, Reservation::Listed);
        }
        let gateway: Vec<IpAddr> = if spec.gateway.is_empty() {
            spec.prefixes.iter().filter_map(first_host).collect()
        } else {
            spec.gateway.clone()
        };
        for a in &gateway {
            if !in_overlay(a) {
                return Err(PlanError::AddressOutside {
                    what: "gateway",
                    addr: *a,
                });
            }
            reserved.insert(*a, Reservation::Gateway);
        }
        for p in spec
            .prefixes
            .iter()
            .chain(segments.iter().flat_map(|s| &s.prefixes))
        {
            for (a, why) in edge_reservations(p) {
                reserved.insert(a, why);
            }
        }
        Ok(AddressPlan {
            spec,
            segments,
            by_name,
            reserved,
            gateway,
        })
    }

    /// The spec the plan was built from.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }
    /// The overlay prefixes.
    pub fn prefixes(&self) -> &[IpNet] {
        &self.spec.prefixes
    }
    /// The gateway's own overlay addresses.
    pub fn gateway(&self) -> &[IpAddr] {
        &self.gateway
    }
    /// Quarantine of released addresses.
    pub fn quarantine(&self) -> core::time::Duration {
        core::time::Duration::from_secs(self.spec.quarantine_secs)
    }
    /// All segments, indexed by [`SegmentId::index`].
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// The id of the segment named `name`.
    pub fn segment_id(&self, name: &str) -> Option<SegmentId> {
        self.by_name.get(name).copied()
    }
    /// The segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segment_id(name).map(|id| &self.segments[id.index()])
    }
    /// The segment with this id.
    pub fn segment_by_id(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(id.index())
    }
    /// Whether `addr` is reserved, and why.
    pub fn reservation(&self, addr: IpAddr) -> Option<Reservation> {
        self.reserved.get(&addr).copied()
    }
    /// All reserved addresses.
    pub fn reserved(&self) -> impl Iterator<Item = (IpAddr, Reservation)> + '_ {
        self.reserved.iter().map(|(a, r)| (*a, *r))
    }
    /// The most specific segment whose prefixes hold `addr` (the segment that owns it).
    pub fn owning_segment(&self, addr: IpAddr) -> Option<SegmentId> {
        let mut level: Vec<SegmentId> = (0..self.segments.len() as u32)
            .map(SegmentId)
            .filter(|id| self.segments[id.index()].parent.is_none())
            .collect();
        let mut found = None;
        // Descend the tree; siblings are disjoint, so at most one matches per level.
        while let Some(id) = level.iter().copied().find(|id| {
            self.segments[id.index()]
                .prefixes
                .iter()
                .any(|p| p.contains(&addr))
        }) {
            found = Some(id);
            level = self.segments[id.index()].children.clone();
        }
        found
    }
    /// The segment and all segments nested inside it, depth first.
    pub fn subtree(&self, id: SegmentId) -> Vec<SegmentId> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            if let Some(s) = self.segments.get(out[i].index()) {
                out.extend(s.children.iter().copied());
            }
            i += 1;
        }
        out
    }
}

fn first_host(p: &IpNet) -> Option<IpAddr> {
    if edge_reservations(p).is_empty() {
        return None;
    }
    Some(match p.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    })
}

fn disjoint(what: &str, list: &[IpNet]) -> Result<(), PlanError> {
    for (i, a) in list.iter().enumerate() {
        if let Some(b) = list[i + 1..].iter().find(|b| overlaps(a, b)) {
            return Err(PlanError::Overlap {
                what: what.to_string(),
                a: *a,
                other: what.to_string(),
                b: *b,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec() -> PlanSpec {
        PlanSpec {
            prefixes: vec![n("10.100.0.0/16"), n("fd00:100::/48")],
            underlay: vec![n("172.31.0.0/16")],
            sites: vec![n("192.168.10.0/24")],
            segments: vec![
                SegmentSpec::new("eng-web", [n("10.100.1.128/25")]).inside("eng"),
                SegmentSpec::new("eng", [n("10.100.1.0/24"), n("fd00:100:0:1::/64")]),
                SegmentSpec::new("ops", [n("10.100.2.0/24")]),
            ],
            ..PlanSpec::default()
        }
    }

    #[test]
    fn tree_and_reservations() {
        let p = AddressPlan::new(spec()).unwrap();
        let eng = p.segment_id("eng").unwrap();
        let web = p.segment_id("eng-web").unwrap();
        assert_eq!(p.segments()[eng.index()].children, vec![web]);
        assert_eq!(p.owning_segment(a("10.100.1.5")), Some(eng));
        assert_eq!(p.owning_segment(a("10.100.1.200")), Some(web));
        assert_eq!(p.owning_segment(a("10.100.3.1")), None);
        assert_eq!(p.subtree(eng), vec![eng, web]);
        assert_eq!(p.gateway(), &[a("10.100.0.1"), a("fd00:100::1")]);
        assert_eq!(p.reservation(a("10.100.0.1")), Some(Reservation::Gateway));
        assert_eq!(p.reservation(a("10.100.1.0")), Some(Reservation::Network));
        assert_eq!(
            p.reservation(a("10.100.1.255")),
            Some(Reservation::Broadcast)
        );
        assert_eq!(p.reservation(a("10.100.1.127")), None);
        assert_eq!(p.reservation(a("10.100.1.128")), Some(Reservation::Network));
        assert_eq!(
            p.reservation(a("fd00:100:0:1::")),
            Some(Reservation::Network)
        );
    }

    #[test]
    fn errors_name_both_sides() {
        let mut s = spec();
        s.underlay.push(n("10.0.0.0/8"));
        let e = AddressPlan::new(s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "overlay prefix 10.100.0.0/16 overlaps underlay network 10.0.0.0/8"
        );

        let mut s = spec();
        s.sites.push(n("10.100.7.0/24"));
        assert!(
            AddressPlan::new(s)
                .unwrap_err()
                .to_string()
                .contains("site subnet")
        );

        let mut s = spec();
        s.segments
            .push(SegmentSpec::new("dup", [n("10.100.2.128/25")]));
        assert_eq!(
            AddressPlan::new(s).unwrap_err().to_string(),
            "segment ops 10.100.2.0/24 overlaps segment dup 10.100.2.128/25"
        );

        let mut s = spec();
        s.segments[0].prefixes = vec![n("10.100.2.0/25")];
        assert_eq!(
            AddressPlan::new(s).unwrap_err().to_string(),
            "segment eng-web: prefix 10.100.2.0/25 is not inside segment eng"
        );

        let mut s = spec();
        s.segments[1].prefixes[0] = n("10.100.1.1/24");
        assert!(matches!(
            AddressPlan::new(s),
            Err(PlanError::HostBits { .. })
        ));

        let mut s = spec();
        s.segments[1].parent = Some("eng-web".into());
        assert!(matches!(AddressPlan::new(s), Err(PlanError::Cycle(_))));

        let mut s = spec();
        s.segments[2].parent = Some("nope".into());
        assert!(matches!(
            AddressPlan::new(s),
            Err(PlanError::UnknownParent { .. })
        ));

        let mut s = spec();
        s.segments[2].name = "bad name".into();
        assert!(matches!(
            AddressPlan::new(s),
            Err(PlanError::BadName { .. })
        ));

        let mut s = spec();
        s.gateway = vec![a("10.200.0.1")];
        assert!(matches!(
            AddressPlan::new(s),
            Err(PlanError::AddressOutside { .. })
        ));

        let mut s = spec();
        s.prefixes.push(n("10.100.128.0/17"));
        assert!(matches!(
            AddressPlan::new(s),
            Err(PlanError::Overlap { .. })
        ));

        assert_eq!(
            AddressPlan::new(PlanSpec::default()).unwrap_err(),
            PlanError::NoPrefix
        );
    }

    #[test]
    fn point_to_point_prefixes_keep_every_address() {
        // RFC 3021: a /31 has no network or broadcast address.
        assert!(edge_reservations(&n("10.0.0.0/31")).is_empty());
        assert!(edge_reservations(&n("10.0.0.1/32")).is_empty());
        assert_eq!(edge_reservations(&n("10.0.0.0/30")).len(), 2);
        assert_eq!(edge_reservations(&n("fd00::/64")).len(), 1);
    }
}
