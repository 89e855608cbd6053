//! The registry: the plan, the policy, the members and the state of every address.

use crate::PublicKey;
use crate::member::{Member, MemberId, NewMember};
use crate::plan::{AddressPlan, PlanError, Reservation, SegmentId, check_name};
use crate::policy::{Policy, PolicyError};
use crate::pool::{Pool, Slot};
use core::net::{IpAddr, SocketAddr};
use gatekit_packet::Instant;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why a registry operation was refused. Conflicts name what they conflict with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A bad member or tag name.
    #[error(transparent)]
    Name(#[from] PlanError),
    /// The policy does not fit the plan.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// No segment has this name.
    #[error("segment {0} does not exist")]
    UnknownSegment(String),
    /// No member has this id.
    #[error("member {0} does not exist")]
    UnknownMember(MemberId),
    /// The key already identifies a member.
    #[error("key {key} already belongs to member {member}")]
    DuplicateKey {
        /// The key.
        key: PublicKey,
        /// The member that has it.
        member: String,
    },
    /// The name is taken.
    #[error("member name {0} is taken")]
    DuplicateName(String),
    /// The address is another member's.
    #[error("address {addr} belongs to member {member}")]
    AddressTaken {
        /// The address.
        addr: IpAddr,
        /// Its member.
        member: String,
    },
    /// The address is reserved.
    #[error("address {addr} is {why}")]
    AddressReserved {
        /// The address.
        addr: IpAddr,
        /// Why.
        why: Reservation,
    },
    /// The address was released recently and is still in quarantine.
    #[error("address {addr} is in quarantine until {} ms", until.as_millis())]
    AddressQuarantined {
        /// The address.
        addr: IpAddr,
        /// End of its quarantine.
        until: Instant,
    },
    /// The address is not one the segment hands out.
    #[error("address {addr} is not in segment {segment} ({where_})")]
    AddressNotInSegment {
        /// The address.
        addr: IpAddr,
        /// The segment asked for.
        segment: String,
        /// Where the address is instead ("in segment ops", "outside every segment").
        where_: String,
    },
    /// Two fixed addresses of one family.
    #[error("fixed addresses {0} and {1} are of the same family; a member has one per family")]
    SameFamily(IpAddr, IpAddr),
    /// No free address of this family is left in the segment.
    #[error("segment {segment} has no free {family} address")]
    SegmentFull {
        /// The segment.
        segment: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// An id in a restored registry that is not below the next id.
    #[error("member {id} is not below the registry's next id {next}")]
    BadId {
        /// The member id.
        id: MemberId,
        /// The next id recorded.
        next: u32,
    },
}

/// The overlay's registry: its [`AddressPlan`], its [`Policy`], its [`Member`]s, and the
/// state (free, allocated, quarantined) of every address.
///
/// Sans-IO: every call that can change an address's state takes `now`, and released
/// addresses come back only once `now` is past their quarantine. Allocation is deterministic:
/// the same calls with the same `now`s give the same addresses (the lowest free one).
///
/// ```
/// use gatekit_overlay::{AddressPlan, NewMember, PlanSpec, PrivateKey, Registry, SegmentSpec};
/// use gatekit_packet::Instant;
///
/// let plan = AddressPlan::new(PlanSpec {
///     prefixes: vec!["10.100.0.0/16".parse()?],
///     segments: vec![SegmentSpec::new("eng", ["10.100.1.0/24".parse()?])],
///     ..PlanSpec::default()
/// })?;
/// let mut reg = Registry::new(plan);
/// let key = PrivateKey::generate();
/// let now = Instant::from_secs(1_764_000_000);
/// let id = reg.add_member(NewMember::new(key.public_key(), "alice", "eng"), now)?;
/// assert_eq!(reg.member(id).unwrap().addresses, ["10.100.1.1".parse::<std::net::IpAddr>()?]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    plan: AddressPlan,
    policy: Policy,
    members: BTreeMap<MemberId, Member>,
    by_key: HashMap<PublicKey, MemberId>,
    by_name: HashMap<String, MemberId>,
    by_addr: HashMap<IpAddr, MemberId>,
    /// One pool per prefix of each segment, indexed by segment id.
    pools: Vec<Vec<Pool>>,
    next_id: u32,
    revision: u64,
}

