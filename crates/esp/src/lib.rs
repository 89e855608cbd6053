//! IPsec ESP (RFC 4303) with UDP encapsulation for NAT traversal (RFC 3948): SAs, SAD, SPD, anti-replay, in-place AEAD.
#![forbid(unsafe_code)]
