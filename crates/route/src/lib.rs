//! Longest-prefix-match FIB for IPv4 and IPv6, a RIB with route sources and ECMP, and route redistribution policies.
#![forbid(unsafe_code)]
