//! The in-memory lab: two sites with smoltcp hosts behind two gatekit gateways, joined by an
//! in-memory internet with a NAT between them. Deterministic: time is stepped by hand.

pub mod host;
pub mod net;
