//! The OS side of gatekit: TUN/TAP devices, batched UDP and raw sockets, and the event loop.

