//! `route`: longest-prefix-match lookups, update streams and lookup benchmarks on real tables.
//!
//! ```text
//! cargo run --release --no-default-features --features route --example route -- \
//!     lookup --table table.txt --addrs addrs.txt
//! cargo run --release --no-default-features --features route --example route -- \
//!     apply --table ris-ipv4.prefixes.txt.gz --updates ris-ipv4.updates.txt.gz
//! cargo run --release --no-default-features --features route --example route -- \
//!     bench --table ris-ipv4.prefixes.txt.gz
//! ```
//!
//! Tables hold `<prefix>` or `<prefix> <next-hop>` per line, update streams `A <prefix>` /
//! `W <prefix>` per line; files ending in `.gz` are decompressed. `lookup` prints the matched
//! prefix of each address (or `none`) on stdout; everything else goes to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gatekit_route::text::{Update, parse_table, parse_updates};
use gatekit_route::{Address, Change, Fib, FibTable, IpNet, Lpm, NextHopId};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Longest-prefix-match lookups, updates and benchmarks with gatekit-route")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the longest matching prefix of every address (or `none`).
    Lookup {
        /// Routes: `<prefix>` or `<prefix> <next-hop>` per line.
        #[arg(long)]
        table: PathBuf,
        /// Addresses, one per line.
        #[arg(long)]
        addrs: PathBuf,
    },
    /// Applies an update stream to a table and reports the update rate.
    Apply {
        /// Routes: `<prefix>` or `<prefix> <next-hop>` per line.
        #[arg(long)]
        table: PathBuf,
        /// Updates: `A <prefix> [<next-hop>]` or `W <prefix>` per line.
        #[arg(long)]
        updates: PathBuf,
        /// Updates per commit (each commit publishes a new table to readers).
        #[arg(long, default_value_t = 65536)]
        batch: usize,
        /// Run no reader thread during the updates.
        #[arg(long)]
        no_reader: bool,
    },
    /// Measures lookup rates on random and on table-derived addresses.
    Bench {
        /// Routes: `<prefix>` or `<prefix> <next-hop>` per line.
        #[arg(long)]
        table: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
}

fn read_text(path: &Path) -> Result<String> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .with_context(|| format!("decompressing {}", path.display()))?;
        Ok(s)
    } else {
        String::from_utf8(raw).with_context(|| format!("{} is not UTF-8", path.display()))
    }
}

/// Next hops by name; a table without next hops gets synthetic ones (see `synthetic`).
#[derive(Default)]
struct NextHops(HashMap<String, NextHopId>);

impl NextHops {
    fn id(&mut self, prefix: &IpNet, word: Option<&str>) -> NextHopId {
        match word {
            Some(w) => {
                let n = self.0.len() as NextHopId;
                *self.0.entry(w.to_string()).or_insert(n)
            }
            None => synthetic(prefix),
        }
    }
}

/// A next hop for tables that carry none: one of 64, picked by a hash of the prefix (so an
/// announce of a known prefix keeps its next hop, as a re-announcement with new attributes
/// does on a real router).
fn synthetic(prefix: &IpNet) -> NextHopId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes: Vec<u8> = match prefix {
        IpNet::V4(p) => p.addr().octets().to_vec(),
        IpNet::V6(p) => p.addr().octets().to_vec(),
    };
    for b in bytes.into_iter().chain([prefix.prefix_len()]) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % 64) as NextHopId
}

struct Loaded {
    prefixes: Vec<IpNet>,
    v4: Fib<Ipv4Addr>,
    v6: Fib<Ipv6Addr>,
    build: Duration,
}

