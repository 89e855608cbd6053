//! pcap capture of any port, switched on and off at run time.
//!
//! The runtime registers its ports once ([`Captures::register`]) and calls
//! [`Captures::record`] for every packet crossing a port; with no capture active on that port
//! this is one bounds-checked load and one branch. Captures are started and stopped by name
//! from the control plane ([`Captures::execute`] answers [`Command::CaptureStart`] and
//! [`Command::CaptureStop`]).

use crate::status::{Command, Reply};
use gatekit_packet::{Instant, PortId};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The largest part of a packet written (as tcpdump's default snap length).
const SNAPLEN: u32 = 262_144;

/// What the first header of a port's packets is, and so the pcap link type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet frames (TAP ports, bridged tunnels): LINKTYPE_ETHERNET.
    Ethernet,
    /// Bare IPv4 or IPv6 packets (TUN ports, routed tunnels): LINKTYPE_RAW.
    RawIp,
}

/// Why a capture could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// No port has this name.
    #[error("no port named `{port}`; expected one of: {known}")]
    UnknownPort {
        /// The name asked for.
        port: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// The port is already being captured.
    #[error("port `{port}` is already being captured to {file}")]
    AlreadyCapturing {
        /// The port.
        port: String,
        /// Where it goes.
        file: String,
    },
    /// The port is not being captured.
    #[error("port `{port}` is not being captured")]
    NotCapturing {
        /// The port.
        port: String,
    },
    /// A port id or name registered twice.
    #[error("port `{port}` (id {id}) is already registered")]
    AlreadyRegistered {
        /// The name.
        port: String,
        /// The id.
        id: u16,
    },
    /// The file could not be created or written.
    #[error("capture file {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

struct Capture {
    file: PathBuf,
    writer: PcapWriter<BufWriter<File>>,
    packets: u64,
}

struct PortInfo {
    name: String,
    link: LinkType,
}

/// The ports that can be captured and the captures running.
pub struct Captures {
    /// Wall-clock time of [`Instant::ZERO`], to stamp packets.
    epoch: SystemTime,
    /// Indexed by [`PortId`]: the capture running on that port, if any.
    active: Vec<Option<Capture>>,
    ports: Vec<Option<PortInfo>>,
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captures")
            .field("epoch", &self.epoch)
            .field("active", &self.active())
            .finish()
    }
}

