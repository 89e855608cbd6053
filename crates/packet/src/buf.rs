//! The packet buffer trait and the crate's own buffer.

use alloc::boxed::Box;
use alloc::vec;

/// Why a buffer operation could not be done. Carries the size asked for and the size there was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufError {
    /// `push_front` asked for more bytes than the headroom holds.
    #[error("not enough headroom: needed {needed} bytes, {available} available")]
    NoHeadroom {
        /// Bytes asked for.
        needed: usize,
        /// Headroom there was.
        available: usize,
    },
    /// `push_back` asked for more bytes than the tailroom holds.
    #[error("not enough tailroom: needed {needed} bytes, {available} available")]
    NoTailroom {
        /// Bytes asked for.
        needed: usize,
        /// Tailroom there was.
        available: usize,
    },
    /// `pull_front` or `trim_back` asked to remove more bytes than the packet holds.
    #[error("packet too short: needed {needed} bytes, {available} available")]
    TooShort {
        /// Bytes asked for.
        needed: usize,
        /// Packet length there was.
        available: usize,
    },
}

/// One packet in one contiguous buffer, with room in front (headroom) and behind (tailroom).
///
/// # Contract
///
/// Every implementation upholds these, and every gatekit stage relies on them:
///
/// - [`data`](Self::data) is the current packet; its length is [`len`](Self::len).
/// - `push_front(n)` succeeds if and only if `n <= headroom()`; it then grows the packet by `n`
///   bytes at the front, returns those `n` bytes (their content is unspecified: the caller
///   writes them), and lowers the headroom by `n`. Otherwise it returns
///   [`BufError::NoHeadroom`] and changes nothing.
/// - `push_back(n)` is the same at the back, against `tailroom()`, failing with
///   [`BufError::NoTailroom`].
/// - `pull_front(n)` and `trim_back(n)` succeed if and only if `n <= len()`; they shrink the
///   packet and return the removed bytes to headroom/tailroom respectively (except where an
///   implementation documents otherwise). Otherwise they return [`BufError::TooShort`] and
///   change nothing.
/// - No method panics, whatever its arguments; bytes of the packet not pushed or pulled are
///   never moved relative to each other.
pub trait PacketBuf {
    /// The current packet.
    fn data(&self) -> &[u8];
    /// The current packet, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes that `push_front` can add.
    fn headroom(&self) -> usize;
    /// Bytes that `push_back` can add.
    fn tailroom(&self) -> usize;
    /// Grows the packet by `n` bytes at the front and returns them.
    fn push_front(&mut self, n: usize) -> Result<&mut [u8], BufError>;
    /// Removes `n` bytes from the front of the packet.
    fn pull_front(&mut self, n: usize) -> Result<(), BufError>;
    /// Grows the packet by `n` bytes at the back and returns them.
    fn push_back(&mut self, n: usize) -> Result<&mut [u8], BufError>;
    /// Removes `n` bytes from the back of the packet.
    fn trim_back(&mut self, n: usize) -> Result<(), BufError>;

    /// Length of the current packet.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the packet is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shortens the packet to `len` bytes; does nothing if it is already that short.
    fn truncate(&mut self, len: usize) {
        let cur = self.len();
        if len < cur {
            // Cannot fail: cur - len <= cur.
            let _ = self.trim_back(cur - len);
        }
    }
}

/// The crate's own packet buffer: a fixed-size heap block with a movable window into it.
///
/// The block is allocated once; all later operations move the window. [`PktBuf::reset`] makes it
/// empty again with a chosen headroom, which is how [`Pool`](crate::Pool) recycles it.
#[derive(Clone, PartialEq, Eq)]
pub struct PktBuf {
    storage: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl core::fmt::Debug for PktBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PktBuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

impl PktBuf {
    /// An empty buffer of `capacity` bytes with `headroom` bytes in front (clamped to
    /// `capacity`).
    pub fn new(capacity: usize, headroom: usize) -> Self {
        let head = headroom.min(capacity);
        PktBuf {
            storage: vec![0u8; capacity].into_boxed_slice(),
            head,
            tail: head,
        }
    }

    /// A buffer holding a copy of `packet`, with the given room around it.
    pub fn from_slice(packet: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut b = PktBuf::new(headroom + packet.len() + tailroom, headroom);
        b.storage[headroom..headroom + packet.len()].copy_from_slice(packet);
        b.tail = headroom + packet.len();
        b
    }

