//! GRE (RFC 2784/2890) with Transparent Ethernet Bridging and VXLAN (RFC 7348) encapsulation, in place.
#![forbid(unsafe_code)]
