//! The buffers ports receive into.

use gatekit_packet::{PacketBuf, PktBuf, Pool, PoolBuf};

/// A packet buffer a port can receive into directly: it can be taken from a [`Pool`] and
/// exposes its whole block for the kernel to fill.
///
/// Implemented for [`PoolBuf`] (the data-path choice: buffers are recycled, nothing is
/// allocated per packet) and for [`PktBuf`] (allocates one buffer of the pool's size per
/// received packet; for pipelines that mix real ports with in-memory test ports, which hand
/// out `PktBuf`s).
pub trait IoBuf: PacketBuf + Sized {
    /// An empty buffer with the pool's size and headroom, or `None` if none is free.
    fn take(pool: &Pool) -> Option<Self>;
    /// The underlying block, for I/O that fills it.
    fn block(&mut self) -> &mut PktBuf;
}

impl IoBuf for PoolBuf {
    #[inline]
    fn take(pool: &Pool) -> Option<Self> {
        pool.get()
    }
    #[inline]
    fn block(&mut self) -> &mut PktBuf {
        self.pkt()
    }
}

impl IoBuf for PktBuf {
    #[inline]
    fn take(pool: &Pool) -> Option<Self> {
        Some(PktBuf::new(pool.buf_size(), pool.headroom()))
    }
    #[inline]
    fn block(&mut self) -> &mut PktBuf {
        self
    }
}

/// The writable room of a buffer from its headroom to the end of its block.
pub(crate) fn room<B: IoBuf>(b: &mut B) -> &mut [u8] {
    let (raw, head, _) = b.block().raw_mut();
    &mut raw[head..]
}

/// Sets the packet to the first `len` bytes of [`room`].
pub(crate) fn fill<B: IoBuf>(b: &mut B, len: usize) -> bool {
    let pkt = b.block();
    let head = pkt.headroom();
    pkt.set_window(head, head + len).is_ok()
}
