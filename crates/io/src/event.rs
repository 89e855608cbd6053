//! The event loop: one worker thread per core, each owning its queues and sockets and polling
//! them with epoll, calling user code with readiness events and timers.

use crate::sys::{self, Epoll};
use crate::{Clock, IoError};
use gatekit_packet::Instant;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Names a registered source in the events a worker receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// What to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Data to read.
    pub readable: bool,
    /// Room to write (ask only while there is something waiting to be sent).
    pub writable: bool,
}

impl Interest {
    /// Readable only.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable only.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Both.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    fn bits(self) -> u32 {
        let mut e = 0;
        if self.readable {
            e |= libc::EPOLLIN as u32;
        }
        if self.writable {
            e |= libc::EPOLLOUT as u32;
        }
        e
    }
}

/// One readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The source.
    pub token: Token,
    /// Data can be read.
    pub readable: bool,
    /// Data can be written.
    pub writable: bool,
    /// An error or hang-up is pending on the source.
    pub error: bool,
}

const STOP_TOKEN: u64 = u64::MAX;

/// The epoll set of one worker: register the file descriptors it polls. Cloning gives
/// another handle to the same set, for a worker that changes its interests later (asking
/// for writability while it has packets queued, say).
#[derive(Debug, Clone)]
pub struct Registry {
    ep: Arc<Epoll>,
}

impl Registry {
    fn new() -> Result<Self, IoError> {
        Ok(Registry {
            ep: Arc::new(Epoll::new().map_err(|e| IoError::os("create", "epoll instance", e))?),
        })
    }

    /// Starts polling `source` (level-triggered) for `interest`, reported with `token`.
    pub fn register(
        &self,
        source: &impl AsFd,
        token: Token,
        interest: Interest,
    ) -> Result<(), IoError> {
        self.ctl(libc::EPOLL_CTL_ADD, source, token, interest)
    }
    /// Changes what `source` is polled for.
    pub fn reregister(
        &self,
        source: &impl AsFd,
        token: Token,
        interest: Interest,
    ) -> Result<(), IoError> {
        self.ctl(libc::EPOLL_CTL_MOD, source, token, interest)
    }
    /// Stops polling `source`.
    pub fn deregister(&self, source: &impl AsFd) -> Result<(), IoError> {
        let fd = source.as_fd().as_raw_fd();
        self.ep
            .ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
            .map_err(|e| IoError::os("epoll_ctl DEL", fd.to_string(), e))
    }
    fn ctl(
        &self,
        op: libc::c_int,
        source: &impl AsFd,
        token: Token,
        interest: Interest,
    ) -> Result<(), IoError> {
        let fd = source.as_fd().as_raw_fd();
        if token.0 as u64 == STOP_TOKEN {
            return Err(IoError::Invalid {
                field: "token",
                reason: "usize::MAX is reserved".into(),
            });
        }
        self.ep
            .ctl(op, fd, interest.bits(), token.0 as u64)
            .map_err(|e| IoError::os("epoll_ctl", fd.to_string(), e))
    }
}

/// Stops every worker of an [`EventLoop`]: sets a flag and wakes them through an eventfd.
/// Cheap to clone; usable from any thread or a signal-handling thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    fd: Arc<OwnedFd>,
}

impl StopHandle {
    fn new() -> Result<Self, IoError> {
        Ok(StopHandle {
            flag: Arc::new(AtomicBool::new(false)),
            fd: Arc::new(sys::eventfd().map_err(|e| IoError::os("create", "eventfd", e))?),
        })
    }
    /// Asks every worker to stop after the events it is handling.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Cannot meaningfully fail (the counter would have to overflow); the flag is set anyway.
        let _ = sys::eventfd_signal(self.fd.as_fd());
    }
    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// The code a worker thread runs: it owns its ports, reacts to their readiness and runs its