impl Registry {
    /// An empty registry for `plan`, with the default policy (members of a segment reach each
    /// other, nothing else).
    pub fn new(plan: AddressPlan) -> Registry {
        let reserved: Vec<IpAddr> = plan.reserved().map(|(a, _)| a).collect();
        let pools = plan
            .segments()
            .iter()
            .map(|s| {
                let holes: Vec<_> = s
                    .children
                    .iter()
                    .filter_map(|c| plan.segment_by_id(*c))
                    .flat_map(|c| c.prefixes.iter().copied())
                    .collect();
                s.prefixes
                    .iter()
                    .map(|p| Pool::new(*p, holes.iter().copied(), reserved.iter().copied()))
                    .collect()
            })
            .collect();
        Registry {
            plan,
            policy: Policy::default(),
            members: BTreeMap::new(),
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            pools,
            next_id: 0,
            revision: 0,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Replaces the policy after checking it against the plan.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), RegistryError> {
        policy.check(&self.plan)?;
        self.policy = policy;
        self.revision += 1;
        Ok(())
    }
    /// A counter bumped by every change: compiled tables built from an older revision are stale.
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// The id the next member will get.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }
    /// True if there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    /// All members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values()
    }
    /// The member with this id.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }
    /// The member with this key.
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&Member> {
        self.by_key.get(key).and_then(|id| self.members.get(id))
    }
    /// The member with this name.
    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.by_name.get(name).and_then(|id| self.members.get(id))
    }
    /// The member holding this overlay address.
    pub fn member_by_address(&self, addr: IpAddr) -> Option<&Member> {
        self.by_addr.get(&addr).and_then(|id| self.members.get(id))
    }

    fn segment(&self, name: &str) -> Result<SegmentId, RegistryError> {
        self.plan
            .segment_id(name)
            .ok_or_else(|| RegistryError::UnknownSegment(name.to_string()))
    }

    fn name_of(&self, id: MemberId) -> String {
        self.members
            .get(&id)
            .map_or_else(|| id.to_string(), |m| m.name.clone())
    }

    /// Why `addr` cannot be given to a member of `seg`, or the pool (index) it comes from.
    fn claimable(&self, seg: SegmentId, addr: IpAddr) -> Result<usize, RegistryError> {
        if let Some(why) = self.plan.reservation(addr) {
            return Err(RegistryError::AddressReserved { addr, why });
        }
        if let Some(id) = self.by_addr.get(&addr) {
            return Err(RegistryError::AddressTaken {
                addr,
                member: self.name_of(*id),
            });
        }
        let pools = &self.pools[seg.index()];
        for (i, p) in pools.iter().enumerate() {
            match p.slot(addr) {
                Slot::Free => return Ok(i),
                Slot::Quarantined(until) => {
                    return Err(RegistryError::AddressQuarantined { addr, until });
                }
                Slot::Unavailable => {}
            }
        }
        let where_ = match self.plan.owning_segment(addr) {
            Some(o) => format!(
                "it is in segment {}",
                self.plan.segment_by_id(o).map_or("?", |s| s.name.as_str())
            ),
            None if self.plan.prefixes().iter().any(|p| p.contains(&addr)) => {
                "it is in no segment".to_string()
            }
            None => "it is outside the overlay".to_string(),
        };
        Err(RegistryError::AddressNotInSegment {
            addr,
            segment: self.plan.segments()[seg.index()].name.clone(),
            where_,
        })
    }

    /// Takes `want` (fixed) addresses and, for each other family of the segment when `fill`
    /// is set, the next free one. All or nothing.
    fn claim(
        &mut self,
        seg: SegmentId,
        want: &[IpAddr],
        fill: bool,
    ) -> Result<Vec<IpAddr>, RegistryError> {
        for (i, a) in want.iter().enumerate() {
            if let Some(b) = want[i + 1..].iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
                return Err(RegistryError::SameFamily(*a, *b));
            }
        }
        let mut taken: Vec<(usize, IpAddr)> = Vec::new();
        let result = (|| {
            for a in want {
                let i = self.claimable(seg, *a)?;
                self.pools[seg.index()][i].take(*a);
                taken.push((i, *a));
            }
            if fill {
                let pools = &self.pools[seg.index()];
                let families: Vec<bool> = [true, false]
                    .into_iter()
                    .filter(|v4| pools.iter().any(|p| p.prefix().network().is_ipv4() == *v4))
                    .collect();
                for v4 in families {
                    if want.iter().any(|a| a.is_ipv4() == v4) {
                        continue;
                    }
                    let got = self.pools[seg.index()]
                        .iter_mut()
                        .enumerate()
                        .filter(|(_, p)| p.prefix().network().is_ipv4() == v4)
                        .find_map(|(i, p)| p.allocate().map(|a| (i, a)));
                    match got {
                        Some(x) => taken.push(x),
                        None => {
                            return Err(RegistryError::SegmentFull {
                                segment: self.plan.segments()[seg.index()].name.clone(),
                                family: if v4 { "IPv4" } else { "IPv6" },
                            });
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let mut out: Vec<IpAddr> = taken.iter().map(|(_, a)| *a).collect();
                out.sort_by_key(|a| a.is_ipv6());
                Ok(out)
            }
            Err(e) => {
                for (i, a) in taken {
                    self.pools[seg.index()][i].untake(a);
                }
                Err(e)
            }
        }
    }

    fn check_new(
        &self,
        key: &PublicKey,
        name: &str,
        tags: &BTreeSet<String>,
    ) -> Result<(), RegistryError> {
        check_name("member", name)?;
        for t in tags {
            check_name("tag", t)?;
        }
        if let Some(id) = self.by_key.get(key) {
            return Err(RegistryError::DuplicateKey {
                key: *key,
                member: self.name_of(*id),
            });
        }
        if self.by_name.contains_key(name) {
            return Err(RegistryError::DuplicateName(name.to_string()));
        }
        Ok(())
    }

    /// Frees the addresses of `seg` whose quarantine is over at `now`.
    fn expire_segment(&mut self, seg: SegmentId, now: Instant) {
        for p in &mut self.pools[seg.index()] {
            p.expire(now);
        }
    }

    fn insert(&mut self, m: Member) -> MemberId {
        let id = m.id;
        self.by_key.insert(m.key, id);
        self.by_name.insert(m.name.clone(), id);
        for a in &m.addresses {
            self.by_addr.insert(*a, id);
        }
        self.members.insert(id, m);
        self.revision += 1;
        id
    }

    /// Adds a member: its requested fixed addresses, and the next free address of each other
    /// family its segment has.
    pub fn add_member(&mut self, new: NewMember, now: Instant) -> Result<MemberId, RegistryError> {
        self.check_new(&new.key, &new.name, &new.tags)?;
        let seg = self.segment(&new.segment)?;
        self.expire_segment(seg, now);
        let addresses = self.claim(seg, &new.fixed, true)?;
        let id = MemberId(self.next_id);
        self.next_id += 1;
        Ok(self.insert(Member {
            id,
            key: new.key,
            name: new.name,
            tags: new.tags,
            segment: new.segment,
            addresses,
            enabled: new.enabled,
            endpoint: new.endpoint,
            created: now,
            updated: now,
        }))
    }

    /// Puts back a member as it was saved (same id, addresses and times), checking it against
    /// the plan and the members already restored.
    pub(crate) fn restore_member(&mut self, m: Member) -> Result<(), RegistryError> {
        if m.id.0 >= self.next_id {
            return Err(RegistryError::BadId {
                id: m.id,
                next: self.next_id,
            });
        }
        if self.members.contains_key(&m.id) {
            return Err(RegistryError::BadId {
                id: m.id,
                next: self.next_id,
            });
        }
        self.check_new(&m.key, &m.name, &m.tags)?;
        let seg = self.segment(&m.segment)?;
        let addresses = self.claim(seg, &m.addresses, false)?;
        self.insert(Member { addresses, ..m });
        Ok(())
    }

    /// Puts back a quarantined address as it was saved.
    pub(crate) fn restore_quarantine(
        &mut self,
        segment: &str,
        addr: IpAddr,
        until: Instant,
    ) -> Result<(), RegistryError> {
        let seg = self.segment(segment)?;
        let i = self.claimable(seg, addr)?;
        let pool = &mut self.pools[seg.index()][i];
        pool.take(addr);
        pool.release(addr, until);
        Ok(())
    }

    pub(crate) fn set_next_id(&mut self, next: u32) {
        self.next_id = next;
    }

    /// The quarantined addresses: segment, address, end of quarantine.
    pub fn quarantined(&self) -> impl Iterator<Item = (&str, IpAddr, Instant)> + '_ {
        self.plan
            .segments()
            .iter()
            .zip(&self.pools)
            .flat_map(|(s, pools)| {
                pools
                    .iter()
                    .flat_map(move |p| p.quarantined().map(move |(a, t)| (s.name.as_str(), a, t)))
            })
    }

    /// Removes a member. Its addresses go into quarantine for the plan's quarantine time.
    pub fn remove_member(&mut self, id: MemberId, now: Instant) -> Result<Member, RegistryError> {
        let m = self
            .members
            .remove(&id)
            .ok_or(RegistryError::UnknownMember(id))?;
        self.by_key.remove(&m.key);
        self.by_name.remove(&m.name);
        let until = now + self.plan.quarantine();
        if let Some(seg) = self.plan.segment_id(&m.segment) {
            for a in &m.addresses {
                self.by_addr.remove(a);
                for p in &mut self.pools[seg.index()] {
                    if p.prefix().contains(a) {
                        p.release(*a, until);
                    }
                }
            }
        }
        self.revision += 1;
        Ok(m)
    }

    fn member_mut(&mut self, id: MemberId, now: Instant) -> Result<&mut Member, RegistryError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(RegistryError::UnknownMember(id))?;
        m.updated = now;
        self.revision += 1;
        Ok(m)
    }

    /// Enables or disables a member.
    pub fn set_enabled(
        &mut self,
        id: MemberId,
        enabled: bool,
        now: Instant,
    ) -> Result<(), RegistryError> {
        self.member_mut(id, now)?.enabled = enabled;
        Ok(())
    }

    /// Records where a member was last seen on the underlay.
    pub fn set_endpoint(
        &mut self,
        id: MemberId,
        endpoint: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        self.member_mut(id, now)?.endpoint = endpoint;
        Ok(())
    }

    /// Replaces a member's tags.
    pub fn set_tags(
        &mut self,
        id: MemberId,
        tags: BTreeSet<String>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        for t in &tags {
            check_name("tag", t)?;
        }
        self.member_mut(id, now)?.tags = tags;
        Ok(())
    }

    /// Frees every address whose quarantine is over at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for pools in &mut self.pools {
            for p in pools {
                p.expire(now);
            }
        }
    }

    /// When the next quarantine ends, if any address is in quarantine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pools
            .iter()
            .flatten()
            .filter_map(Pool::next_expiry)
            .min()
    }

    /// Free addresses left in a segment's own ranges, per family (IPv4, IPv6), saturating.
    pub fn free_addresses(&self, segment: &str) -> Result<(u128, u128), RegistryError> {
        let seg = self.segment(segment)?;
        Ok(self.pools[seg.index()].iter().fold((0, 0), |(v4, v6), p| {
            if p.prefix().network().is_ipv4() {
                (v4.saturating_add(p.free_count()), v6)
            } else {
                (v4, v6.saturating_add(p.free_count()))
            }
        }))
    }

    /// Whether `addr` could be given to a new member of `segment` right now (a dry run of a
    /// fixed allocation; `Err` says why not).
    pub fn check_address(&self, segment: &str, addr: IpAddr) -> Result<(), RegistryError> {
        let seg = self.segment(segment)?;
        self.claimable(seg, addr).map(|_| ())
    }
}