    /// Total size of the underlying block.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Empties the buffer and sets its headroom (clamped to the capacity).
    pub fn reset(&mut self, headroom: usize) {
        self.head = headroom.min(self.storage.len());
        self.tail = self.head;
    }

    /// Replaces the packet with a copy of `packet`, keeping the current headroom.
    pub fn set_packet(&mut self, packet: &[u8]) -> Result<(), BufError> {
        let room = self.storage.len() - self.head;
        if packet.len() > room {
            return Err(BufError::NoTailroom {
                needed: packet.len(),
                available: room,
            });
        }
        self.storage[self.head..self.head + packet.len()].copy_from_slice(packet);
        self.tail = self.head + packet.len();
        Ok(())
    }

    /// The whole block and the packet's window in it, for I/O that fills the buffer directly
    /// (a `recv` into the tailroom, say). Use [`PktBuf::set_window`] afterwards.
    pub fn raw_mut(&mut self) -> (&mut [u8], usize, usize) {
        (&mut self.storage, self.head, self.tail)
    }

    /// Sets the packet's window to `head..tail` of the block.
    pub fn set_window(&mut self, head: usize, tail: usize) -> Result<(), BufError> {
        if head > tail || tail > self.storage.len() {
            return Err(BufError::NoTailroom {
                needed: tail,
                available: self.storage.len(),
            });
        }
        self.head = head;
        self.tail = tail;
        Ok(())
    }
}

impl PacketBuf for PktBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.head..self.tail]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.head..self.tail]
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.head
    }
    #[inline]
    fn tailroom(&self) -> usize {
        self.storage.len() - self.tail
    }
    #[inline]
    fn push_front(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.head {
            return Err(BufError::NoHeadroom {
                needed: n,
                available: self.head,
            });
        }
        self.head -= n;
        Ok(&mut self.storage[self.head..self.head + n])
    }
    #[inline]
    fn pull_front(&mut self, n: usize) -> Result<(), BufError> {
        let len = self.tail - self.head;
        if n > len {
            return Err(BufError::TooShort {
                needed: n,
                available: len,
            });
        }
        self.head += n;
        Ok(())
    }
    #[inline]
    fn push_back(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let room = self.storage.len() - self.tail;
        if n > room {
            return Err(BufError::NoTailroom {
                needed: n,
                available: room,
            });
        }
        let start = self.tail;
        self.tail += n;
        Ok(&mut self.storage[start..self.tail])
    }
    #[inline]
    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        let len = self.tail - self.head;
        if n > len {
            return Err(BufError::TooShort {
                needed: n,
                available: len,
            });
        }
        self.tail -= n;
        Ok(())
    }
}