/// timers. Built by the setup closure given to [`EventLoop::spawn`], in the worker's thread,
/// so it may hold `!Send` things such as a [`Pool`](gatekit_packet::Pool).
pub trait Worker {
    /// A registered source is ready. Level-triggered: a source left unread is reported again,
    /// so handle a bounded amount (a batch or a few) per event, to stay fair between sources.
    fn on_event(&mut self, event: Event, now: Instant);
    /// Called once after the events of one wake-up: send what was queued, say.
    fn flush(&mut self, now: Instant) {
        let _ = now;
    }
    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever (the sans-IO cores'
    /// `poll_timeout`).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Runs timers due at `now`.
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
    /// Called once when the loop stops, before the worker is dropped.
    fn on_stop(&mut self, now: Instant) {
        let _ = now;
    }
}

/// What a worker's setup closure gets: which worker it is, its epoll registry, the shared
/// clock and the stop handle.
#[derive(Debug)]
pub struct WorkerCtx<'a> {
    /// This worker's index, `0..workers`: use it to pick its TUN queue.
    pub index: usize,
    /// How many workers there are.
    pub workers: usize,
    /// The clock all workers share.
    pub clock: Clock,
    /// Register the worker's sources here.
    pub registry: &'a Registry,
    /// Stops the whole loop (a worker may stop it on a fatal error).
    pub stop: StopHandle,
}

/// How to run an [`EventLoop`].
#[derive(Debug, Clone)]
pub struct EventLoopConfig {
    /// Worker threads; by default one per available core.
    pub workers: usize,
    /// Pin worker `i` to CPU `i` (modulo the CPU count). Failures to pin are ignored: it is an
    /// optimisation only.
    pub pin_cores: bool,
    /// Most readiness events taken per `epoll_wait`.
    pub max_events: usize,
    /// Thread name prefix.
    pub name: String,
}

impl Default for EventLoopConfig {
    fn default() -> Self {
        EventLoopConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_cores: false,
            max_events: 64,
            name: "gatekit-worker".into(),
        }
    }
}

/// Running workers. Dropping it without [`stop`](Self::stop) or [`join`](Self::join) stops
/// and joins them.
#[derive(Debug)]
pub struct EventLoop {
    stop: StopHandle,
    clock: Clock,
    threads: Vec<JoinHandle<Result<(), IoError>>>,
}

impl EventLoop {
    /// Starts `cfg.workers` threads. In each, `setup` builds that worker (opening or
    /// adopting its queues and sockets and registering them) before the loop starts. If any
    /// setup fails, every worker is stopped and the first error is returned.
    pub fn spawn<F, W>(cfg: &EventLoopConfig, setup: F) -> Result<EventLoop, IoError>
    where
        F: Fn(&mut WorkerCtx<'_>) -> Result<W, IoError> + Send + Sync + 'static,
        W: Worker,
    {
        if cfg.workers == 0 {
            return Err(IoError::Invalid {
                field: "workers",
                reason: "at least one worker is needed".into(),
            });
        }
        let stop = StopHandle::new()?;
        let clock = Clock::new();
        let setup = Arc::new(setup);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), IoError>)>();
        let mut threads = Vec::with_capacity(cfg.workers);
        for index in 0..cfg.workers {
            let setup = setup.clone();
            let stop_w = stop.clone();
            let ready = ready_tx.clone();
            let workers = cfg.workers;
            let pin = cfg.pin_cores;
            let max_events = cfg.max_events.max(1);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{index}", cfg.name))
                .spawn(move || {
                    if pin {
                        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                        let _ = sys::pin_to_cpu(index % cpus);
                    }
                    let prepared = prepare(index, workers, clock, &stop_w, &*setup);
                    let (registry, worker) = match prepared {
                        Ok(p) => {
                            let _ = ready.send((index, Ok(())));
                            p
                        }
                        Err(e) => {
                            let _ = ready.send((index, Err(e)));
                            return Ok(());
                        }
                    };
                    drop(ready);
                    run(worker, &registry, clock, &stop_w, max_events)
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.stop();
                    return Err(IoError::Worker {
                        index,
                        reason: format!("cannot start thread: {e}"),
                    });
                }
            }
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..cfg.workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(IoError::Worker {
                        index: 0,
                        reason: "a worker died during setup".into(),
                    });
                    break;
                }
            }
        }
        let lp = EventLoop {
            stop,
            clock,
            threads,
        };
        match first_err {
            None => Ok(lp),
            Some(e) => {
                let _ = lp.stop();
                Err(e)
            }
        }
    }

    /// A handle that stops the loop from anywhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
    /// The clock the workers use.
    pub fn clock(&self) -> Clock {
        self.clock
    }
    /// Stops the workers and waits for them; returns the first worker error.
    pub fn stop(mut self) -> Result<(), IoError> {
        self.stop.stop();
        self.join_all()
    }
    /// Waits until the workers stop (someone calls [`StopHandle::stop`]); returns the first
    /// worker error.
    pub fn join(mut self) -> Result<(), IoError> {
        self.join_all()
    }

    fn join_all(&mut self) -> Result<(), IoError> {
        let mut first = Ok(());
        for (index, t) in self.threads.drain(..).enumerate() {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(IoError::Worker {
                    index,
                    reason: "panicked".into(),
                }),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.stop();
            let _ = self.join_all();
        }
    }
}

