//! Property tests: any sequence of pushes and pulls keeps the packet equal to a naive model
//! (a `Vec<u8>` plus two room counters), succeeds exactly when the model says there is room,
//! and never panics.

use gatekit_packet::{BufError, PacketBuf, PktBuf, Pool};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    PushFront(usize, u8),
    PullFront(usize),
    PushBack(usize, u8),
    TrimBack(usize),
    Truncate(usize),
}

fn op() -> impl Strategy<Value = Op> {
    // Sizes up to 80 against buffers of up to 64 bytes: many ops overflow on purpose.
    prop_oneof![
        (0usize..80, any::<u8>()).prop_map(|(n, b)| Op::PushFront(n, b)),
        (0usize..80).prop_map(Op::PullFront),
        (0usize..80, any::<u8>()).prop_map(|(n, b)| Op::PushBack(n, b)),
        (0usize..80).prop_map(Op::TrimBack),
        (0usize..80).prop_map(Op::Truncate),
        Just(Op::PullFront(usize::MAX)),
        Just(Op::PushBack(usize::MAX, 0)),
    ]
}

struct Model {
    data: Vec<u8>,
    head: usize,
    tail: usize,
}

fn apply<B: PacketBuf>(buf: &mut B, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::PushFront(n, b) => {
            let r = buf.push_front(n).map(|s| s.fill(b));
            if n <= m.head {
                prop_assert!(r.is_ok());
                m.head -= n;
                let mut v = vec![b; n];
                v.extend_from_slice(&m.data);
                m.data = v;
            } else {
                prop_assert_eq!(
                    r,
                    Err(BufError::NoHeadroom {
                        needed: n,
                        available: m.head
                    })
                );
            }
        }
        Op::PullFront(n) => {
            let r = buf.pull_front(n);
            if n <= m.data.len() {
                prop_assert!(r.is_ok());
                m.data.drain(..n);
                m.head += n;
            } else {
                prop_assert_eq!(
                    r,
                    Err(BufError::TooShort {
                        needed: n,
                        available: m.data.len()
                    })
                );
            }
        }
        Op::PushBack(n, b) => {
            let r = buf.push_back(n).map(|s| s.fill(b));
            if n <= m.tail {
                prop_assert!(r.is_ok());
                m.tail -= n;
                m.data.extend(std::iter::repeat_n(b, n));
            } else {
                prop_assert_eq!(
                    r,
                    Err(BufError::NoTailroom {
                        needed: n,
                        available: m.tail
                    })
                );
            }
        }
        Op::TrimBack(n) => {
            let r = buf.trim_back(n);
            if n <= m.data.len() {
                prop_assert!(r.is_ok());
                m.data.truncate(m.data.len() - n);
                m.tail += n;
            } else {
                prop_assert_eq!(
                    r,
                    Err(BufError::TooShort {
                        needed: n,
                        available: m.data.len()
                    })
                );
            }
        }
        Op::Truncate(n) => {
            buf.truncate(n);
            if n < m.data.len() {
                m.tail += m.data.len() - n;
                m.data.truncate(n);
            }
        }
    }
    prop_assert_eq!(buf.data(), &m.data[..]);
    prop_assert_eq!(buf.headroom(), m.head);
    prop_assert_eq!(buf.tailroom(), m.tail);
    prop_assert_eq!(buf.len(), m.data.len());
    Ok(())
}

proptest! {
    #[test]
    fn pktbuf_matches_model(
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        head in 0usize..32,
        tail in 0usize..32,
        ops in proptest::collection::vec(op(), 0..64),
    ) {
        let mut buf = PktBuf::from_slice(&payload, head, tail);
        let mut m = Model { data: payload.clone(), head, tail };
        for o in &ops {
            apply(&mut buf, &mut m, o)?;
        }
    }

    #[test]
    fn poolbuf_matches_model(
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        ops in proptest::collection::vec(op(), 0..64),
    ) {
        let pool = Pool::new(1, 64, 16);
        let mut buf = pool.get().unwrap();
        buf.push_back(payload.len()).unwrap().copy_from_slice(&payload);
        let mut m = Model { data: payload.clone(), head: 16, tail: 48 - payload.len() };
        for o in &ops {
            apply(&mut buf, &mut m, o)?;
        }
        drop(buf);
        prop_assert_eq!(pool.available(), 1);
    }

    /// Push a header in front and a trailer behind, pull them off: the payload is untouched
    /// (the encap → decap identity every tunnel relies on).
    #[test]
    fn encap_decap_identity(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        hdr in proptest::collection::vec(any::<u8>(), 0..64),
        trailer in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut buf = PktBuf::from_slice(&payload, 64, 32);
        buf.push_front(hdr.len()).unwrap().copy_from_slice(&hdr);
        buf.push_back(trailer.len()).unwrap().copy_from_slice(&trailer);
        prop_assert_eq!(&buf.data()[..hdr.len()], &hdr[..]);
        buf.pull_front(hdr.len()).unwrap();
        buf.trim_back(trailer.len()).unwrap();
        prop_assert_eq!(buf.data(), &payload[..]);
    }
}

#[cfg(feature = "bytes")]
proptest! {
    #[test]
    fn bytes_mut_keeps_payload(
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        hdr in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut b = bytes::BytesMut::with_capacity(96);
        b.extend_from_slice(&payload);
        b.push_front(hdr.len()).unwrap().copy_from_slice(&hdr);
        b.pull_front(hdr.len()).unwrap();
        prop_assert_eq!(PacketBuf::data(&b), &payload[..]);
    }
}