/// `BytesMut` keeps no room in front of its data, so here headroom and tailroom are both the
/// spare capacity, and `push_front` moves the packet back to make room (O(len) — use
/// [`PktBuf`] or [`PoolBuf`](crate::PoolBuf) on hot paths). `pull_front` gives the bytes up for
/// good (`BytesMut::advance`); they do not return to the headroom. Neither push ever reallocates.
#[cfg(feature = "bytes")]
impl PacketBuf for bytes::BytesMut {
    fn data(&self) -> &[u8] {
        self
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self
    }
    fn headroom(&self) -> usize {
        self.capacity() - bytes::BytesMut::len(self)
    }
    fn tailroom(&self) -> usize {
        self.capacity() - bytes::BytesMut::len(self)
    }
    fn push_front(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let room = self.capacity() - bytes::BytesMut::len(self);
        if n > room {
            return Err(BufError::NoHeadroom {
                needed: n,
                available: room,
            });
        }
        let len = bytes::BytesMut::len(self);
        self.resize(len + n, 0);
        self.copy_within(0..len, n);
        Ok(&mut self[..n])
    }
    fn pull_front(&mut self, n: usize) -> Result<(), BufError> {
        let len = bytes::BytesMut::len(self);
        if n > len {
            return Err(BufError::TooShort {
                needed: n,
                available: len,
            });
        }
        bytes::Buf::advance(self, n);
        Ok(())
    }
    fn push_back(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let len = bytes::BytesMut::len(self);
        let room = self.capacity() - len;
        if n > room {
            return Err(BufError::NoTailroom {
                needed: n,
                available: room,
            });
        }
        self.resize(len + n, 0);
        Ok(&mut self[len..])
    }
    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        let len = bytes::BytesMut::len(self);
        if n > len {
            return Err(BufError::TooShort {
                needed: n,
                available: len,
            });
        }
        bytes::BytesMut::truncate(self, len - n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clamps_headroom() {
        let b = PktBuf::new(10, 20);
        assert_eq!(b.headroom(), 10);
        assert_eq!(b.tailroom(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn push_pull_front_exact_and_over() {
        let mut b = PktBuf::from_slice(&[1, 2, 3], 4, 2);
        assert_eq!(b.data(), &[1, 2, 3]);
        b.push_front(4).unwrap().copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(b.headroom(), 0);
        assert_eq!(
            b.push_front(1),
            Err(BufError::NoHeadroom {
                needed: 1,
                available: 0
            })
        );
        assert_eq!(b.data(), &[9, 9, 9, 9, 1, 2, 3]);
        b.pull_front(4).unwrap();
        assert_eq!(b.data(), &[1, 2, 3]);
        assert_eq!(
            b.pull_front(4),
            Err(BufError::TooShort {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(b.data(), &[1, 2, 3], "a failed pull changes nothing");
        b.pull_front(3).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.headroom(), 7);
    }

    #[test]
    fn push_trim_back_exact_and_over() {
        let mut b = PktBuf::from_slice(&[1, 2], 0, 3);
        b.push_back(3).unwrap().copy_from_slice(&[7, 8, 9]);
        assert_eq!(b.data(), &[1, 2, 7, 8, 9]);
        assert_eq!(
            b.push_back(1),
            Err(BufError::NoTailroom {
                needed: 1,
                available: 0
            })
        );
        b.trim_back(3).unwrap();
        assert_eq!(b.data(), &[1, 2]);
        assert_eq!(
            b.trim_back(3),
            Err(BufError::TooShort {
                needed: 3,
                available: 2
            })
        );
        b.truncate(5);
        assert_eq!(b.len(), 2);
        b.truncate(1);
        assert_eq!(b.data(), &[1]);
        assert_eq!(b.tailroom(), 4);
    }

    #[test]
    fn usize_max_requests_fail_cleanly() {
        let mut b = PktBuf::from_slice(&[1], 1, 1);
        assert!(b.push_front(usize::MAX).is_err());
        assert!(b.push_back(usize::MAX).is_err());
        assert!(b.pull_front(usize::MAX).is_err());
        assert!(b.trim_back(usize::MAX).is_err());
        assert_eq!(b.data(), &[1]);
    }

    #[test]
    fn reset_set_packet_and_window() {
        let mut b = PktBuf::new(16, 4);
        b.set_packet(&[5; 12]).unwrap();
        assert_eq!(b.len(), 12);
        assert_eq!(
            b.set_packet(&[5; 13]),
            Err(BufError::NoTailroom {
                needed: 13,
                available: 12
            })
        );
        b.reset(8);
        assert_eq!((b.headroom(), b.len(), b.tailroom()), (8, 0, 8));
        assert!(b.set_window(3, 2).is_err());
        assert!(b.set_window(0, 17).is_err());
        b.set_window(2, 6).unwrap();
        assert_eq!(b.len(), 4);
        let (raw, h, t) = b.raw_mut();
        assert_eq!((raw.len(), h, t), (16, 2, 6));
        assert_eq!(b.capacity(), 16);
    }

    #[test]
    fn debug_does_not_dump_payload() {
        let b = PktBuf::from_slice(b"secret", 2, 2);
        let s = alloc::format!("{b:?}");
        assert!(s.contains("len: 6"), "{s}");
        assert!(!s.contains("115"), "{s}");
    }

    #[cfg(feature = "bytes")]
    #[test]
    fn bytes_mut_contract() {
        let mut b = bytes::BytesMut::with_capacity(8);
        b.extend_from_slice(&[1, 2, 3]);
        let spare = b.capacity() - 3;
        assert_eq!(b.headroom(), spare);
        b.push_front(2).unwrap().copy_from_slice(&[8, 9]);
        assert_eq!(PacketBuf::data(&b), &[8, 9, 1, 2, 3]);
        b.push_back(1).unwrap()[0] = 4;
        assert_eq!(PacketBuf::data(&b), &[8, 9, 1, 2, 3, 4]);
        assert!(matches!(
            b.push_front(usize::MAX),
            Err(BufError::NoHeadroom { .. })
        ));
        assert!(matches!(
            b.push_back(usize::MAX),
            Err(BufError::NoTailroom { .. })
        ));
        b.pull_front(2).unwrap();
        b.trim_back(1).unwrap();
        assert_eq!(PacketBuf::data(&b), &[1, 2, 3]);
        assert!(b.trim_back(4).is_err());
        assert!(b.pull_front(4).is_err());
    }
}
