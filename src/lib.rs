//! gatekit: composable building blocks for software network gateways.
//!
//! This facade re-exports the member crates, each behind a feature of the same name (all on by
//! default). Depend on a single crate (`gatekit-esp`, `gatekit-firewall`, ...) when that is all
//! you need; depend on `gatekit` for the whole toolkit.
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`packet`] | `gatekit-packet` | packet buffers, pools, batches, `Stage`/`Port`, flow keys, checksums |
//! | `esp` | `gatekit-esp` | IPsec ESP with NAT traversal |
//! | `firewall` | `gatekit-firewall` | stateful firewall engine |
//! | `route` | `gatekit-route` | FIB, RIB, redistribution |
//! | `gre` | `gatekit-gre` | GRE, Ethernet over GRE, VXLAN |
//! | `switch` | `gatekit-switch` | layer-2 switching fabric |
//! | `overlay` | `gatekit-overlay` | overlay address plan |
//! | `io` | `gatekit-io` | TUN/TAP, batched sockets, event loop |
//! | `gateway` | `gatekit-gateway` | config, pipeline assembly, control plane |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use gatekit_packet as packet;

#[cfg(feature = "esp")]
pub use gatekit_esp as esp;
#[cfg(feature = "firewall")]
pub use gatekit_firewall as firewall;
#[cfg(feature = "gateway")]
pub use gatekit_gateway as gateway;
#[cfg(feature = "gre")]
pub use gatekit_gre as gre;
#[cfg(feature = "io")]
pub use gatekit_io as io;
#[cfg(feature = "overlay")]
pub use gatekit_overlay as overlay;
#[cfg(feature = "route")]
pub use gatekit_route as route;
#[cfg(feature = "switch")]
pub use gatekit_switch as switch;
