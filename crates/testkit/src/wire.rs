//! An in-memory cable between two ports.

use gatekit_packet::{Batch, Instant, Meta, PacketBuf, PktBuf, Port, PortCaps, PortError, PortId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

type Queue = Rc<RefCell<VecDeque<PktBuf>>>;

/// One end of an in-memory [`wire`]. What one end sends, the other receives, in order, with no
/// loss; packets are copied into fresh buffers with the configured headroom so that the
/// receiver sees exactly the bytes sent and a realistic amount of room.
#[derive(Debug)]
pub struct WirePort {
    id: PortId,
    tx: Queue,
    rx: Queue,
    mtu: usize,
    headroom: usize,
    /// Packets sent by this end.
    pub sent: u64,
    /// Packets received by this end.
    pub received: u64,
    /// Packets this end refused to send because they exceeded the MTU.
    pub too_big: u64,
}

/// Two connected ports with the given MTU; received buffers get `headroom` bytes in front.
pub fn wire(mtu: usize, headroom: usize) -> (WirePort, WirePort) {
    let ab: Queue = Rc::default();
    let ba: Queue = Rc::default();
    let mk = |id, tx: &Queue, rx: &Queue| WirePort {
        id: PortId(id),
        tx: tx.clone(),
        rx: rx.clone(),
        mtu,
        headroom,
        sent: 0,
        received: 0,
        too_big: 0,
    };
    (mk(0, &ab, &ba), mk(1, &ba, &ab))
}

impl WirePort {
    /// Sets the port id stamped on received packets.
    pub fn with_id(mut self, id: PortId) -> Self {
        self.id = id;
        self
    }
    /// Packets waiting to be received at this end.
    pub fn pending(&self) -> usize {
        self.rx.borrow().len()
    }
    /// Sends one packet's bytes (a convenience for tests).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if bytes.len() > self.mtu {
            self.too_big += 1;
            return;
        }
        self.tx
            .borrow_mut()
            .push_back(PktBuf::from_slice(bytes, self.headroom, 64));
        self.sent += 1;
    }
    /// Takes every packet waiting at this end, as bytes.
    pub fn recv_all_bytes(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = self.rx.borrow_mut().pop_front() {
            self.received += 1;
            out.push(p.data().to_vec());
        }
        out
    }
}

impl<B: PacketBuf> Port<B> for WirePort
where
    B: From<PktBuf>,
{
    fn caps(&self) -> PortCaps {
        PortCaps {
            mtu: self.mtu,
            headroom: 0,
            batch_size: 64,
            offloads: Default::default(),
        }
    }

    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let mut n = 0;
        while !batch.is_full() {
            let Some(p) = self.rx.borrow_mut().pop_front() else {
                break;
            };
            if batch.push(B::from(p), Meta::new(self.id, now)).is_err() {
                break;
            }
            n += 1;
        }
        self.received += n as u64;
        Ok(n)
    }

    fn send(&mut self, batch: &mut Batch<B>, _now: Instant) -> Result<usize, PortError> {
        let n = batch.len();
        for (buf, _, _) in batch.drain() {
            if buf.len() > self.mtu {
                self.too_big += 1;
                continue;
            }
            self.tx
                .borrow_mut()
                .push_back(PktBuf::from_slice(buf.data(), self.headroom, 64));
            self.sent += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_in_order_with_mtu() {
        let (mut a, mut b) = wire(10, 8);
        let mut out = Batch::from_packets(&[b"one", b"two", b"this is too big"], 0, 0);
        assert_eq!(a.send(&mut out, Instant::ZERO).unwrap(), 3);
        assert!(out.is_empty());
        assert_eq!(a.too_big, 1);
        assert_eq!(b.pending(), 2);
        let mut got: Batch<PktBuf> = Batch::new(1);
        assert_eq!(b.recv(&mut got, Instant::from_secs(3)).unwrap(), 1);
        let (buf, meta, _) = got.get(0).unwrap();
        assert_eq!(buf.data(), b"one");
        assert_eq!(buf.headroom(), 8);
        assert_eq!(meta.ingress, PortId(1));
        assert_eq!(meta.timestamp, Instant::from_secs(3));
        assert_eq!(b.recv_all_bytes(), vec![b"two".to_vec()]);
        b.send_bytes(b"back");
        assert_eq!(a.recv_all_bytes(), vec![b"back".to_vec()]);
        assert_eq!((a.sent, a.received, b.sent, b.received), (2, 1, 1, 2));
    }
}
