//! The data path allocates nothing per packet: a counting global allocator watches a loop of
//! encapsulations and decapsulations (single and batch, native and NAT-T, both suites).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

mod common;

use common::*;
use gatekit_esp::{Decap, Direction, Encap, Endpoint, Mode, Output, Select, Suite};
use gatekit_packet::{Batch, Instant, PacketBuf, PktBuf};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's own thread: what the test harness's threads allocate meanwhile (its
    /// output capture, its timers) is not the data path's and is not counted.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encap_and_decap_do_not_allocate() {
    WATCHED.with(|w| w.set(true));
    // The counter sees this thread's allocations.
    let before = ALLOCS.load(Ordering::Relaxed);
    drop(std::hint::black_box(Vec::<u8>::with_capacity(100)));
    assert!(ALLOCS.load(Ordering::Relaxed) > before);
    let (l, p): (std::net::IpAddr, std::net::IpAddr) = (
        "192.0.2.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    );
    let t0 = Instant::ZERO;
    let mut tx = Endpoint::default();
    let mut rx = Endpoint::default();
    let mut ids = Vec::new();
    for (spi, suite, encap) in [
        (0x100, Suite::AesGcm128, Encap::Native),
        (
            0x101,
            Suite::ChaCha20Poly1305,
            Encap::Udp {
                local_port: 4500,
                peer_port: 4500,
            },
        ),
    ] {
        ids.push(
            tx.add_sa(
                &sa(
                    spi,
                    Direction::Outbound,
                    suite,
                    3,
                    Mode::Tunnel,
                    encap,
                    l,
                    p,
                ),
                t0,
            )
            .unwrap(),
        );
        rx.add_sa(
            &sa(spi, Direction::Inbound, suite, 3, Mode::Tunnel, encap, p, l),
            t0,
        )
        .unwrap();
    }
    let packet = udp_packet(
        "10.0.0.1".parse().unwrap(),
        "10.1.0.1".parse().unwrap(),
        1,
        2,
        1000,
    );
    let mut bufs: Vec<PktBuf> = (0..64)
        .map(|_| PktBuf::from_slice(&packet, 64, 48))
        .collect();
    let mut batch: Batch<PktBuf> = Batch::new(8);
    for _ in 0..8 {
        batch
            .push(PktBuf::new(2048, 64), Default::default())
            .unwrap();
    }

    let before = ALLOCS.load(Ordering::Relaxed);
    for round in 0..4 {
        for buf in bufs.iter_mut() {
            let id = ids[round % 2];
            buf.set_packet(&packet).unwrap();
            tx.encap(Select::Sa(id), buf, Output::Packet, t0).unwrap();
            assert!(matches!(rx.decap_ip(buf, t0), Decap::Inner(_)));
        }
        for (b, _, a) in batch.iter_mut() {
            b.reset(64);
            b.set_packet(&packet).unwrap();
            *a = Default::default();
        }
        tx.encap_batch(Select::Sa(ids[round % 2]), &mut batch, Output::Packet, t0);
        rx.decap_batch(&mut batch, t0);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the data path");
    assert_eq!(rx.drops().total(), 0);
    assert_eq!(bufs[0].data(), &packet[..]);
}
