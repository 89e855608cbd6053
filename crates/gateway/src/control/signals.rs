//! Signals as commands: SIGHUP → [`Command::Reload`], SIGTERM and SIGINT → [`Command::Stop`].
//!
//! The signals are turned into commands on a thread of their own and queued like a request
//! from `gatekitctl`, so the runtime handles them in its loop, never inside a signal handler.
//! A second SIGTERM or SIGINT while the first is still being handled ends the process at once
//! (exit status 1): an operator pressing Ctrl-C twice means it.

use super::ControlHandle;
use crate::status::Command;
use signal_hook::SigId;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

/// The installed signal handlers; uninstalled from the iterator (and its thread joined) on
/// [`SignalHandler::stop`] or drop.
#[derive(Debug)]
pub struct SignalHandler {
    handle: Handle,
    flags: Vec<SigId>,
    thread: Option<JoinHandle<()>>,
}

/// The command a signal stands for.
pub(crate) fn command_for(signal: i32) -> Option<Command> {
    match signal {
        SIGHUP => Some(Command::Reload),
        SIGTERM | SIGINT => Some(Command::Stop),
        _ => None,
    }
}

impl SignalHandler {
    /// Installs the handlers and starts the thread that queues their commands on `control`.
    pub fn install(control: ControlHandle) -> io::Result<Self> {
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
        let stopping = Arc::new(AtomicBool::new(false));
        let mut flags = Vec::new();
        for sig in [SIGTERM, SIGINT] {
            // Registered before the flag is set, so the first signal only sets it.
            flags.push(signal_hook::flag::register_conditional_shutdown(
                sig,
                1,
                stopping.clone(),
            )?);
            flags.push(signal_hook::flag::register(sig, stopping.clone())?);
        }
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("gatekit-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let Some(cmd) = command_for(sig) else {
                        continue;
                    };
                    tracing::info!(signal = sig, command = ?cmd, "signal received");
                    if let Err(e) = control.notify(cmd) {
                        tracing::warn!(signal = sig, "signal not handled: {e}");
                    }
                }
            })?;
        Ok(SignalHandler {
            handle,
            flags,
            thread: Some(thread),
        })
    }

    /// Stops turning signals into commands and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.close();
        for id in self.flags.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_meanings() {
        assert_eq!(command_for(SIGHUP), Some(Command::Reload));
        assert_eq!(command_for(SIGTERM), Some(Command::Stop));
        assert_eq!(command_for(SIGINT), Some(Command::Stop));
        assert_eq!(command_for(signal_hook::consts::signal::SIGUSR1), None);
    }
}
