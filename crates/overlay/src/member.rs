//! Members of the overlay: who they are and what they hold.

use crate::PublicKey;
use core::net::{IpAddr, SocketAddr};
use gatekit_packet::Instant;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A member's number in its registry: dense, assigned in order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub u32);

impl core::fmt::Display for MemberId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Instants as whole milliseconds in the registry file.
pub(crate) mod millis {
    use gatekit_packet::Instant;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.as_millis())
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        u64::deserialize(d).map(Instant::from_millis)
    }
}

/// A member of the overlay.
///
/// Times are [`Instant`]s as the caller passed them; a controller that persists the registry
/// passes time since the Unix epoch, so the file's `created_ms`/`updated_ms` read as wall time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its number in the registry.
    pub id: MemberId,
    /// Its identity.
    pub key: PublicKey,
    /// Unique name.
    pub name: String,
    /// Free labels that policy rules select on.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// The segment it belongs to.
    pub segment: String,
    /// Its overlay addresses (one per address family of its segment).
    pub addresses: Vec<IpAddr>,
    /// A disabled member keeps its addresses but is routed nowhere and reaches nothing.
    pub enabled: bool,
    /// The underlay address it was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// When it was added.
    #[serde(rename = "created_ms", with = "millis")]
    pub created: Instant,
    /// When it last changed.
    #[serde(rename = "updated_ms", with = "millis")]
    pub updated: Instant,
}

/// What it takes to add a member; see [`Registry::add_member`](crate::Registry::add_member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// Its identity.
    pub key: PublicKey,
    /// Unique name.
    pub name: String,
    /// The segment to place it in.
    pub segment: String,
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Fixed addresses to give it, at most one per family; families of the segment left out
    /// get the next free address.
    pub fixed: Vec<IpAddr>,
    /// Enabled from the start (the default) or not.
    pub enabled: bool,
    /// A known underlay endpoint.
    pub endpoint: Option<SocketAddr>,
}

impl NewMember {
    /// An enabled member with no tags and allocated addresses.
    pub fn new(key: PublicKey, name: &str, segment: &str) -> Self {
        NewMember {
            key,
            name: name.to_string(),
            segment: segment.to_string(),
            tags: BTreeSet::new(),
            fixed: Vec::new(),
            enabled: true,
            endpoint: None,
        }
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.insert(tag.to_string());
        self
    }
    /// Asks for this fixed address.
    pub fn address(mut self, addr: IpAddr) -> Self {
        self.fixed.push(addr);
        self
    }
}
