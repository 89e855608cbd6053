//! Errors of the front ends and of rule-set validation.

use core::fmt;

/// A rule text that does not parse: where, what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in bytes).
    pub column: u32,
    /// What the parser expected there.
    pub expected: String,
    /// What it found.
    pub found: String,
}

impl ParseError {
    pub(crate) fn new(line: u32, column: u32, expected: &str, found: &str) -> ParseError {
        ParseError {
            line,
            column,
            expected: expected.to_owned(),
            found: found.to_owned(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: expected {}, found `{}`",
            self.line, self.column, self.expected, self.found
        )
    }
}

/// A rule set that parses but cannot run: a jump to a missing chain, a NAT action in the
/// filter table, a set of the wrong kind, a loop of jumps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// A jump or goto names a chain that does not exist.
    #[error("line {line}: chain `{chain}` jumps to `{target}`, which does not exist")]
    NoSuchChain {
        /// Line of the rule.
        line: u32,
        /// The chain holding the rule.
        chain: String,
        /// The missing chain.
        target: String,
    },
    /// A rule names a set that is not declared, or one of the wrong kind.
    #[error("line {line}: set `{set}` {problem}")]
    BadSet {
        /// Line of the rule.
        line: u32,
        /// The set.
        set: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An action that the table or hook does not allow (DNAT in postrouting, SNAT in filter).
    #[error("line {line}: {action} is not allowed in chain `{chain}` ({why})")]
    ActionNotAllowed {
        /// Line of the rule.
        line: u32,
        /// The chain.
        chain: String,
        /// The action.
        action: &'static str,
        /// The rule that forbids it.
        why: &'static str,
    },
    /// Jumps form a loop through this chain.
    #[error("chain `{chain}` is reached from itself through jumps")]
    Loop {
        /// A chain on the loop.
        chain: String,
    },
    /// Two chains of a table share a name, or two sets do.
    #[error("`{name}` is declared twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A rule whose addresses do not fit: IPv4 and IPv6 in one rule, or IPv6 in the nat
    /// table (NAT is IPv4 only).
    #[error("line {line}: {problem}")]
    Family {
        /// Line of the rule.
        line: u32,
        /// What is wrong.
        problem: &'static str,
    },
    /// A match value that cannot be (an empty range, a pattern longer than its window).
    #[error("line {line}: {problem}")]
    BadMatch {
        /// Line of the rule.
        line: u32,
        /// What is wrong.
        problem: String,
    },
}

/// Any error loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The text did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The rules did not validate.
    #[error(transparent)]
    Validate(#[from] ValidateError),
}
