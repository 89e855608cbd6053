//! The ClassBench rule and trace formats.
//!
//! A rule line is `@src/len<TAB>dst/len<TAB>sp_lo : sp_hi<TAB>dp_lo : dp_hi<TAB>0xPP/0xMM`,
//! optionally followed by a TCP-flags field `0xFFFF/0xMMMM` and more columns, which are
//! read and ignored: classification here is on the five fields. The 0-based line number
//! is the priority (lower wins). A trace line is `src dst sport dport proto [...]`, decimal,
//! tab- or space-separated.

use core::net::Ipv4Addr;

use crate::classify::{ClassRule, FieldBox, Key};
use crate::error::ParseError;
use crate::ir::{AddrRange, PortRange};

/// Parses a ClassBench rule file. Blank lines are skipped but still count for line numbers
/// in errors; rule `i` (0-based, among rules) gets priority and id `i`.
pub fn parse_rules(text: &str) -> Result<Vec<ClassRule>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = parse_rule_line(line, n as u32 + 1)?;
        let i = out.len() as u32;
        out.push(ClassRule::new(fields, i, i));
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: u32,
}

impl<'a> Cursor<'a> {
    fn err(&self, expected: &str) -> ParseError {
        let found = self.s[self.pos..]
            .split_whitespace()
            .next()
            .unwrap_or("end of line")
            .to_owned();
        ParseError::new(self.line, self.pos as u32 + 1, expected, &found)
    }
    fn skip_ws(&mut self) {
        while self.s[self.pos..].starts_with([' ', '\t']) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }
    /// A run of characters allowed by `ok`.
    fn token(&mut self, ok: impl Fn(char) -> bool) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.s[start..];
        let len = rest.find(|c: char| !ok(c)).unwrap_or(rest.len());
        self.pos += len;
        &self.s[start..start + len]
    }
    fn prefix(&mut self) -> Result<AddrRange, ParseError> {
        let save = self.pos;
        let addr = self.token(|c| c.is_ascii_digit() || c == '.');
        let Ok(addr) = addr.parse::<Ipv4Addr>() else {
            self.pos = save;
            return Err(self.err("an IPv4 address"));
        };
        self.expect('/', "'/' and a prefix length")?;
        let save = self.pos;
        let len = self.token(|c| c.is_ascii_digit());
        match len
            .parse::<u8>()
            .ok()
            .and_then(|l| AddrRange::prefix(addr, l))
        {
            Some(r) => Ok(r),
            None => {
                self.pos = save;
                Err(self.err("a prefix length 0..=32"))
            }
        }
    }
    fn port(&mut self) -> Result<u16, ParseError> {
        let save = self.pos;
        let t = self.token(|c| c.is_ascii_digit());
        t.parse::<u16>().map_err(|_| {
            self.pos = save;
            self.err("a port 0..=65535")
        })
    }
    fn port_range(&mut self) -> Result<PortRange, ParseError> {
        let save = self.pos;
        let lo = self.port()?;
        self.expect(':', "':' between the ends of a port range")?;
        let hi = self.port()?;
        if lo > hi {
            self.pos = save;
            return Err(self.err("a port range whose low end is not above its high end"));
        }
        Ok(PortRange { lo, hi })
    }
    fn hex(&mut self, max: u32) -> Result<u32, ParseError> {
        let save = self.pos;
        let t = self.token(|c| c.is_ascii_alphanumeric());
        let v = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .filter(|v| *v <= max);
        v.ok_or_else(|| {
            self.pos = save;
            self.err(if max == 0xff {
                "a hexadecimal byte like 0x06"
            } else {
                "a hexadecimal value like 0x0200"
            })
        })
    }
}

fn parse_rule_line(line: &str, n: u32) -> Result<FieldBox, ParseError> {
    let mut c = Cursor {
        s: line,
        pos: 0,
        line: n,
    };
    c.expect('@', "'@' at the start of a ClassBench rule")?;
    let src = c.prefix()?;
    let dst = c.prefix()?;
    let sport = c.port_range()?;
    let dport = c.port_range()?;
    let save = c.pos;
    let value = c.hex(0xff)?;
    c.expect('/', "'/' and a protocol mask")?;
    let mask = c.hex(0xff)?;
    let proto = match mask {
        0xff => Some(value as u8),
        0 => None,
        _ => {
            c.pos = save;
            return Err(c.err("a protocol mask of 0xFF or 0x00"));
        }
    };
    c.skip_ws();
    if !c.s[c.pos..].is_empty() {
        // The optional flags field: read so that garbage is reported, then ignored.
        c.hex(0xffff)?;
        c.expect('/', "'/' and a flags mask")?;
        c.hex(0xffff)?;
    }
    Ok(FieldBox::new(src, dst, sport, dport, proto))
}

