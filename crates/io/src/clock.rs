//! The clock the I/O side reads and passes to the sans-IO cores as `now`.

use gatekit_packet::Instant;

/// A monotonic clock whose epoch is when it was made. Copy it into every worker so that all
/// of them agree on `now`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }
    /// Nanoseconds since the clock was made, as the cores' [`Instant`].
    pub fn now(&self) -> Instant {
        let ns = self.epoch.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
    /// Milliseconds from now until `deadline` (rounded up, 0 if past), for a poll timeout.
    pub fn millis_until(&self, deadline: Instant) -> u64 {
        let d = deadline.saturating_since(self.now());
        let ms = d.as_nanos().div_ceil(1_000_000);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}
