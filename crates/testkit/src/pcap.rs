//! Capture what crosses a port to a pcap file.

use gatekit_packet::{Batch, Instant, PacketBuf, Port, PortCaps, PortError};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

/// What the first header of each captured packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet frames (LINKTYPE_ETHERNET).
    Ethernet,
    /// Bare IPv4 or IPv6 packets (LINKTYPE_RAW).
    RawIp,
}

/// The file under the pcap writer, shared so that [`PcapSink::flush`] can reach it.
#[derive(Clone)]
struct SharedFile(Rc<RefCell<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// A pcap file being written; cheap to clone, so several ports can share one capture.
/// Buffered: call [`PcapSink::flush`] (or drop every clone) before reading the file.
#[derive(Clone)]
pub struct PcapSink {
    writer: Rc<RefCell<PcapWriter<SharedFile>>>,
    file: SharedFile,
}

impl std::fmt::Debug for PcapSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PcapSink")
    }
}

impl PcapSink {
    /// Creates (truncates) `path` and writes the pcap header (nanosecond timestamps).
    pub fn create(path: impl AsRef<Path>, link: LinkType) -> std::io::Result<Self> {
        let file = SharedFile(Rc::new(RefCell::new(BufWriter::new(File::create(path)?))));
        let header = PcapHeader {
            datalink: match link {
                LinkType::Ethernet => DataLink::ETHERNET,
                LinkType::RawIp => DataLink::RAW,
            },
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let writer =
            PcapWriter::with_header(file.clone(), header).map_err(std::io::Error::other)?;
        Ok(PcapSink {
            writer: Rc::new(RefCell::new(writer)),
            file,
        })
    }

    /// Appends one packet seen at `now`.
    pub fn write(&self, now: Instant, data: &[u8]) -> std::io::Result<()> {
        let ts = Duration::from_nanos(now.as_nanos());
        let pkt = PcapPacket::new(ts, data.len() as u32, data);
        self.writer
            .borrow_mut()
            .write_packet(&pkt)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }

    /// Flushes buffered packets to the file.
    pub fn flush(&self) -> std::io::Result<()> {
        self.file.clone().flush()
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // The last clone flushes (BufWriter also flushes on drop; this keeps errors quiet).
        if Rc::strong_count(&self.0) == 1 {
            let _ = self.0.borrow_mut().flush();
        }
    }
}

/// A port that records every packet it sends and receives into a [`PcapSink`].
#[derive(Debug)]
pub struct PcapPort<P> {
    inner: P,
    sink: PcapSink,
    /// Packets written to the capture.
    pub captured: u64,
    /// Packets that could not be written (the file failed); the packets still flow.
    pub capture_errors: u64,
}

impl<P> PcapPort<P> {
    /// Wraps `inner`, capturing into `sink`.
    pub fn new(inner: P, sink: PcapSink) -> Self {
        PcapPort {
            inner,
            sink,
            captured: 0,
            capture_errors: 0,
        }
    }
    /// The wrapped port.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }
    /// Unwraps the port.
    pub fn into_inner(self) -> P {
        self.inner
    }
    fn record(&mut self, now: Instant, data: &[u8]) {
        match self.sink.write(now, data) {
            Ok(()) => self.captured += 1,
            Err(_) => self.capture_errors += 1,
        }
    }
}

impl<B: PacketBuf, P: Port<B>> Port<B> for PcapPort<P> {
    fn caps(&self) -> PortCaps {
        self.inner.caps()
    }
    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let before = batch.len();
        let n = self.inner.recv(batch, now)?;
        for i in before..batch.len() {
            if let Some((b, m, _)) = batch.get(i) {
                let (ts, data) = (m.timestamp, b.data().to_vec());
                self.record(ts, &data);
            }
        }
        Ok(n)
    }
    fn send(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        // Copy before handing over: a sent packet leaves the batch.
        let copies: Vec<Vec<u8>> = (0..batch.len())
            .filter_map(|i| batch.get(i).map(|(b, _, _)| b.data().to_vec()))
            .collect();
        let n = self.inner.send(batch, now)?;
        for d in copies.iter().take(n) {
            self.record(now, d);
        }
        Ok(n)
    }
}