type Prepared<W> = (Registry, W);

fn prepare<F, W>(
    index: usize,
    workers: usize,
    clock: Clock,
    stop: &StopHandle,
    setup: &F,
) -> Result<Prepared<W>, IoError>
where
    F: Fn(&mut WorkerCtx<'_>) -> Result<W, IoError>,
{
    let registry = Registry::new()?;
    registry
        .ep
        .ctl(
            libc::EPOLL_CTL_ADD,
            stop.fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            STOP_TOKEN,
        )
        .map_err(|e| IoError::os("epoll_ctl", "stop eventfd", e))?;
    let worker = {
        let mut ctx = WorkerCtx {
            index,
            workers,
            clock,
            registry: &registry,
            stop: stop.clone(),
        };
        setup(&mut ctx)?
    };
    Ok((registry, worker))
}

/// The loop of one worker.
fn run<W: Worker>(
    mut worker: W,
    registry: &Registry,
    clock: Clock,
    stop: &StopHandle,
    max_events: usize,
) -> Result<(), IoError> {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; max_events];
    while !stop.is_stopped() {
        let timeout = match worker.poll_timeout() {
            None => -1,
            Some(t) => clock.millis_until(t).min(i32::MAX as u64) as i32,
        };
        let n = registry
            .ep
            .wait(&mut events, timeout)
            .map_err(|e| IoError::os("epoll_wait", "worker", e))?;
        let now = clock.now();
        for ev in &events[..n] {
            let (bits, data) = (ev.events, ev.u64);
            if data == STOP_TOKEN {
                continue;
            }
            worker.on_event(
                Event {
                    token: Token(data as usize),
                    readable: bits & libc::EPOLLIN as u32 != 0,
                    writable: bits & libc::EPOLLOUT as u32 != 0,
                    error: bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
                },
                now,
            );
        }
        worker.flush(now);
        if let Some(t) = worker.poll_timeout() {
            let now = clock.now();
            if t <= now {
                worker.handle_timeout(now);
            }
        }
    }
    worker.on_stop(clock.now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    struct Ticker {
        next: Instant,
        ticks: Arc<AtomicUsize>,
        stopped: Arc<AtomicUsize>,
    }
    impl Worker for Ticker {
        fn on_event(&mut self, _: Event, _: Instant) {}
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.next)
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.ticks.fetch_add(1, Ordering::SeqCst);
            self.next = now + Duration::from_millis(5);
        }
        fn on_stop(&mut self, _: Instant) {
            self.stopped.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn timers_fire_and_stop_is_graceful() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicUsize::new(0));
        let (t, s) = (ticks.clone(), stopped.clone());
        let cfg = EventLoopConfig {
            workers: 2,
            ..EventLoopConfig::default()
        };
        let lp = EventLoop::spawn(&cfg, move |ctx| {
            Ok(Ticker {
                next: ctx.clock.now(),
                ticks: t.clone(),
                stopped: s.clone(),
            })
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        lp.stop().unwrap();
        assert!(ticks.load(Ordering::SeqCst) >= 4, "{ticks:?}");
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            2,
            "every worker saw the stop"
        );
    }

    #[test]
    fn failing_setup_is_reported() {
        let cfg = EventLoopConfig {
            workers: 2,
            ..EventLoopConfig::default()
        };
        let r = EventLoop::spawn(&cfg, |ctx| {
            if ctx.index == 1 {
                Err(IoError::Invalid {
                    field: "test",
                    reason: "worker 1 refuses".into(),
                })
            } else {
                Ok(Ticker {
                    next: Instant::MAX,
                    ticks: Arc::default(),
                    stopped: Arc::default(),
                })
            }
        });
        let e = r.unwrap_err();
        assert!(e.to_string().contains("worker 1 refuses"), "{e}");
        let zero = EventLoopConfig {
            workers: 0,
            ..EventLoopConfig::default()
        };
        assert!(
            EventLoop::spawn(&zero, |_| Ok(Ticker {
                next: Instant::MAX,
                ticks: Arc::default(),
                stopped: Arc::default(),
            }))
            .is_err()
        );
    }
}
