//! Proves the steady state allocates nothing: pool get → push/pull → return, and a batch
//! filled and drained, counted by a global allocator that tallies every allocation.

use gatekit_packet::{Batch, Meta, PacketBuf, Pool, checksum};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the test's own thread: what the test harness's threads allocate meanwhile (its
    /// output capture, its timers) is not the steady state's and is not counted.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
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
fn steady_state_allocates_nothing() {
    WATCHED.with(|w| w.set(true));
    counter_sees_allocations();
    let pool = Pool::new(64, 2048, 128);
    let mut batch = Batch::new(32);
    let payload = [0xabu8; 1400];

    // Warm-up round (nothing here should allocate either, but it is not what we assert).
    let cycle = |pool: &Pool, batch: &mut Batch<_>| -> u16 {
        let mut acc = 0u16;
        for _ in 0..32 {
            let mut b = pool.get().expect("pool sized for the batch");
            b.push_back(payload.len())
                .unwrap()
                .copy_from_slice(&payload);
            b.push_front(8 + 20).unwrap().fill(0);
            b.push_back(16).unwrap().fill(1);
            acc ^= checksum::internet(b.data());
            b.pull_front(28).unwrap();
            b.trim_back(16).unwrap();
            batch.push(b, Meta::default()).unwrap();
        }
        for (b, _, _) in batch.drain() {
            acc ^= b.data()[0] as u16;
        }
        acc
    };
    cycle(&pool, &mut batch);

    let before = ALLOCS.load(Ordering::SeqCst);
    let mut acc = 0;
    for _ in 0..1000 {
        acc ^= cycle(&pool, &mut batch);
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations in 32,000 packet cycles");
    assert_eq!(pool.available(), 64);
    std::hint::black_box(acc);
}

/// The counter itself works: a Vec allocation is seen (so the test above can fail). Called
/// from the one test so that nothing else allocates while the steady state is counted (the
/// counter is process-wide and tests run on parallel threads).
fn counter_sees_allocations() {
    let before = ALLOCS.load(Ordering::SeqCst);
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(100));
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
    drop(v);
}
