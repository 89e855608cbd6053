//! Errors of the OS side: opening and configuring devices and sockets.

use std::io;

/// Why a device, socket or worker could not be set up. Per-packet failures are never errors:
/// they are counted drops (see each port's stats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A system call failed while doing `what` to `target`.
    #[error("{what} {target}: {source}")]
    Os {
        /// What was being done ("open TUN device", "bind UDP socket", ...).
        what: &'static str,
        /// The device, address or path it was done to.
        target: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An `ip` command (configuration path only) failed.
    #[error("`ip {args}` failed: {stderr}")]
    Command {
        /// The arguments given to `ip`.
        args: String,
        /// What it printed on standard error (or why it could not run).
        stderr: String,
    },
    /// A configuration value is not usable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or argument at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A worker thread panicked or could not be started.
    #[error("worker {index}: {reason}")]
    Worker {
        /// The worker's index.
        index: usize,
        /// What happened.
        reason: String,
    },
}

impl IoError {
    pub(crate) fn os(what: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        IoError::Os {
            what,
            target: target.into(),
            source,
        }
    }

    /// The errno behind an [`IoError::Os`], if that is what this is.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IoError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
