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

/// Whether the bench runs to measure (`cargo bench`, which passes `--bench`), not as a
/// test (`cargo test --all-targets` runs each bench once, unoptimised, to check that it
/// works): what criterion itself goes by. A bench may then size its own loops down.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
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

/// Times `run` over `n` inputs made by `prep` beforehand (untimed, and dropped after the
/// clock stops), as `iter_batched_ref` does: nanoseconds of thread CPU time.
pub fn timed_round<T>(n: usize, mut prep: impl FnMut() -> T, mut run: impl FnMut(&mut T)) -> u64 {
    let mut inputs: Vec<T> = (0..n).map(|_| prep()).collect();
    let t0 = thread_cpu_ns();
    for x in inputs.iter_mut() {
        run(x);
    }
    let t = thread_cpu_ns().saturating_sub(t0);
    drop(std::hint::black_box(inputs));
    t
}

/// A paired comparison of a subject with its baseline. Criterion measures one benchmark
/// after the other, seconds apart, and on a shared host the clock rate drifts between them
/// by more than the difference being measured. Here rounds of the two alternate (in turn
/// `baseline` first and `subject` first, each returning the nanoseconds its timed part took), each pair gives one
/// throughput ratio (subject / baseline), and the median and the 10th and 90th percentiles
/// of the ratios are printed, with the throughput of each side, on one line.
pub fn paired_ratio(
    name: &str,
    rounds: usize,
    per_round: u64,
    mut baseline: impl FnMut() -> u64,
    mut subject: impl FnMut() -> u64,
) -> f64 {
    // One round each to warm caches and predictors, not counted.
    baseline();
    subject();
    let mut ratios = Vec::with_capacity(rounds);
    let (mut tb, mut ts) = (0u64, 0u64);
    for i in 0..rounds {
        // Which side goes first alternates too, so that neither always runs on the other's
        // leftovers in the cache.
        let (b, s) = if i % 2 == 0 {
            let b = baseline();
            (b, subject())
        } else {
            let s = subject();
            (baseline(), s)
        };
        let (b, s) = (b.max(1), s.max(1));
        tb += b;
        ts += s;
        ratios.push(b as f64 / s as f64);
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    let rate = |ns: u64| (rounds as u64 * per_round) as f64 / (ns as f64 / 1e9) / 1e6;
    println!(
        "{name}: subject/baseline throughput ratio, paired over {rounds} rounds: median {:.3} \
         (p10 {:.3}, p90 {:.3}); baseline {:.2} M/s, subject {:.2} M/s",
        at(0.5),
        at(0.1),
        at(0.9),
        rate(tb),
        rate(ts),
    );
    at(0.5)
}
