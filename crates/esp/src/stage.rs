//! The endpoint as pipeline [`Stage`]s: one for each direction, borrowing the endpoint.

use crate::endpoint::{Decap, Endpoint, Output, Select};
use gatekit_packet::{Action, DropReason, Instant, Meta, PacketBuf, Stage};

/// The outbound stage: inner IP packets in, outer packets (or ESP payloads) out.
///
/// Verdicts: `Continue` with the encapsulated packet (`meta` offsets re-parsed for an outer IP
/// packet, cleared for a payload), or `Drop` (`no_sa`, `no_room`, `expired`, `malformed`, ...).
#[derive(Debug)]
pub struct Outbound<'a> {
    endpoint: &'a mut Endpoint,
    select: Select,
    output: Output,
}

/// The inbound stage: whole outer IP packets in (native ESP, or UDP to a NAT-T port), inner
/// packets out.
///
/// Verdicts: `Continue` with the inner packet (`meta` offsets parsed), `Local` for IKE,
/// `Consumed` for an authentic dummy packet, `Drop` otherwise, keepalives as
/// [`DropReason::Keepalive`].
#[derive(Debug)]
pub struct Inbound<'a> {
    endpoint: &'a mut Endpoint,
    mark_tunnel: bool,
}

impl Endpoint {
    /// The outbound stage, choosing SAs with `select` and leaving `output`.
    pub fn outbound(&mut self, select: Select, output: Output) -> Outbound<'_> {
        Outbound {
            endpoint: self,
            select,
            output,
        }
    }

    /// The inbound stage.
    pub fn inbound_stage(&mut self) -> Inbound<'_> {
        Inbound {
            endpoint: self,
            mark_tunnel: false,
        }
    }
}

impl Inbound<'_> {
    /// Writes the route-based tunnel id of the SA a packet came through into `meta.mark`
    /// (for firewall zones and policy routing).
    pub fn mark_tunnel(mut self, on: bool) -> Self {
        self.mark_tunnel = on;
        self
    }
}

pub(crate) fn decap_action(verdict: Decap, meta: &mut Meta, data: &[u8], mark: bool) -> Action {
    match verdict {
        Decap::Inner(d) => {
            meta.parse_ip(data);
            if mark && let Some(t) = d.tunnel {
                meta.mark = t.0;
            }
            Action::Continue
        }
        Decap::Dummy(_) => Action::Consumed,
        Decap::Ike => Action::Local,
        Decap::Keepalive => Action::Drop(DropReason::Keepalive),
        Decap::Drop(r) => Action::Drop(r),
    }
}

impl<B: PacketBuf> Stage<B> for Inbound<'_> {
    fn process(&mut self, buf: &mut B, meta: &mut Meta, now: Instant) -> Action {
        let v = self.endpoint.decap_ip(buf, now);
        decap_action(v, meta, buf.data(), self.mark_tunnel)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
    }
}

impl<B: PacketBuf> Stage<B> for Outbound<'_> {
    fn process(&mut self, buf: &mut B, meta: &mut Meta, now: Instant) -> Action {
        match self.endpoint.encap(self.select, buf, self.output, now) {
            Ok(_) => {
                match self.output {
                    Output::Packet => {
                        meta.parse_ip(buf.data());
                    }
                    Output::Payload => meta.clear_offsets(),
                }
                Action::Continue
            }
            Err(r) => Action::Drop(r),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
    }
}
