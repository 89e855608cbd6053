//! gatekit-route's FIB against `prefix-trie` and `ip_network_table`, in the same run, on the
//! RIPE RIS full tables of AS3333 (1.04M IPv4 and 246k IPv6 prefixes) and their one-day
//! update streams from `../shared/data/lpm/`, or on generated tables when those are missing.
//!
//! Measured: single and batched lookups per second on random and on table-derived addresses,
//! build time and bytes per prefix (printed), and the update rate over the stream. Before the
//! criterion groups, paired comparisons (`common::paired_ratio`) print the lookup-rate ratio
//! of gatekit (batched and single) to prefix-trie per address mix, the figure the targets are
//! stated in.
//!
//! Each mix is looked up two ways. A *warm* set of 4096 addresses is looked up again and
//! again: every structure then finds the lines its lookups read in the caches (the best case
//! for a pointer-chasing trie, whose path for a few thousand addresses stays cached). A
//! *stream* of 1M addresses is looked up once a round: as on a router that sees many
//! destinations, few lookups find the lines of the one before in the caches, and a structure
//! is timed on its memory accesses as well as its instructions. Next hops:
//! the RIS tables carry none, so each prefix gets one of 64 by a hash of the prefix (no
//! correlation between neighbours, which is harder on the compiled table than real tables).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::{Bench, paired_ratio, timed_round};
use gatekit_route::{Address, Change, Fib};
use ip_network_table::IpNetworkTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::hint::black_box;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Addresses of the warm sets.
const ADDRS: usize = 4096;
/// Addresses of the streams (when run as a test, a few: see [`stream_len`]).
const STREAM: usize = 1 << 20;
/// Rounds of each paired comparison on a stream (each round looks up the whole stream once).
const STREAM_ROUNDS: usize = 15;
/// Rounds of each paired comparison.
const PAIRED_ROUNDS: usize = 101;

/// Addresses of a stream: [`STREAM`] when measuring; when run as a test, where lookups are
/// unoptimised, 16K (the paired loops over 1M addresses took minutes there).
fn stream_len() -> usize {
    if common::measuring() { STREAM } else { 1 << 14 }
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lpm")
}

fn read_gz(name: &str) -> Option<String> {
    let raw = std::fs::read(data_dir().join(name)).ok()?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u128(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }
}

/// One of 64 next hops, by an FNV hash of the prefix.
fn next_hop(key: u128, len: u8) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.to_be_bytes().into_iter().chain([len]) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % 64) as u32
}

#[derive(Clone, Copy)]
enum Op<P> {
    Announce(P),
    Withdraw(P),
}

struct Data<P> {
    name: &'static str,
    prefixes: Vec<P>,
    updates: Vec<Op<P>>,
}

fn load<A: Address>(
    name: &'static str,
    table: &str,
    updates: &str,
    generate: impl Fn(&mut Rng) -> A::Prefix,
) -> Data<A::Prefix> {
    let parse = |s: &str| -> Option<A::Prefix> { A::from_net(s.parse::<IpNet>().ok()?.trunc()) };
    let loaded = read_gz(table).zip(read_gz(updates)).map(|(t, u)| {
        let prefixes: Vec<_> = t.lines().filter_map(parse).collect();
        let updates: Vec<_> = u
            .lines()
            .filter_map(|l| {
                let (op, p) = l.split_once(' ')?;
                let p = parse(p.trim())?;
                match op {
                    "A" => Some(Op::Announce(p)),
                    "W" => Some(Op::Withdraw(p)),
                    _ => None,
                }
            })
            .collect();
        (prefixes, updates)
    });
    let (prefixes, updates) = match loaded {
        Some(x) => {
            eprintln!(
                "{name}: RIS AS3333 table, {} prefixes, {} updates",
                x.0.len(),
                x.1.len()
            );
            x
        }
        None => {
            eprintln!("{name}: ../shared/data/lpm missing; using a generated table");
            let mut rng = Rng(42);
            let prefixes: Vec<_> = (0..200_000).map(|_| generate(&mut rng)).collect();
            let updates = (0..200_000)
                .map(|i| {
                    let p = prefixes[(rng.next() as usize) % prefixes.len()];
                    if i % 20 == 0 {
                        Op::Withdraw(p)
                    } else {
                        Op::Announce(generate(&mut rng))
                    }
                })
                .collect();
            (prefixes, updates)
        }
    };
    Data {
        name,
        prefixes,
        updates,
    }
}