/// Builds both FIBs; with `by_index` each prefix's value is its index in `prefixes`.
fn load(path: &Path, by_index: bool) -> Result<Loaded> {
    let text = read_text(path)?;
    let mut lines = Vec::new();
    for l in parse_table(&text) {
        lines.push(l.with_context(|| format!("in {}", path.display()))?);
    }
    let mut hops = NextHops::default();
    let values: Vec<NextHopId> = if by_index {
        (0..lines.len() as NextHopId).collect()
    } else {
        lines
            .iter()
            .map(|l| hops.id(&l.prefix, l.next_hop))
            .collect()
    };
    let start = Instant::now();
    let (mut v4, mut v6) = (Fib::new(), Fib::new());
    for (l, &v) in lines.iter().zip(&values) {
        match l.prefix {
            IpNet::V4(p) => v4.insert(p, v)?,
            IpNet::V6(p) => v6.insert(p, v)?,
        };
    }
    v4.commit();
    v6.commit();
    let build = start.elapsed();
    Ok(Loaded {
        prefixes: lines.iter().map(|l| l.prefix).collect(),
        v4,
        v6,
        build,
    })
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report_memory(l: &Loaded) {
    for (name, n, mem, shape) in [
        (
            "IPv4",
            l.v4.len(),
            l.v4.table().memory(),
            l.v4.table().shape(),
        ),
        (
            "IPv6",
            l.v6.len(),
            l.v6.table().memory(),
            l.v6.table().shape(),
        ),
    ] {
        if n > 0 {
            eprintln!(
                "{name}: {n} prefixes, {:.2} MiB ({:.2} bytes/prefix; {} nodes, {} leaves)",
                mib(mem),
                mem as f64 / n as f64,
                shape.nodes,
                shape.leaves,
            );
        }
    }
}

fn lookup(table: &Path, addrs: &Path) -> Result<()> {
    let l = load(table, true)?;
    eprintln!("built in {:.1} ms", l.build.as_secs_f64() * 1e3);
    report_memory(&l);
    let text = read_text(addrs)?;
    let (mut a4, mut a6) = (Vec::new(), Vec::new());
    let mut order = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match t.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                order.push(false);
                a4.push(a);
            }
            Ok(IpAddr::V6(a)) => {
                order.push(true);
                a6.push(a);
            }
            Err(_) => bail!(
                "{}: line {}: {t:?} is not an IP address",
                addrs.display(),
                i + 1
            ),
        }
    }
    let (t4, t6) = (l.v4.table(), l.v6.table());
    let (mut r4, mut r6) = (vec![0; a4.len()], vec![0; a6.len()]);
    let start = Instant::now();
    t4.lookup_batch(&a4, &mut r4);
    t6.lookup_batch(&a6, &mut r6);
    let took = start.elapsed();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (mut i4, mut i6) = (r4.iter(), r6.iter());
    for v6 in order {
        let id = if v6 { i6.next() } else { i4.next() };
        match id.and_then(|&id| l.prefixes.get(id as usize)) {
            Some(p) => writeln!(out, "{p}")?,
            None => writeln!(out, "none")?,
        }
    }
    out.flush()?;
    let n = a4.len() + a6.len();
    eprintln!(
        "{n} lookups in {:.3} ms: {:.1} M lookups/s (batched)",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64().max(1e-9) / 1e6
    );
    Ok(())
}

