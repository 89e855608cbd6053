//! Routing for gatekit: longest-prefix-match tables, a compiled FIB, a RIB with route sources
//! and ECMP, and redistribution policies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod fib;
mod lpm;
mod policy;
mod rib;

pub use addr::{Address, Word};
pub use fib::{CommitStats, Fib, FibError, FibReader, FibTable, MAX_NEXT_HOP, NextHopId};
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use lpm::{IpLpm, Lpm};
pub use policy::{
    PolicyError, PrefixList, PrefixListEntry, Redistribution, Redistributor, Verdict,
};
pub use rib::{
    Candidate, Forwarding, ForwardingReader, NextHop, Rib, RibError, RibStats, Route, Source,
};
