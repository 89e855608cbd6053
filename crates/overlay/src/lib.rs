//! The overlay network's address plan: prefixes, segments, members keyed by x25519 identities, policy and cryptokey routing.
#![forbid(unsafe_code)]