fn gen4(rng: &mut Rng) -> Ipv4Net {
    let len = [16, 19, 20, 22, 23, 24, 24, 24, 24, 24][(rng.next() % 10) as usize];
    Ipv4Net::new(Ipv4Addr::from_bits(rng.next() as u32), len)
        .unwrap()
        .trunc()
}

fn gen6(rng: &mut Rng) -> Ipv6Net {
    let len = [29, 32, 32, 40, 44, 48, 48, 48][(rng.next() % 8) as usize];
    let a = (rng.u128() >> 3) | (1 << 125);
    Ipv6Net::new(Ipv6Addr::from_bits(a), len).unwrap().trunc()
}

fn bench_family<A: Address>(
    c: &mut Bench,
    d: &Data<A::Prefix>,
    random: Vec<A>,
    random_stream: Vec<A>,
    to_pt: impl Fn(A::Prefix) -> A::Prefix + Copy,
    to_int: impl Fn(A::Prefix) -> ip_network::IpNetwork + Copy,
    int_lookup: impl Fn(&IpNetworkTable<u32>, A) -> Option<u32> + Copy,
) where
    A::Prefix: prefix_trie::Prefix,
{
    let value = |p: &A::Prefix| {
        let (k, l) = A::prefix_parts(p);
        next_hop(k, l)
    };
    // Build: each structure from the same list, timed once.
    let t = Instant::now();
    let mut fib = Fib::<A>::new();
    for p in &d.prefixes {
        fib.insert(*p, value(p)).unwrap();
    }
    fib.commit();
    let fib_build = t.elapsed();
    let t = Instant::now();
    let mut pt: PrefixMap<A::Prefix, u32> = PrefixMap::new();
    for p in &d.prefixes {
        pt.insert(to_pt(*p), value(p));
    }
    let pt_build = t.elapsed();
    let t = Instant::now();
    let mut int: IpNetworkTable<u32> = IpNetworkTable::new();
    for p in &d.prefixes {
        int.insert(to_int(*p), value(p));
    }
    let int_build = t.elapsed();
    let n = fib.len().max(1) as f64;
    let table = fib.table();
    eprintln!(
        "{}: build gatekit {:.0} ms, prefix-trie {:.0} ms, ip_network_table {:.0} ms",
        d.name,
        fib_build.as_secs_f64() * 1e3,
        pt_build.as_secs_f64() * 1e3,
        int_build.as_secs_f64() * 1e3
    );
    eprintln!(
        "{}: memory gatekit {:.2} MiB ({:.2} B/prefix), prefix-trie {:.2} MiB ({:.2} B/prefix), ip_network_table: not reported by the crate",
        d.name,
        table.memory() as f64 / 1048576.0,
        table.memory() as f64 / n,
        pt.mem_size() as f64 / 1048576.0,
        pt.mem_size() as f64 / n,
    );

    // Addresses: uniformly random, and random addresses inside random prefixes of the table.
    let derive = |rng: &mut Rng, n: usize| -> Vec<A> {
        (0..n)
            .map(|_| {
                let p = d.prefixes[(rng.next() as usize) % d.prefixes.len()];
                let (k, l) = A::prefix_parts(&p);
                let host = if l >= 128 { 0 } else { u128::MAX >> l };
                A::from_key(k | (rng.u128() & host))
            })
            .collect()
    };
    let derived = derive(&mut Rng(7), ADDRS);
    let derived_stream = derive(&mut Rng(8), stream_len());
    // Paired comparisons with prefix-trie (`common::paired_ratio`): rounds of the same
    // addresses through each alternate, so that the ratio the targets are stated in is not
    // swayed by the load drifting between two criterion benchmarks. A warm set's round
    // looks its addresses up WARM times, so that a side is timed mostly on its own warm
    // cache lines rather than on the other side's leftovers; a stream's, once.
    const WARM: usize = 4;
    for (mix, addrs, warm, rounds) in [
        ("random", &random[..ADDRS], WARM, PAIRED_ROUNDS),
        ("table-derived", &derived[..], WARM, PAIRED_ROUNDS),
        ("random-stream", &random_stream[..], 1, STREAM_ROUNDS),
        (
            "table-derived-stream",
            &derived_stream[..],
            1,
            STREAM_ROUNDS,
        ),
    ] {
        let base = || {
            timed_round(
                1,
                || (),
                |_| {
                    let mut s = 0u32;
                    for &a in black_box(addrs).iter().cycle().take(warm * addrs.len()) {
                        let host = to_pt(A::make_prefix(a.to_key(), A::BITS));
                        s = s.wrapping_add(pt.get_lpm(&host).map_or(0, |(_, v)| *v));
                    }
                    black_box(s);
                },
            )
        };
        let mut out = vec![0; addrs.len()];
        paired_ratio(
            &format!("{}/lookup/{mix}: gatekit-batch vs prefix-trie", d.name),
            rounds,
            (warm * addrs.len()) as u64,
            base,
            || {
                timed_round(
                    1,
                    || (),
                    |_| {
                        for _ in 0..warm {
                            table.lookup_batch(black_box(addrs), &mut out);
                            black_box(&out);
                        }
                    },
                )
            },
        );
        paired_ratio(
            &format!("{}/lookup/{mix}: gatekit-single vs prefix-trie", d.name),
            rounds,
            (warm * addrs.len()) as u64,
            base,
            || {
                timed_round(
                    1,
                    || (),
                    |_| {
                        let mut s = 0u32;
                        for &a in black_box(addrs).iter().cycle().take(warm * addrs.len()) {
                            s = s.wrapping_add(table.lookup(a).unwrap_or(0));
                        }
                        black_box(s);
                    },
                )
            },
        );
    }
    for (mix, addrs) in [
        ("random", &random[..ADDRS]),
        ("table-derived", &derived[..]),
    ] {
        let mut g = c.benchmark_group(format!("{}/lookup/{mix}", d.name));
        g.throughput(Throughput::Elements(addrs.len() as u64));
        g.bench_function("gatekit-batch", |b| {
            let mut out = vec![0; addrs.len()];
            b.iter(|| {
                table.lookup_batch(black_box(addrs), &mut out);
                black_box(&out);
            })
        });
        g.bench_function("gatekit-single", |b| {
            b.iter(|| {
                let mut s = 0u32;
                for &a in black_box(addrs) {
                    s = s.wrapping_add(table.lookup(a).unwrap_or(0));
                }
                s
            })
        });
        g.bench_function("prefix-trie", |b| {
            b.iter(|| {
                let mut s = 0u32;
                for &a in black_box(addrs) {
                    let host = to_pt(A::make_prefix(a.to_key(), A::BITS));
                    s = s.wrapping_add(pt.get_lpm(&host).map_or(0, |(_, v)| *v));
                }
                s
            })
        });
        g.bench_function("ip_network_table", |b| {
            b.iter(|| {
                let mut s = 0u32;
                for &a in black_box(addrs) {
                    s = s.wrapping_add(int_lookup(&int, a).unwrap_or(0));
                }
                s
            })
        });
        g.finish();
    }

    // Updates: the whole stream on a fresh copy of the table each iteration. The next hop of
    // each announcement is computed beforehand, for every structure alike, so that the
    // timed loops hold only the table updates.
    let stream: Vec<Change<A::Prefix>> = d
        .updates
        .iter()
        .map(|op| match *op {
            Op::Announce(p) => Change::Insert(p, value(&p)),
            Op::Withdraw(p) => Change::Remove(p),
        })
        .collect();
    let mut g = c.benchmark_group(format!("{}/updates", d.name));
    g.throughput(Throughput::Elements(stream.len() as u64));
    g.bench_function("gatekit-apply-commit-every-65536", |b| {
        b.iter_batched(
            || fib.clone(),
            |mut f| {
                for chunk in stream.chunks(65536) {
                    f.apply(chunk).unwrap();
                    f.commit();
                }
                f
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("gatekit-single-commit-every-65536", |b| {
        b.iter_batched(
            || fib.clone(),
            |mut f| {
                for chunk in stream.chunks(65536) {
                    for c in chunk {
                        match *c {
                            Change::Insert(p, v) => {
                                f.insert(p, v).unwrap();
                            }
                            Change::Remove(p) => {
                                f.remove(&p);
                            }
                        }
                    }
                    f.commit();
                }
                f
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("prefix-trie", |b| {
        b.iter_batched(
            || pt.clone(),
            |mut m| {
                for c in &stream {
                    match *c {
                        Change::Insert(p, v) => {
                            m.insert(to_pt(p), v);
                        }
                        Change::Remove(p) => {
                            m.remove(&to_pt(p));
                        }
                    }
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("ip_network_table", |b| {
        b.iter_batched(
            || {
                let mut t = IpNetworkTable::new();
                for (p, v) in int.iter() {
                    t.insert(p, *v);
                }
                t
            },
            |mut t| {
                for c in &stream {
                    match *c {
                        Change::Insert(p, v) => {
                            t.insert(to_int(p), v);
                        }
                        Change::Remove(p) => {
                            t.remove(to_int(p));
                        }
                    }
                }
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn route(c: &mut Bench) {
    let v4 = load::<Ipv4Addr>(
        "ipv4",
        "ris-20260511-as3333-ipv4.prefixes.txt.gz",
        "ris-20260511-as3333-ipv4.updates.txt.gz",
        gen4,
    );
    let mut rng = Rng(99);
    let r4: Vec<Ipv4Addr> = (0..ADDRS)
        .map(|_| Ipv4Addr::from_bits(rng.next() as u32))
        .collect();
    let mut stream_rng = Rng(100);
    let s4: Vec<Ipv4Addr> = (0..stream_len())
        .map(|_| Ipv4Addr::from_bits(stream_rng.next() as u32))
        .collect();
    bench_family(
        c,
        &v4,
        r4,
        s4,
        |p| p,
        |p| {
            ip_network::Ipv4Network::new(p.network(), p.prefix_len())
                .unwrap()
                .into()
        },
        |t, a| t.longest_match_ipv4(a).map(|(_, v)| *v),
    );
    drop(v4);
    let v6 = load::<Ipv6Addr>(
        "ipv6",
        "ris-20260511-as3333-ipv6.prefixes.txt.gz",
        "ris-20260511-as3333-ipv6.updates.txt.gz",
        gen6,
    );
    // Random IPv6 addresses are drawn from 2000::/3, the global unicast space.
    let r6: Vec<Ipv6Addr> = (0..ADDRS)
        .map(|_| Ipv6Addr::from_bits((rng.u128() >> 3) | (1 << 125)))
        .collect();
    let s6: Vec<Ipv6Addr> = (0..stream_len())
        .map(|_| Ipv6Addr::from_bits((stream_rng.u128() >> 3) | (1 << 125)))
        .collect();
    bench_family(
        c,
        &v6,
        r6,
        s6,
        |p| p,
        |p| {
            ip_network::Ipv6Network::new(p.network(), p.prefix_len())
                .unwrap()
                .into()
        },
        |t, a| t.longest_match_ipv6(a).map(|(_, v)| *v),
    );
}

criterion_group! {
    name = benches;
    config = common::criterion()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = route
}
criterion_main!(benches);
