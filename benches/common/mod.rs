//! What the benches share: a criterion measurement of the benchmark thread's own CPU time.
//!
//! Wall-clock time counts whatever else the machine runs while a bench runs (a build, a
//! second bench, a noisy neighbour on a shared host): a bench that gets half a core looks
//! half as fast. `CLOCK_THREAD_CPUTIME_ID` counts only the time the benchmark thread was on
//! a CPU, so a bench and the baseline it is compared with are measured alike whatever the
//! load. It still sees cache and memory-bandwidth contention, which is real. The figures are
//! printed in criterion's usual units (time per iteration and throughput).
//!
//! Every compute-bound bench uses it; benches that wait on the kernel or another thread
//! (the socket benches in `io.rs`) keep wall-clock time.

#![allow(dead_code)]

use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use std::time::Duration;

/// Criterion with [`ThreadCpuTime`] as its clock.
pub type Bench = Criterion<ThreadCpuTime>;

/// The default criterion configuration, measuring thread CPU time.
pub fn criterion() -> Bench {
    Criterion::default().with_measurement(ThreadCpuTime)
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpuTime;

/// Nanoseconds of CPU time the calling thread has used.
pub fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(thread_cpu_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Durations print the same whichever clock measured them.
        WALL.formatter()
    }
}
