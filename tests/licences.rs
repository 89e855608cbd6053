//! Every package in the dependency trees (the workspace's, and the fuzz workspace's) is under
//! a licence a dependent can take without obligations beyond notice: the licence expression
//! each declares must be satisfiable from the permissive licences below. A GPL-family or
//! WTFPL-only dependency, or one that declares no licence, fails the test with its name.
//!
//! Reads `cargo metadata` (the locked resolution, dev-dependencies included).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Licences a dependency may be under (SPDX identifiers). "A OR B" needs one of them, "A AND B"
/// both; an exception (`WITH LLVM-exception`) only loosens its licence.
const ALLOWED: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "0BSD",
    "Zlib",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "NCSA",
];

/// Whether an SPDX licence expression can be satisfied from [`ALLOWED`]. Understands `OR`,
/// `AND` (binding tighter), `WITH`, parentheses, and the legacy `/` for `OR`. Anything it
/// cannot read is not allowed.
fn allowed(expr: &str) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = or_expr(&tokens, &mut pos);
    ok == Some(true) && pos == tokens.len()
}

fn or_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut v = and_expr(t, pos)?;
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        v |= and_expr(t, pos)?;
    }
    Some(v)
}

fn and_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut v = atom(t, pos)?;
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        v &= atom(t, pos)?;
    }
    Some(v)
}

fn atom(t: &[&str], pos: &mut usize) -> Option<bool> {
    let tok = *t.get(*pos)?;
    *pos += 1;
    let v = if tok == "(" {
        let v = or_expr(t, pos)?;
        (t.get(*pos) == Some(&")")).then_some(())?;
        *pos += 1;
        v
    } else if matches!(tok, ")" | "OR" | "AND" | "WITH") {
        return None;
    } else {
        ALLOWED.contains(&tok)
    };
    if t.get(*pos) == Some(&"WITH") {
        // The exception's name.
        t.get(*pos + 1)?;
        *pos += 2;
    }
    Some(v)
}

/// The packages of a workspace's resolved tree that are not the workspace's own unpublished
/// ones, as (name, version, licence).
fn packages(manifest: &Path) -> Vec<(String, String, Option<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata for {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut v = Vec::new();
    for p in m["packages"].as_array().unwrap() {
        let unpublished = p["publish"].as_array().is_some_and(|a| a.is_empty());
        if p["source"].is_null() && unpublished {
            continue;
        }
        v.push((
            p["name"].as_str().unwrap().to_owned(),
            p["version"].as_str().unwrap().to_owned(),
            p["license"].as_str().map(str::to_owned),
        ));
    }
    v
}

#[test]
fn expressions_are_read_as_spdx_means_them() {
    assert!(allowed("MIT"));
    assert!(allowed("MIT OR Apache-2.0"));
    assert!(allowed("MIT/Apache-2.0"));
    assert!(allowed(
        "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"
    ));
    assert!(allowed("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(allowed("MIT OR Apache-2.0 OR LGPL-2.1-or-later"));
    assert!(allowed("Apache-2.0 AND ISC"));
    assert!(!allowed("GPL-3.0-only"));
    assert!(!allowed("WTFPL"));
    assert!(!allowed("MIT AND GPL-2.0-or-later"));
    assert!(!allowed("(MIT OR Apache-2.0) AND LGPL-2.1-only"));
    assert!(!allowed("MIT OR"));
    assert!(!allowed("(MIT"));
    assert!(!allowed(""));
}

#[test]
fn every_dependency_is_permissively_licensed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = Vec::new();
    let mut seen = 0;
    for manifest in [root.join("Cargo.toml"), root.join("fuzz/Cargo.toml")] {
        for (name, version, licence) in packages(&manifest) {
            seen += 1;
            match licence {
                Some(l) if allowed(&l) => {}
                l => bad.push(format!("{name} {version}: {l:?}")),
            }
        }
    }
    // The trees hold well over a hundred packages: an empty listing is a broken check.
    assert!(seen > 100, "only {seen} packages listed");
    assert!(bad.is_empty(), "not permissively licensed: {bad:#?}");
}