impl Captures {
    /// No ports yet; packets recorded at `now` are stamped `epoch + now` (the wall-clock time
    /// at which the runtime's clock read zero).
    pub fn new(epoch: SystemTime) -> Self {
        Captures {
            epoch,
            active: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Makes port `id`, called `name`, capturable.
    pub fn register(&mut self, name: &str, id: PortId, link: LinkType) -> Result<(), CaptureError> {
        let i = usize::from(id.0);
        if self.ports.get(i).is_some_and(Option::is_some) || self.find(name).is_some() {
            return Err(CaptureError::AlreadyRegistered {
                port: name.into(),
                id: id.0,
            });
        }
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.active.resize_with(i + 1, || None);
        }
        self.ports[i] = Some(PortInfo {
            name: name.into(),
            link,
        });
        Ok(())
    }

    /// Starts writing what crosses `port` to a new pcap file `file` (mode 0600; an existing
    /// file is not overwritten).
    pub fn start(&mut self, port: &str, file: impl AsRef<Path>) -> Result<(), CaptureError> {
        let i = self.find(port).ok_or_else(|| self.unknown(port))?;
        if let Some(c) = &self.active[i] {
            return Err(CaptureError::AlreadyCapturing {
                port: port.into(),
                file: c.file.display().to_string(),
            });
        }
        let path = file.as_ref().to_path_buf();
        let link = self.ports[i].as_ref().map_or(LinkType::RawIp, |p| p.link);
        let io_err = |source| CaptureError::Io {
            file: path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        let header = PcapHeader {
            datalink: match link {
                LinkType::Ethernet => DataLink::ETHERNET,
                LinkType::RawIp => DataLink::RAW,
            },
            ts_resolution: TsResolution::NanoSecond,
            snaplen: SNAPLEN,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::new(f), header)
            .map_err(|e| io_err(io::Error::other(e)))?;
        tracing::info!(port, file = %path.display(), "capture started");
        self.active[i] = Some(Capture {
            file: path,
            writer,
            packets: 0,
        });
        Ok(())
    }

    /// Stops the capture of `port`, flushes and closes its file; returns the packets written.
    pub fn stop(&mut self, port: &str) -> Result<u64, CaptureError> {
        let i = self.find(port).ok_or_else(|| self.unknown(port))?;
        let c = self.active[i]
            .take()
            .ok_or_else(|| CaptureError::NotCapturing { port: port.into() })?;
        tracing::info!(port, file = %c.file.display(), packets = c.packets, "capture stopped");
        let (file, packets) = (c.file, c.packets);
        c.writer
            .into_writer()
            .flush()
            .map_err(|source| CaptureError::Io { file, source })?;
        Ok(packets)
    }

    /// Stops every capture (graceful stop); errors are logged.
    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.active().into_keys().collect();
        for name in names {
            if let Err(e) = self.stop(&name) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Writes `data`, seen on `port` at `now`, to the port's capture if one is running.
    #[inline]
    pub fn record(&mut self, port: PortId, now: Instant, data: &[u8]) {
        if let Some(Some(c)) = self.active.get_mut(usize::from(port.0))
            && let Err(e) = write_packet(c, self.epoch, now, data)
        {
            // A full disk must not stop the data path: give up this capture, loudly.
            tracing::warn!(file = %c.file.display(), "capture stopped: {e}");
            self.active[usize::from(port.0)] = None;
        }
    }

    /// Whether any capture is running (to skip per-packet work for whole batches).
    #[inline]
    pub fn any_active(&self) -> bool {
        self.active.iter().any(Option::is_some)
    }

    /// The captures running: port name → file, as [`Snapshot::captures`](crate::status::Snapshot::captures) wants it.
    pub fn active(&self) -> BTreeMap<String, String> {
        self.ports
            .iter()
            .zip(&self.active)
            .filter_map(|(p, c)| {
                Some((
                    p.as_ref()?.name.clone(),
                    c.as_ref()?.file.display().to_string(),
                ))
            })
            .collect()
    }

    /// Answers the capture commands; `None` for any other command.
    pub fn execute(&mut self, command: &Command) -> Option<Reply> {
        let result = match command {
            Command::CaptureStart { port, file } => self
                .start(port, file)
                .map(|()| format!("capturing {port} to {file}")),
            Command::CaptureStop { port } => self
                .stop(port)
                .map(|n| format!("capture of {port} stopped after {n} packets")),
            _ => return None,
        };
        Some(match result {
            Ok(message) => Reply::Ok { message },
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        })
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.name == name))
    }

    fn unknown(&self, port: &str) -> CaptureError {
        let known: Vec<&str> = self
            .ports
            .iter()
            .flatten()
            .map(|p| p.name.as_str())
            .collect();
        CaptureError::UnknownPort {
            port: port.into(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        }
    }
}

fn write_packet(c: &mut Capture, epoch: SystemTime, now: Instant, data: &[u8]) -> io::Result<()> {
    let at = epoch + Duration::from_nanos(now.as_nanos());
    let ts = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // The classic pcap header holds 32-bit seconds: clamp rather than fail in 2106.
    let ts = ts.min(Duration::from_secs(u64::from(u32::MAX)));
    let incl = &data[..data.len().min(SNAPLEN as usize)];
    let orig_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    c.writer
        .write_packet(&PcapPacket::new(ts, orig_len, incl))
        .map_err(io::Error::other)?;
    c.packets += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_port() {
        let mut caps = Captures::new(SystemTime::UNIX_EPOCH);
        caps.register("lan0", PortId(0), LinkType::RawIp).unwrap();
        assert!(matches!(
            caps.register("lan0", PortId(3), LinkType::RawIp),
            Err(CaptureError::AlreadyRegistered { .. })
        ));
        let e = caps.start("wan9", "/nonexistent/x.pcap").unwrap_err();
        assert_eq!(e.to_string(), "no port named `wan9`; expected one of: lan0");
        let e = caps.stop("lan0").unwrap_err();
        assert_eq!(e.to_string(), "port `lan0` is not being captured");
        let e = caps.start("lan0", "/nonexistent/x.pcap").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("capture file /nonexistent/x.pcap: "),
            "{e}"
        );
        assert!(caps.active().is_empty());
        // Recording on ports without a capture, or unknown ports, does nothing.
        caps.record(PortId(0), Instant::ZERO, b"x");
        caps.record(PortId(999), Instant::ZERO, b"x");
    }

    #[test]
    fn other_commands_are_not_for_captures() {
        let mut caps = Captures::new(SystemTime::UNIX_EPOCH);
        assert_eq!(caps.execute(&Command::Reload), None);
        assert!(matches!(
            caps.execute(&Command::CaptureStop { port: "x".into() }),
            Some(Reply::Error { .. })
        ));
    }
}
