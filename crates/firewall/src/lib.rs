//! A stateful firewall engine: nftables-shaped rule IR, iptables-dialect and ClassBench front
//! ends, compiled classifier, conntrack and NAT.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classbench;
pub mod classify;
mod error;
pub mod ir;

pub use error::{LoadError, ParseError, ValidateError};
mod compile;
pub mod conntrack;
mod engine;
mod headers;
pub mod sets;

pub use compile::Compiled;
pub use engine::{
    Config, Firewall, FirewallStage, FirewallStats, LogEvent, Route, RulesHandle, Source, Verdict,
};
pub use sets::{SetError, Sets};
pub mod iptables;
