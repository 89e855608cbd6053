//! Switch ports: what they are, which VLANs they carry, their split-horizon group, limits.

use gatekit_packet::DropCounters;

/// The highest usable VLAN id (4095 is reserved, IEEE 802.1Q).
pub const MAX_VLAN: u16 = 4094;

/// A set of VLAN ids (a 4096-bit map).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl core::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries((0..4096u16).filter(|v| self.contains(*v)))
            .finish()
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet([0; 64])
    }
}

impl VlanSet {
    /// No VLANs.
    pub fn new() -> Self {
        Self::default()
    }
    /// VLANs 1..=4094.
    pub fn all() -> Self {
        (1..=MAX_VLAN).collect()
    }
    /// Adds a VLAN (ids above 4095 are ignored).
    pub fn insert(&mut self, vlan: u16) {
        if let Some(w) = self.0.get_mut(usize::from(vlan >> 6)) {
            *w |= 1 << (vlan & 63);
        }
    }
    /// Removes a VLAN.
    pub fn remove(&mut self, vlan: u16) {
        if let Some(w) = self.0.get_mut(usize::from(vlan >> 6)) {
            *w &= !(1 << (vlan & 63));
        }
    }
    /// Whether the set holds `vlan`.
    #[inline]
    pub fn contains(&self, vlan: u16) -> bool {
        self.0
            .get(usize::from(vlan >> 6))
            .is_some_and(|w| w & (1 << (vlan & 63)) != 0)
    }
}

impl FromIterator<u16> for VlanSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut s = VlanSet::new();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

/// How a port carries VLANs (IEEE 802.1Q).
// The VLAN bitmap stays inline so that trunk classification does not chase a pointer; there
// is one of these per port, not per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged frames, all in this VLAN; tagged frames are dropped, except priority tags
    /// (VLAN 0).
    Access(u16),
    /// Tagged frames of the allowed VLANs; untagged frames belong to the native VLAN, if any,
    /// and frames of the native VLAN leave untagged.
    Trunk {
        /// VLAN of untagged frames.
        native: Option<u16>,
        /// VLANs carried tagged.
        allowed: VlanSet,
    },
}

/// What a port is attached to. The fabric treats every kind alike except for what the
/// configuration says (VLAN mode, horizon group, MTU); the kind names it in status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortKind {
    /// A TAP device or a physical interface.
    #[default]
    Tap,
    /// A GRE tunnel carrying Ethernet (Transparent Ethernet Bridging).
    GreTeb,
    /// A VXLAN tunnel (one remote endpoint and VNI).
    Vxlan,
    /// A link of the encrypted overlay network.
    Overlay,
    /// An in-memory port (tests, simulations).
    Memory,
}

/// A split-horizon group: a frame that came in on a port of the group never leaves on a port
/// of the same group. Put all tunnels of a full mesh of sites in one group and the mesh cannot
/// loop, since every site already receives every flooded frame from its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HorizonGroup(pub u16);

/// A port's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// What the port is.
    pub kind: PortKind,
    /// VLANs the port carries.
    pub vlan: VlanMode,
    /// Split-horizon group, if any.
    pub horizon: Option<HorizonGroup>,
    /// Largest Ethernet payload the port sends (the frame may be 14 bytes longer, 18 with a
    /// tag). Larger frames are not sent there and are counted.
    pub mtu: usize,
    /// Most MACs the port may learn (MAC-flood protection); frames from further new source
    /// addresses are dropped and counted.
    pub max_macs: Option<u32>,
}

impl PortConfig {
    /// An access port of `vlan`, MTU 1500, no limit.
    pub fn access(vlan: u16) -> Self {
        PortConfig {
            kind: PortKind::Tap,
            vlan: VlanMode::Access(vlan),
            horizon: None,
            mtu: 1500,
            max_macs: None,
        }
    }
    /// A trunk port.
    pub fn trunk(native: Option<u16>, allowed: VlanSet) -> Self {
        PortConfig {
            vlan: VlanMode::Trunk { native, allowed },
            ..Self::access(1)
        }
    }
    /// A mesh tunnel port of `kind` carrying `vlan` untagged, in split-horizon `group`.
    pub fn tunnel(kind: PortKind, vlan: u16, group: HorizonGroup) -> Self {
        PortConfig {
            kind,
            horizon: Some(group),
            ..Self::access(vlan)
        }
    }
    /// Whether the port carries `vlan`.
    pub fn carries(&self, vlan: u16) -> bool {
        match &self.vlan {
            VlanMode::Access(v) => *v == vlan,
            VlanMode::Trunk { native, allowed } => *native == Some(vlan) || allowed.contains(vlan),
        }
    }
    /// The tag a frame of `vlan` leaves this port with (`None`: untagged).
    #[inline]
    pub fn egress_tag(&self, vlan: u16) -> Option<u16> {
        match &self.vlan {
            VlanMode::Access(_) => None,
            VlanMode::Trunk { native, .. } if *native == Some(vlan) => None,
            VlanMode::Trunk { .. } => Some(vlan),
        }
    }
}

/// Counters of one port.
// In declaration order: the fabric keeps the ones it bumps for every frame in one cache line
// with the port's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[repr(C)]
pub struct PortStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent to this port as a known unicast destination.
    pub tx_unicast: u64,
    /// Frames flooded to this port.
    pub tx_flooded: u64,
    /// MACs learned on this port right now.
    pub learned: u32,
    /// Source addresses that moved to this port from another.
    pub mac_moves: u64,
    /// Frames dropped on receive or not sent here, by reason.
    pub drops: DropCounters,
}
