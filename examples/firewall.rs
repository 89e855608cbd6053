//! The firewall tool: check rule files, classify ClassBench traces, filter pcap captures.
//!
//! ```text
//! cargo run --release --no-default-features --features firewall --example firewall -- check rules.txt
//! cargo run --release --no-default-features --features firewall --example firewall -- \
//!     classify --rules acl1_10k --format classbench --trace acl1_10k_trace > matches.txt
//! cargo run --release --no-default-features --features firewall --example firewall -- \
//!     filter --rules rules.txt --in in.pcap --accept out.pcap --drop dropped.pcap
//! ```
//!
//! Rule and trace files may be gzip-compressed (`.gz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufWriter, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant as WallClock;

use clap::{Parser, Subcommand, ValueEnum};
use gatekit::firewall::classify::{ClassRule, Classifier, FieldBox, Key, LinearClassifier};
use gatekit::firewall::{Firewall, ParseError, Route, Source, Verdict, classbench, iptables};
use gatekit::packet::{Instant, Meta, PacketBuf, PktBuf, PortId};
use gatekit_testkit::{LinkType, PcapSink};

#[derive(Parser)]
#[command(about = "Check firewall rules, classify traces, filter captures")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Iptables,
    Classbench,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a rule file; errors are printed like a compiler's.
    Check {
        rules: PathBuf,
        #[arg(long, value_enum, default_value = "iptables")]
        format: Format,
    },
    /// Print, for each trace header, the 0-based index of the first matching rule or -1.
    Classify {
        #[arg(long)]
        rules: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        #[arg(long)]
        trace: PathBuf,
        /// Also run the linear scan and report any header where the two differ.
        #[arg(long)]
        verify: bool,
    },
    /// Run the stateful engine over a capture (raw IP or Ethernet), forwarding from
    /// --in-iface to --out-iface.
    Filter {
        #[arg(long)]
        rules: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        accept: PathBuf,
        #[arg(long)]
        drop: PathBuf,
        #[arg(long, default_value = "eth1")]
        in_iface: String,
        #[arg(long, default_value = "eth0")]
        out_iface: String,
        /// Address of the output interface (for MASQUERADE).
        #[arg(long)]
        out_addr: Option<Ipv4Addr>,
    },
}

fn read_text(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut s = String::new();
    let r = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f).read_to_string(&mut s)
    } else {
        std::io::BufReader::new(f).read_to_string(&mut s)
    };
    r.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(s)
}

/// `file:line:col: error: ...`, the line, and a caret under the column.
fn show_parse_error(path: &Path, text: &str, e: &ParseError) -> String {
    let line = text.lines().nth(e.line as usize - 1).unwrap_or("");
    let pad = " ".repeat(e.column.saturating_sub(1) as usize);
    format!(
        "{}:{}:{}: error: expected {}, found `{}`\n  | {line}\n  | {pad}^",
        path.display(),
        e.line,
        e.column,
        e.expected,
        e.found
    )
}

/// Rules of either format as five-field classifier rules, in file order.
fn class_rules(path: &Path, text: &str, format: Format) -> Result<Vec<ClassRule>, String> {
    match format {
        Format::Classbench => {
            classbench::parse_rules(text).map_err(|e| show_parse_error(path, text, &e))
        }
        Format::Iptables => {
            let rs = iptables::parse(text).map_err(|e| show_parse_error(path, text, &e))?;
            let mut rules: Vec<(u32, FieldBox)> = Vec::new();
            for t in [&rs.filter, &rs.nat] {
                for c in &t.chains {
                    for r in c.rules.iter().filter(|r| r.origin.line > 0) {
                        rules.push((r.origin.line, FieldBox::from_matches(&r.matches)));
                    }
                }
            }
            rules.sort_by_key(|(line, _)| *line);
            Ok(rules
                .into_iter()
                .enumerate()
                .map(|(i, (_, fields))| ClassRule::new(fields, i as u32, i as u32))
                .collect())
        }
    }
}

fn check(path: &Path, format: Format) -> Result<(), String> {
    let text = read_text(path)?;
    match format {
        Format::Classbench => {
            let rules = class_rules(path, &text, format)?;
            Classifier::new(rules.iter().copied()).map_err(|e| e.to_string())?;
            eprintln!("{}: {} rules, ok", path.display(), rules.len());
        }
        Format::Iptables => {
            let rs = iptables::parse(&text).map_err(|e| show_parse_error(path, &text, &e))?;
            let fw = Firewall::new(&rs).map_err(|e| format!("{}: error: {e}", path.display()))?;
            eprintln!(
                "{}: {} rules, ok",
                path.display(),
                fw.handle().current().len()
            );
        }
    }
    Ok(())
}

