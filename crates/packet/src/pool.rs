//! Buffer pools and batches: the steady state of a data path allocates nothing.

use crate::{Action, BufError, Meta, PacketBuf, PktBuf};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

struct Shared {
    free: RefCell<Vec<PktBuf>>,
    buf_size: usize,
    headroom: usize,
    total: usize,
}

/// A pool of preallocated fixed-size [`PktBuf`]s.
///
/// All buffers are allocated by [`Pool::new`]; [`Pool::get`] hands one out (emptied, with the
/// pool's headroom) and dropping the [`PoolBuf`] puts it back. When the pool is empty `get`
/// returns `None`: the caller counts a drop instead of allocating.
///
/// A pool belongs to one worker thread (it is `!Send`), as buffers do in a per-core data path;
/// each worker makes its own. Cloning a `Pool` gives another handle to the same buffers.
#[derive(Clone)]
pub struct Pool {
    shared: Rc<Shared>,
}

impl core::fmt::Debug for Pool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("buf_size", &self.shared.buf_size)
            .field("headroom", &self.shared.headroom)
            .field("total", &self.shared.total)
            .field("available", &self.available())
            .finish()
    }
}

impl Pool {
    /// A pool of `count` buffers of `buf_size` bytes, each handed out with `headroom` bytes of
    /// room in front (clamped to `buf_size`).
    pub fn new(count: usize, buf_size: usize, headroom: usize) -> Self {
        let headroom = headroom.min(buf_size);
        let free = (0..count)
            .map(|_| PktBuf::new(buf_size, headroom))
            .collect();
        Pool {
            shared: Rc::new(Shared {
                free: RefCell::new(free),
                buf_size,
                headroom,
                total: count,
            }),
        }
    }

    /// Takes an empty buffer, or `None` if all are in use.
    #[inline]
    pub fn get(&self) -> Option<PoolBuf> {
        let mut buf = self.shared.free.borrow_mut().pop()?;
        buf.reset(self.shared.headroom);
        Some(PoolBuf {
            buf: Some(buf),
            pool: self.shared.clone(),
        })
    }

    /// Returns a buffer to the pool (the same as dropping it).
    pub fn put(&self, buf: PoolBuf) {
        drop(buf);
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.shared.free.borrow().len()
    }

    /// Buffers the pool was made with.
    pub fn capacity(&self) -> usize {
        self.shared.total
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// Headroom each buffer is handed out with.
    pub fn headroom(&self) -> usize {
        self.shared.headroom
    }
}

/// A buffer on loan from a [`Pool`]; it goes back to the pool when dropped.
pub struct PoolBuf {
    // Always Some until Drop takes it.
    buf: Option<PktBuf>,
    pool: Rc<Shared>,
}

impl core::fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("PoolBuf").field(&self.buf).finish()
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut free = self.pool.free.borrow_mut();
            // Never grows: at most `total` buffers exist, so this push stays within capacity.
            if free.len() < self.pool.total {
                free.push(buf);
            }
        }
    }
}

impl PoolBuf {
    #[inline]
    fn inner(&self) -> &PktBuf {
        // Invariant: `buf` is Some for the whole life of a PoolBuf outside Drop.
        match &self.buf {
            Some(b) => b,
            None => unreachable_buf(),
        }
    }
    #[inline]
    fn inner_mut(&mut self) -> &mut PktBuf {
        match &mut self.buf {
            Some(b) => b,
            None => unreachable_buf(),
        }
    }
    /// The underlying buffer (for I/O that fills the whole block).
    pub fn pkt(&mut self) -> &mut PktBuf {
        self.inner_mut()
    }
}

#[cold]
#[allow(clippy::panic)]
fn unreachable_buf() -> ! {
    panic!("PoolBuf used after drop")
}

