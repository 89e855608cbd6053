//! Where in the config text an error is: line and column from a byte offset or a key.

use super::ConfigError;

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) fn at(
    file: &str,
    text: &str,
    span: std::ops::Range<usize>,
    key: &str,
    message: String,
) -> ConfigError {
    let (line, column) = line_col(text, span.start);
    ConfigError {
        file: file.into(),
        line,
        column,
        key: key.into(),
        message,
    }
}

pub(super) fn toml_err(file: &str, text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
    ConfigError {
        file: file.into(),
        line,
        column,
        key: if key.is_empty() || key == "." {
            "-".into()
        } else {
            key.into()
        },
        message: e.message().trim().to_string(),
    }
}

/// Best effort: the line where the last segment of `key` is assigned, for errors found after
/// parsing on values that carry no span.
pub(super) fn find_line(text: &str, key: &str) -> usize {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(last) && l[last.len()..].trim_start().starts_with('=')
        })
        .map_or(0, |i| i + 1)
}
