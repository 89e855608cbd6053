//! Who may reach whom: segment associations and per-tag rules.
//!
//! The policy is data here; [`compile`](crate::compile) turns it into the firewall's rules.

use crate::plan::{AddressPlan, PlanError, check_name};
use serde::{Deserialize, Serialize};

/// What a rule matches on one side of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every member of the overlay.
    Any,
    /// Members of this segment and of the segments nested inside it.
    Segment(String),
    /// Members carrying this tag.
    Tag(String),
    /// The member with this name.
    Member(String),
}

/// Why a selector, protocol or port range could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A selector not of the form `any`, `segment:NAME`, `tag:NAME` or `member:NAME`.
    #[error("selector {0:?}: expected any, segment:NAME, tag:NAME or member:NAME")]
    BadSelector(String),
    /// A name inside a selector is not valid.
    #[error("selector {selector:?}: {source}")]
    BadName {
        /// The selector.
        selector: String,
        /// The name problem.
        source: PlanError,
    },
    /// A protocol other than tcp, udp, icmp, icmpv6 or a number 0-255.
    #[error("protocol {0:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255")]
    BadProto(String),
    /// A port range that is not `N` or `LO-HI` with `LO <= HI`.
    #[error("ports {0:?}: expected N or LO-HI with LO <= HI")]
    BadPorts(String),
    /// Ports given for a protocol without ports.
    #[error("rule {index}: ports need tcp or udp")]
    PortsWithoutProto {
        /// Index of the rule in the policy.
        index: usize,
    },
    /// A segment named in the policy does not exist in the plan.
    #[error("{place}: segment {segment} does not exist")]
    UnknownSegment {
        /// "association 2", "rule 0 from", ...
        place: String,
        /// The segment.
        segment: String,
    },
}

impl core::str::FromStr for Selector {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if s == "any" {
            return Ok(Selector::Any);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| PolicyError::BadSelector(s.to_string()))?;
        let what = match kind {
            "segment" => "segment",
            "tag" => "tag",
            "member" => "member",
            _ => return Err(PolicyError::BadSelector(s.to_string())),
        };
        check_name(what, name).map_err(|source| PolicyError::BadName {
            selector: s.to_string(),
            source,
        })?;
        Ok(match kind {
            "segment" => Selector::Segment(name.to_string()),
            "tag" => Selector::Tag(name.to_string()),
            _ => Selector::Member(name.to_string()),
        })
    }
}

impl core::fmt::Display for Selector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Selector::Any => f.write_str("any"),
            Selector::Segment(n) => write!(f, "segment:{n}"),
            Selector::Tag(n) => write!(f, "tag:{n}"),
            Selector::Member(n) => write!(f, "member:{n}"),
        }
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Selector);
serde_via_str!(Proto);
serde_via_str!(Ports);

/// An IP protocol a rule is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proto(pub u8);

impl Proto {
    /// TCP.
    pub const TCP: Proto = Proto(6);
    /// UDP.
    pub const UDP: Proto = Proto(17);
    /// ICMP.
    pub const ICMP: Proto = Proto(1);
    /// ICMPv6.
    pub const ICMPV6: Proto = Proto(58);

    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17)
    }
}

impl core::str::FromStr for Proto {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Ok(match s {
            "tcp" => Proto::TCP,
            "udp" => Proto::UDP,
            "icmp" => Proto::ICMP,
            "icmpv6" => Proto::ICMPV6,
            n => Proto(
                n.parse()
                    .map_err(|_| PolicyError::BadProto(s.to_string()))?,
            ),
        })
    }
}

impl core::fmt::Display for Proto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Proto::TCP => f.write_str("tcp"),
            Proto::UDP => f.write_str("udp"),
            Proto::ICMP => f.write_str("icmp"),
            Proto::ICMPV6 => f.write_str("icmpv6"),
            Proto(n) => write!(f, "{n}"),
        }
    }
}

/// An inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl core::str::FromStr for Ports {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadPorts(s.to_string());
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let p = s.parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        Ok(Ports { lo, hi })
    }
}

impl core::fmt::Display for Ports {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the connection through.
    Allow,
    /// Drop it.
    Deny,
}

/// Members of segment `from` may open connections to members of segment `to` (and, with
/// `both_ways`, the other way too). Replies to an allowed connection are always allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Association {
    /// The initiating segment (with its nested segments).
    pub from: String,
    /// The reached segment (with its nested segments).
    pub to: String,
    /// Whether `to` may also open connections to `from`.
    #[serde(default)]
    pub both_ways: bool,
}

/// A rule on members, checked in order before the associations: the first rule that matches a
/// new connection decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Who opens the connection.
    pub from: Selector,
    /// Who is reached.
    pub to: Selector,
    /// Only this protocol (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Only these destination ports (needs tcp or udp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    /// What to do.
    pub verdict: Verdict,
}

fn yes() -> bool {
    true
}

/// The overlay's access policy. Traffic between members that nothing allows is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Members of one segment reach each other (default true).
    #[serde(default = "yes")]
    pub intra_segment: bool,
    /// Segment associations.
    #[serde(default, rename = "association")]
    pub associations: Vec<Association>,
    /// Rules on tags, members and segments, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<PolicyRule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            intra_segment: true,
            associations: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl Policy {
    /// Checks the policy against `plan`: segments it names exist, ports only with tcp/udp.
    pub fn check(&self, plan: &AddressPlan) -> Result<(), PolicyError> {
        let seg = |place: String, name: &str| {
            if plan.segment_id(name).is_some() {
                Ok(())
            } else {
                Err(PolicyError::UnknownSegment {
                    place,
                    segment: name.to_string(),
                })
            }
        };
        for (i, a) in self.associations.iter().enumerate() {
            seg(format!("association {i}"), &a.from)?;
            seg(format!("association {i}"), &a.to)?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            for (side, s) in [("from", &r.from), ("to", &r.to)] {
                if let Selector::Segment(name) = s {
                    seg(format!("rule {i} {side}"), name)?;
                }
            }
            if r.ports.is_some() && !r.proto.is_some_and(Proto::has_ports) {
                return Err(PolicyError::PortsWithoutProto { index: i });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_protos_ports_parse_and_print() {
        for s in [
            "any",
            "segment:eng",
            "tag:admin",
            "member:alice@example.com",
        ] {
            assert_eq!(s.parse::<Selector>().unwrap().to_string(), s);
        }
        assert!(matches!(
            "eng".parse::<Selector>(),
            Err(PolicyError::BadSelector(_))
        ));
        assert!(matches!(
            "host:x".parse::<Selector>(),
            Err(PolicyError::BadSelector(_))
        ));
        assert!(matches!(
            "tag:a b".parse::<Selector>(),
            Err(PolicyError::BadName { .. })
        ));
        assert_eq!("tcp".parse::<Proto>().unwrap(), Proto::TCP);
        assert_eq!("47".parse::<Proto>().unwrap(), Proto(47));
        assert!("256".parse::<Proto>().is_err());
        assert_eq!("22".parse::<Ports>().unwrap(), Ports { lo: 22, hi: 22 });
        assert_eq!(
            "8000-8080".parse::<Ports>().unwrap().to_string(),
            "8000-8080"
        );
        assert!("9-8".parse::<Ports>().is_err());
        assert!("x".parse::<Ports>().is_err());
    }
}