impl PacketBuf for PoolBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        self.inner().data()
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.inner_mut().data_mut()
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.inner().headroom()
    }
    #[inline]
    fn tailroom(&self) -> usize {
        self.inner().tailroom()
    }
    #[inline]
    fn push_front(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        self.inner_mut().push_front(n)
    }
    #[inline]
    fn pull_front(&mut self, n: usize) -> Result<(), BufError> {
        self.inner_mut().pull_front(n)
    }
    #[inline]
    fn push_back(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        self.inner_mut().push_back(n)
    }
    #[inline]
    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        self.inner_mut().trim_back(n)
    }
}

/// The batch was full; the packet is handed back.
#[derive(Debug, thiserror::Error)]
#[error("batch full ({capacity} packets)")]
pub struct BatchFull<B> {
    /// The packet that did not fit.
    pub packet: B,
    /// The batch's capacity.
    pub capacity: usize,
}

/// A fixed-capacity batch of packets, each with its [`Meta`] and the [`Action`] a stage
/// decided for it (initially [`Action::Continue`]).
///
/// Storage is reserved once by [`Batch::new`]; pushing never reallocates (a push beyond the
/// capacity fails with [`BatchFull`]).
pub struct Batch<B> {
    bufs: Vec<B>,
    metas: Vec<Meta>,
    actions: Vec<Action>,
    capacity: usize,
}

impl<B> core::fmt::Debug for Batch<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.bufs.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<B> Batch<B> {
    /// An empty batch for up to `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        Batch {
            bufs: Vec::with_capacity(capacity),
            metas: Vec::with_capacity(capacity),
            actions: Vec::with_capacity(capacity),
            capacity,
        }
    }
    /// Packets in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.bufs.len()
    }
    /// Whether the batch is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
    /// Whether the batch is full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.bufs.len() >= self.capacity
    }
    /// Maximum number of packets.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Free slots.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.capacity - self.bufs.len()
    }
    /// Appends a packet, or hands it back if the batch is full.
    #[inline]
    pub fn push(&mut self, buf: B, meta: Meta) -> Result<(), BatchFull<B>> {
        if self.is_full() {
            return Err(BatchFull {
                packet: buf,
                capacity: self.capacity,
            });
        }
        self.bufs.push(buf);
        self.metas.push(meta);
        self.actions.push(Action::Continue);
        Ok(())
    }
    /// Removes and returns the last packet.
    pub fn pop(&mut self) -> Option<(B, Meta, Action)> {
        let b = self.bufs.pop()?;
        let m = self.metas.pop()?;
        let a = self.actions.pop()?;
        Some((b, m, a))
    }
    /// The `i`-th packet with its metadata and verdict, all writable.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut B, &mut Meta, &mut Action)> {
        Some((
            self.bufs.get_mut(i)?,
            self.metas.get_mut(i)?,
            self.actions.get_mut(i)?,
        ))
    }
    /// The `i`-th packet with its metadata and verdict.
    #[inline]
    pub fn get(&self, i: usize) -> Option<(&B, &Meta, &Action)> {
        Some((self.bufs.get(i)?, self.metas.get(i)?, self.actions.get(i)?))
    }
    /// All packets, metadata and verdicts, as parallel slices.
    #[inline]
    pub fn parts_mut(&mut self) -> (&mut [B], &mut [Meta], &mut [Action]) {
        (&mut self.bufs, &mut self.metas, &mut self.actions)
    }
    /// Iterates over packets with their metadata and verdicts.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&mut B, &mut Meta, &mut Action)> {
        self.bufs
            .iter_mut()
            .zip(self.metas.iter_mut())
            .zip(self.actions.iter_mut())
            .map(|((b, m), a)| (b, m, a))
    }
    /// Removes every packet, in order (the batch keeps its storage).
    pub fn drain(&mut self) -> impl Iterator<Item = (B, Meta, Action)> + '_ {
        self.bufs
            .drain(..)
            .zip(self.metas.drain(..))
            .zip(self.actions.drain(..))
            .map(|((b, m), a)| (b, m, a))
    }
    /// Removes the first `n` packets (clamped to the length), dropping them.
    pub fn consume_front(&mut self, n: usize) {
        let n = n.min(self.bufs.len());
        self.bufs.drain(..n);
        self.metas.drain(..n);
        self.actions.drain(..n);
    }
    /// Keeps only the packets for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&B, &Meta, &Action) -> bool) {
        let mut i = 0;
        while i < self.bufs.len() {
            if keep(&self.bufs[i], &self.metas[i], &self.actions[i]) {
                i += 1;
            } else {
                self.bufs.remove(i);
                self.metas.remove(i);
                self.actions.remove(i);
            }
        }
    }
    /// Drops every packet.
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.metas.clear();
        self.actions.clear();
    }
}

