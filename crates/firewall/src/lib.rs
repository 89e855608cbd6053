//! A stateful firewall engine: nftables-shaped rule IR, iptables-dialect and ClassBench front ends, compiled classifier, conntrack and NAT.
#![forbid(unsafe_code)]