fn apply(table: &Path, updates: &Path, batch: usize, no_reader: bool) -> Result<()> {
    let mut l = load(table, false)?;
    eprintln!("table built in {:.1} ms", l.build.as_secs_f64() * 1e3);
    report_memory(&l);
    let text = read_text(updates)?;
    let mut ups = Vec::new();
    for u in parse_updates(&text) {
        ups.push(u.with_context(|| format!("in {}", updates.display()))?);
    }
    let mut hops = NextHops::default();
    // Readers keep looking up (table-derived addresses) while the writer applies updates.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let reader = (!no_reader).then(|| {
        let (r4, stop, done) = (l.v4.reader(), stop.clone(), done.clone());
        let addrs: Vec<Ipv4Addr> = l
            .prefixes
            .iter()
            .filter_map(|p| match p {
                IpNet::V4(p) => Some(p.addr()),
                IpNet::V6(_) => None,
            })
            .take(4096)
            .collect();
        std::thread::spawn(move || {
            let mut out = vec![0; addrs.len()];
            while !stop.load(Ordering::Relaxed) && !addrs.is_empty() {
                r4.load().lookup_batch(&addrs, &mut out);
                done.fetch_add(addrs.len() as u64, Ordering::Relaxed);
            }
        })
    });
    let start = Instant::now();
    let cpu0 = cpu_ns(start);
    let (mut commits, mut slots) = (0, 0);
    let (mut c4, mut c6) = (Vec::new(), Vec::new());
    for chunk in ups.chunks(batch.max(1)) {
        // Each commit's changes go in as one batch per family (`Fib::apply`).
        c4.clear();
        c6.clear();
        for u in chunk {
            match *u {
                Update::Announce { prefix, next_hop } => {
                    let nh = hops.id(&prefix, next_hop);
                    match prefix {
                        IpNet::V4(p) => c4.push(Change::Insert(p, nh)),
                        IpNet::V6(p) => c6.push(Change::Insert(p, nh)),
                    }
                }
                Update::Withdraw(IpNet::V4(p)) => c4.push(Change::Remove(p)),
                Update::Withdraw(IpNet::V6(p)) => c6.push(Change::Remove(p)),
            }
        }
        l.v4.apply(&c4)?;
        l.v6.apply(&c6)?;
        slots += l.v4.commit().slots_rebuilt + l.v6.commit().slots_rebuilt;
        commits += 1;
    }
    let took = start.elapsed();
    let cpu = Duration::from_nanos(cpu_ns(start) - cpu0);
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = reader {
        r.join().ok();
    }
    eprintln!(
        "{} updates in {:.1} ms, {:.1} ms of CPU ({commits} commits of up to {batch}, {slots} slots rebuilt): {:.2} M updates/s wall, {:.2} M per CPU-second",
        ups.len(),
        took.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
        ups.len() as f64 / took.as_secs_f64().max(1e-9) / 1e6,
        ups.len() as f64 / cpu.as_secs_f64().max(1e-9) / 1e6
    );
    if !no_reader {
        let n = done.load(Ordering::Relaxed);
        eprintln!(
            "a reader thread did {:.1} M lookups meanwhile ({:.1} M/s)",
            n as f64 / 1e6,
            n as f64 / took.as_secs_f64().max(1e-9) / 1e6
        );
    }
    report_memory(&l);
    verify(&l)
}

/// Checks the compiled tables against a plain LPM table on addresses inside every prefix.
fn verify(l: &Loaded) -> Result<()> {
    fn family<A: Address>(fib: &Fib<A>) -> usize {
        let mut oracle = Lpm::<A, NextHopId>::new();
        for (p, nh) in fib.iter() {
            oracle.insert(p, nh);
        }
        let table: Arc<FibTable<A>> = fib.table();
        let mut bad = 0;
        for (p, _) in fib.iter() {
            let (key, len) = A::prefix_parts(&p);
            for host in [0u128, u128::MAX >> len.min(127)] {
                let a = A::from_key(key | host);
                if table.lookup(a) != oracle.lookup(a).map(|(_, v)| *v) {
                    bad += 1;
                }
            }
        }
        bad
    }
    let bad = family(&l.v4) + family(&l.v6);
    if bad > 0 {
        bail!("{bad} lookups disagree with the reference table");
    }
    eprintln!("verified: every prefix's first and last address agree with a plain LPM table");
    Ok(())
}

/// xorshift64*: the same addresses on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), so that rates stay
/// meaningful on a shared, overloaded machine; wall time where that is not available.
fn cpu_ns(wall: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos() as u64)
}

/// Million lookups per CPU-second.
fn rate<A: Address>(t: &FibTable<A>, addrs: &[A], secs: f64, batched: bool) -> f64 {
    let mut out = vec![0; addrs.len()];
    let start = Instant::now();
    let cpu0 = cpu_ns(start);
    let mut n = 0u64;
    let mut sink = 0u32;
    while start.elapsed().as_secs_f64() < secs {
        if batched {
            t.lookup_batch(addrs, &mut out);
            sink ^= out[addrs.len() / 2];
        } else {
            for &a in addrs {
                sink ^= t.lookup(a).unwrap_or(0);
            }
        }
        n += addrs.len() as u64;
    }
    std::hint::black_box(sink);
    n as f64 / ((cpu_ns(start) - cpu0) as f64 / 1e9) / 1e6
}