/// Parses one trace line: `src dst sport dport proto`, extra columns ignored.
pub fn parse_trace_line(line: &str, n: u32) -> Result<Key, ParseError> {
    let mut key = [0u32; 5];
    let mut col = 1u32;
    let mut fields = line.split(['\t', ' ']).filter(|f| !f.is_empty());
    for (i, (what, max)) in [
        ("a source address as a decimal u32", u64::from(u32::MAX)),
        (
            "a destination address as a decimal u32",
            u64::from(u32::MAX),
        ),
        ("a source port 0..=65535", 65535),
        ("a destination port 0..=65535", 65535),
        ("a protocol number 0..=255", 255),
    ]
    .into_iter()
    .enumerate()
    {
        let f = fields.next();
        let v = f.and_then(|f| f.parse::<u64>().ok()).filter(|v| *v <= max);
        match v {
            Some(v) => key[i] = v as u32,
            None => {
                if let Some(f) = f {
                    col = (f.as_ptr() as usize - line.as_ptr() as usize) as u32 + 1;
                }
                return Err(ParseError::new(n, col, what, f.unwrap_or("end of line")));
            }
        }
    }
    Ok(key)
}

/// Parses a whole trace; blank lines are skipped.
pub fn parse_trace(text: &str) -> Result<Vec<Key>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_trace_line(l, n as u32 + 1))
        .collect()
}

/// A ClassBench-like rule set of `n` rules, deterministic in `seed`: prefix lengths, port
/// classes (wildcard, well-known, ephemeral, exact, arbitrary range) and protocols drawn in
/// proportions like the ACL and firewall seeds, with addresses clustered in a few hundred
/// networks so that rules overlap as real ones do. For benchmarks and tests when the
/// ClassBench data is absent.
pub fn generate(n: usize, seed: u64) -> Vec<ClassRule> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15 | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let nets: Vec<u32> = (0..256).map(|_| next() as u32).collect();
    let addr = |next: &mut dyn FnMut() -> u64| {
        let r = next() % 100;
        let len: u8 = match r {
            0..=14 => 0,
            15..=24 => 8 + (next() % 9) as u8,
            25..=54 => 24 + (next() % 5) as u8,
            55..=79 => 32,
            _ => 16 + (next() % 8) as u8,
        };
        let base = nets[(next() % nets.len() as u64) as usize] ^ ((next() as u32) & 0xffff);
        AddrRange::prefix(Ipv4Addr::from(base), len).unwrap_or(AddrRange::ANY)
    };
    let port = |next: &mut dyn FnMut() -> u64| match next() % 10 {
        0..=4 => PortRange::ANY,
        5 => PortRange { lo: 0, hi: 1023 },
        6 => PortRange {
            lo: 1024,
            hi: 65535,
        },
        7 => {
            let a = next() as u16;
            let b = next() as u16;
            PortRange {
                lo: a.min(b),
                hi: a.max(b),
            }
        }
        _ => PortRange::single([22, 25, 53, 80, 123, 443, 1521, 3306, 8080][(next() % 9) as usize]),
    };
    (0..n as u32)
        .map(|i| {
            let src = addr(&mut next);
            let dst = addr(&mut next);
            let sport = if next() % 4 == 0 {
                port(&mut next)
            } else {
                PortRange::ANY
            };
            let dport = port(&mut next);
            let proto = match next() % 10 {
                0..=5 => Some(6),
                6..=7 => Some(17),
                8 => Some(1),
                _ => None,
            };
            ClassRule::new(FieldBox::new(src, dst, sport, dport, proto), i, i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines() {
        let r = parse_rules("@237.73.3.4/32\t67.236.63.210/32\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n\n@0.0.0.0/0\t10.0.0.0/8\t0 : 65535\t0 : 65535\t0x00/0x00\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].fields.lo, [0xed49_0304, 0x43ec_3fd2, 0, 1711, 6]);
        assert_eq!(r[0].fields.hi, [0xed49_0304, 0x43ec_3fd2, 65535, 1711, 6]);
        assert_eq!(r[1].fields.lo, [0, 0x0a00_0000, 0, 0, 0]);
        assert_eq!(r[1].fields.hi[4], 255);
        assert_eq!((r[1].priority, r[1].id), (1, 1));
    }

    #[test]
    fn rule_errors_name_line_and_column() {
        let e = parse_rules("@1.2.3.4/32\t5.6.7.8/40\t0 : 1\t0 : 1\t0x06/0xFF").unwrap_err();
        assert_eq!((e.line, e.column), (1, 21));
        assert!(e.to_string().contains("prefix length"), "{e}");
        let e = parse_rules("\n@1.2.3.4/32\t5.6.7.8/8\t9 : 1\t0 : 1\t0x06/0xFF").unwrap_err();
        assert_eq!((e.line, e.column), (2, 22));
        let e = parse_rules("1.2.3.4/32").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        let e = parse_rules("@1.2.3.4/32 5.6.7.8/8 0 : 1 0 : 1 0x06/0x0F").unwrap_err();
        assert!(e.to_string().contains("0xFF or 0x00"), "{e}");
    }

    #[test]
    fn trace_lines() {
        let k = parse_trace_line("0\t4114795065\t0\t123\t6\t33559040\t238", 1).unwrap();
        assert_eq!(k, [0, 4_114_795_065, 0, 123, 6]);
        let e = parse_trace_line("1 2 3 70000 6", 9).unwrap_err();
        assert_eq!((e.line, e.column), (9, 7));
        assert!(parse_trace_line("1 2 3", 1).is_err());
    }
}
