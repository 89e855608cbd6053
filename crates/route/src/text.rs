//! Route tables and update streams as text: one entry per line, as the `route` tool and the
//! benchmarks read them.
//!
//! - A table line is `<prefix>` or `<prefix> <next-hop>`, IPv4 and IPv6 mixed.
//! - An update line is `A <prefix> [<next-hop>]` (announce) or `W <prefix>` (withdraw), with an
//!   optional leading timestamp (`<unix-time> a|w <prefix> [<next-hop>]`, the Poptrie test
//!   format); the letter is case-insensitive.
//!
//! Blank lines and lines starting with `#` are skipped. Prefixes are returned in canonical
//! form (host bits cleared).

use ipnet::IpNet;

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TextError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// One route of a table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLine<'a> {
    /// The prefix, canonical.
    pub prefix: IpNet,
    /// The next-hop word, if the line has one.
    pub next_hop: Option<&'a str>,
}

/// One change of an update stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update<'a> {
    /// Add or replace the route of a prefix.
    Announce {
        /// The prefix, canonical.
        prefix: IpNet,
        /// The next-hop word, if the line has one.
        next_hop: Option<&'a str>,
    },
    /// Remove the route of a prefix.
    Withdraw(IpNet),
}

fn parse_prefix(word: &str, line: usize) -> Result<IpNet, TextError> {
    word.parse::<IpNet>()
        .map(|p| p.trunc())
        .map_err(|_| TextError {
            line,
            reason: format!("{word:?} is not a prefix (a.b.c.d/len or x::/len)"),
        })
}

fn content(raw: &str) -> Option<&str> {
    let t = raw.trim();
    (!t.is_empty() && !t.starts_with('#')).then_some(t)
}

/// Parses a table: `<prefix> [<next-hop>]` per line.
pub fn parse_table(text: &str) -> impl Iterator<Item = Result<TableLine<'_>, TextError>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = content(raw)?;
        let mut words = line.split_whitespace();
        let prefix = words.next()?;
        let next_hop = words.next();
        Some(if words.next().is_some() {
            Err(TextError {
                line: i + 1,
                reason: "expected `<prefix>` or `<prefix> <next-hop>`".into(),
            })
        } else {
            parse_prefix(prefix, i + 1).map(|prefix| TableLine { prefix, next_hop })
        })
    })
}

/// Parses an update stream: `[<time>] A|W <prefix> [<next-hop>]` per line.
pub fn parse_updates(text: &str) -> impl Iterator<Item = Result<Update<'_>, TextError>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = content(raw)?;
        let mut words = line.split_whitespace().peekable();
        // An optional leading timestamp.
        if words
            .peek()
            .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
        {
            words.next();
        }
        let err = |reason: &str| TextError {
            line: i + 1,
            reason: reason.into(),
        };
        let op = words.next();
        let Some(prefix) = words.next() else {
            return Some(Err(err(
                "expected `A <prefix> [<next-hop>]` or `W <prefix>`",
            )));
        };
        let next_hop = words.next();
        if words.next().is_some() {
            return Some(Err(err("too many words")));
        }
        Some(match op {
            Some("A" | "a") => {
                parse_prefix(prefix, i + 1).map(|prefix| Update::Announce { prefix, next_hop })
            }
            Some("W" | "w") => parse_prefix(prefix, i + 1).map(Update::Withdraw),
            _ => Err(err("expected `A` (announce) or `W` (withdraw)")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let t = "# comment\n10.1.2.3/16\n\n2001:db8::/32 fe80::1\n";
        let v: Vec<_> = parse_table(t).collect::<Result<_, _>>().unwrap();
        assert_eq!(v[0].prefix.to_string(), "10.1.0.0/16");
        assert_eq!(v[0].next_hop, None);
        assert_eq!(v[1].next_hop, Some("fe80::1"));
        let e = parse_table("10.0.0.0/8\n10.0.0.0/33\n")
            .nth(1)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_table("1.2.3.0/24 a b").next().unwrap().is_err());
    }

    #[test]
    fn updates() {
        let t = "A 1.2.3.0/24\nW 2001:db8::/32\n1418774413 a 202.70.88.0/21 195.66.226.74\n";
        let v: Vec<_> = parse_updates(t).collect::<Result<_, _>>().unwrap();
        assert!(matches!(v[0], Update::Announce { next_hop: None, .. }));
        assert_eq!(v[1], Update::Withdraw("2001:db8::/32".parse().unwrap()));
        assert!(matches!(
            v[2],
            Update::Announce {
                next_hop: Some("195.66.226.74"),
                ..
            }
        ));
        assert_eq!(
            parse_updates("X 1.2.3.0/24")
                .next()
                .unwrap()
                .unwrap_err()
                .line,
            1
        );
        assert!(parse_updates("A").next().unwrap().is_err());
    }
}