fn baseline<A: Address>(
    pt: &prefix_trie::PrefixMap<A::Prefix, NextHopId>,
    addrs: &[A],
    secs: f64,
) -> f64
where
    A::Prefix: prefix_trie::Prefix,
{
    let start = Instant::now();
    let cpu0 = cpu_ns(start);
    let (mut n, mut sink) = (0u64, 0u32);
    while start.elapsed().as_secs_f64() < secs {
        for &a in addrs {
            let host = A::make_prefix(a.to_key(), A::BITS);
            sink ^= pt.get_lpm(&host).map_or(0, |(_, v)| *v);
        }
        n += addrs.len() as u64;
    }
    std::hint::black_box(sink);
    n as f64 / ((cpu_ns(start) - cpu0) as f64 / 1e9) / 1e6
}

fn bench_family<A: Address>(name: &str, fib: &Fib<A>, random: Vec<A>, secs: f64)
where
    A::Prefix: prefix_trie::Prefix,
{
    if fib.is_empty() {
        return;
    }
    let mut rng = Rng(0x1234_5678);
    let derived: Vec<A> = {
        let prefixes: Vec<A::Prefix> = fib.iter().map(|(p, _)| p).collect();
        (0..random.len())
            .map(|_| {
                let p = prefixes[(rng.next() as usize) % prefixes.len()];
                let (key, len) = A::prefix_parts(&p);
                let host = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> len.min(127);
                A::from_key(key | if len >= 128 { 0 } else { host })
            })
            .collect()
    };
    let t = fib.table();
    // The baseline, in the same run: prefix-trie's PrefixMap with the same routes.
    let mut pt: prefix_trie::PrefixMap<A::Prefix, NextHopId> = prefix_trie::PrefixMap::new();
    for (p, nh) in fib.iter() {
        pt.insert(p, nh);
    }
    eprintln!(
        "{name}: prefix-trie holds the same routes in {:.2} MiB",
        mib(pt.mem_size())
    );
    for (mix, addrs) in [("random", &random), ("table-derived", &derived)] {
        let single = rate(&t, addrs, secs, false);
        let batched = rate(&t, addrs, secs, true);
        let base = baseline(&pt, addrs, secs);
        eprintln!(
            "{name} {mix:>13}: {single:7.1} M lookups/s single, {batched:7.1} M/s batched; prefix-trie {base:6.1} M/s ({:.1}x / {:.1}x) [per CPU-second]",
            single / base,
            batched / base
        );
    }
}

fn bench(table: &Path, secs: f64) -> Result<()> {
    let l = load(table, false)?;
    eprintln!(
        "built in {:.1} ms (next hops from the file, or 64 synthetic ones)",
        l.build.as_secs_f64() * 1e3
    );
    report_memory(&l);
    let by_index = load(table, true)?;
    eprintln!("with a distinct value per prefix (the matched prefix's index):");
    report_memory(&by_index);
    const N: usize = 1 << 20;
    let mut rng = Rng(0x9e37_79b9);
    let r4: Vec<Ipv4Addr> = (0..N)
        .map(|_| Ipv4Addr::from_bits(rng.next() as u32))
        .collect();
    // Random IPv6 addresses in 2000::/3, the global unicast space.
    let r6: Vec<Ipv6Addr> = (0..N)
        .map(|_| {
            let bits = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3;
            Ipv6Addr::from_bits(bits | (1 << 125))
        })
        .collect();
    bench_family("IPv4", &l.v4, r4, secs);
    bench_family("IPv6", &l.v6, r6, secs);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Lookup { table, addrs } => lookup(&table, &addrs),
        Cmd::Apply {
            table,
            updates,
            batch,
            no_reader,
        } => apply(&table, &updates, batch, no_reader),
        Cmd::Bench { table, secs } => bench(&table, secs),
    }
}
