//! A layer-2 switching fabric: bridge domains, MAC learning and aging, VLANs, flooding with split horizon.
#![forbid(unsafe_code)]