fn classify(rules: &Path, format: Format, trace: &Path, verify: bool) -> Result<(), String> {
    let text = read_text(rules)?;
    let rules_v = class_rules(rules, &text, format)?;
    let t0 = WallClock::now();
    let tree = Classifier::new(rules_v.iter().copied()).map_err(|e| e.to_string())?;
    let built = t0.elapsed();
    let trace_text = read_text(trace)?;
    let keys: Vec<Key> = classbench::parse_trace(&trace_text)
        .map_err(|e| show_parse_error(trace, &trace_text, &e))?;
    let mut out = vec![None; keys.len()];
    let t1 = WallClock::now();
    for (k, o) in keys.chunks(1024).zip(out.chunks_mut(1024)) {
        tree.lookup_batch(k, o);
    }
    let took = t1.elapsed();
    let stdout = std::io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    for o in &out {
        match o {
            Some(i) => writeln!(w, "{i}"),
            None => writeln!(w, "-1"),
        }
        .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    eprintln!(
        "{} rules (built in {:.1} ms, {:.2} MiB), {} headers in {:.1} ms: {:.2} Mpps",
        rules_v.len(),
        built.as_secs_f64() * 1e3,
        tree.memory_bytes() as f64 / f64::from(1 << 20),
        keys.len(),
        took.as_secs_f64() * 1e3,
        keys.len() as f64 / took.as_secs_f64() / 1e6
    );
    if verify {
        let lin = LinearClassifier::new(rules_v.iter().copied()).map_err(|e| e.to_string())?;
        let t2 = WallClock::now();
        let bad = keys
            .iter()
            .zip(&out)
            .filter(|(k, o)| lin.lookup(k) != **o)
            .count();
        let lt = t2.elapsed();
        eprintln!(
            "linear scan: {:.3} Mpps; {} of {} headers differ",
            keys.len() as f64 / lt.as_secs_f64() / 1e6,
            bad,
            keys.len()
        );
        if bad > 0 {
            return Err("the classifier and the linear scan disagree".into());
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn filter(
    rules: &Path,
    input: &Path,
    accept: &Path,
    drop: &Path,
    in_iface: &str,
    out_iface: &str,
    out_addr: Option<Ipv4Addr>,
) -> Result<(), String> {
    let text = read_text(rules)?;
    let rs = iptables::parse(&text).map_err(|e| show_parse_error(rules, &text, &e))?;
    let mut fw = Firewall::new(&rs).map_err(|e| format!("{}: error: {e}", rules.display()))?;
    let (pin, pout) = (PortId(0), PortId(1));
    fw.set_iface(pin, in_iface, None);
    fw.set_iface(pout, out_iface, out_addr);
    let f = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(f))
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let link = reader.header().datalink;
    let acc = PcapSink::create(accept, LinkType::RawIp)
        .map_err(|e| format!("{}: {e}", accept.display()))?;
    let drp =
        PcapSink::create(drop, LinkType::RawIp).map_err(|e| format!("{}: {e}", drop.display()))?;
    let mut route = |_dst: std::net::IpAddr| Route::Out(pout);
    let (mut n, mut skipped) = (0u64, 0u64);
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| format!("{}: {e}", input.display()))?;
        let now = Instant::from_nanos(pkt.timestamp.as_nanos() as u64);
        let ip = match link {
            pcap_file::DataLink::ETHERNET => {
                let mut m = Meta::default();
                match (m.parse_ethernet(&pkt.data), m.l3) {
                    (true, Some(l3)) => &pkt.data[usize::from(l3)..],
                    _ => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            _ => &pkt.data[..],
        };
        n += 1;
        let mut buf = PktBuf::from_slice(ip, 64, 600);
        let mut meta = Meta::new(pin, now);
        match fw.process(&mut buf, &mut meta, Source::Port(pin), &mut route, now) {
            Verdict::Accept(_) => acc.write(now, buf.data()),
            Verdict::Drop(_) | Verdict::Reject => drp.write(now, ip),
        }
        .map_err(|e| e.to_string())?;
    }
    acc.flush().map_err(|e| e.to_string())?;
    drp.flush().map_err(|e| e.to_string())?;
    let s = fw.stats();
    eprintln!(
        "{n} packets: {} accepted ({} translated), {} rejected, {} dropped {:?}; {} flows; {} non-IP frames skipped",
        s.accepted,
        s.translated,
        s.rejected,
        fw.drops().total(),
        fw.drops().iter().collect::<Vec<_>>(),
        fw.conntrack().len(),
        skipped
    );
    for e in fw.drain_log() {
        eprintln!("log {}{:?} line {}", e.prefix, e.tuple, e.line);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Check { rules, format } => check(&rules, format),
        Cmd::Classify {
            rules,
            format,
            trace,
            verify,
        } => classify(&rules, format, &trace, verify),
        Cmd::Filter {
            rules,
            input,
            accept,
            drop,
            in_iface,
            out_iface,
            out_addr,
        } => filter(
            &rules, &input, &accept, &drop, &in_iface, &out_iface, out_addr,
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