impl Batch<PktBuf> {
    /// A batch holding copies of `packets`, each with `headroom` bytes in front.
    pub fn from_packets(packets: &[&[u8]], headroom: usize, tailroom: usize) -> Self {
        let mut b = Batch::new(packets.len());
        for p in packets {
            // Cannot fail: capacity is packets.len().
            let _ = b.push(PktBuf::from_slice(p, headroom, tailroom), Meta::default());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_recycles_and_exhausts() {
        let pool = Pool::new(2, 64, 16);
        assert_eq!(
            (pool.capacity(), pool.available(), pool.buf_size()),
            (2, 2, 64)
        );
        let mut a = pool.get().unwrap();
        a.push_back(10).unwrap();
        a.push_front(16).unwrap();
        assert!(a.push_front(1).is_err());
        let b = pool.get().unwrap();
        assert!(pool.get().is_none(), "exhausted pool says so");
        assert_eq!(pool.available(), 0);
        drop(a);
        assert_eq!(pool.available(), 1);
        let a2 = pool.get().unwrap();
        assert_eq!(a2.len(), 0, "a recycled buffer comes back empty");
        assert_eq!(a2.headroom(), 16, "with the pool's headroom");
        pool.put(b);
        drop(a2);
        assert_eq!(pool.available(), 2);
        assert!(format!("{pool:?}").contains("available: 2"));
    }

    #[test]
    fn pool_headroom_clamped() {
        let pool = Pool::new(1, 8, 100);
        assert_eq!(pool.headroom(), 8);
        let b = pool.get().unwrap();
        assert_eq!((b.headroom(), b.tailroom()), (8, 0));
    }

    #[test]
    fn batch_capacity_and_order() {
        let mut batch: Batch<PktBuf> = Batch::new(2);
        assert!(batch.is_empty());
        batch
            .push(PktBuf::from_slice(&[1], 0, 0), Meta::default())
            .unwrap();
        batch
            .push(PktBuf::from_slice(&[2], 0, 0), Meta::default())
            .unwrap();
        assert!(batch.is_full());
        assert_eq!(batch.remaining(), 0);
        let err = batch
            .push(PktBuf::from_slice(&[3], 0, 0), Meta::default())
            .unwrap_err();
        assert_eq!(err.packet.data(), &[3]);
        assert_eq!(err.capacity, 2);
        if let Some((_, m, a)) = batch.get_mut(1) {
            m.mark = 7;
            *a = Action::Consumed;
        }
        assert_eq!(
            batch.get(1).map(|(_, m, a)| (m.mark, *a)),
            Some((7, Action::Consumed))
        );
        assert!(batch.get(2).is_none());
        batch.retain(|_, m, _| m.mark == 7);
        assert_eq!(batch.len(), 1);
        let all: Vec<_> = batch.drain().map(|(b, _, _)| b.data()[0]).collect();
        assert_eq!(all, [2]);
        assert!(batch.is_empty());
        let mut b2 = Batch::from_packets(&[&[1], &[2], &[3]], 4, 4);
        b2.consume_front(2);
        assert_eq!(b2.pop().map(|(b, _, _)| b.data()[0]), Some(3));
        b2.consume_front(5);
        assert!(b2.pop().is_none());
        b2.clear();
        assert_eq!(format!("{b2:?}"), "Batch { len: 0, capacity: 3 }");
    }
    use alloc::format;
}
