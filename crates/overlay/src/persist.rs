//! The registry file: human-readable TOML, a format version, a checksum line, and atomic
//! replacement (temporary file, fsync, rename, fsync of the directory).
//!
//! ```text
//! # gatekit-overlay registry
//! format = 1
//! next_id = 2
//!
//! [plan]
//! prefixes = ["10.100.0.0/16"]
//! ...
//! [[member]]
//! id = 0
//! name = "alice"
//! ...
//! # crc32 5d1e7f0a
//! ```
//!
//! The last line is the CRC-32 of every byte above it. A file without it (cut short) or whose
//! checksum does not match is refused whole: a registry is never half-loaded. Text written by
//! hand, without the checksum line, is read with [`Registry::from_toml`].

use crate::member::{Member, millis};
use crate::plan::{AddressPlan, PlanError, PlanSpec};
use crate::policy::{Policy, PolicyError};
use crate::registry::{Registry, RegistryError};
use core::net::IpAddr;
use gatekit_packet::Instant;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The format version this crate writes. Files of older versions are migrated on load.
pub const FORMAT_VERSION: u32 = 1;

const HEADER: &str = "# gatekit-overlay registry\n";
const TRAILER: &str = "# crc32 ";

/// Why a registry could not be loaded. Nothing is loaded when any of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bytes are not UTF-8 text.
    #[error("not UTF-8 text (invalid byte at offset {offset})")]
    NotText {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The checksum line is missing: the file was cut short or was not written by a registry.
    #[error(
        "no checksum line at the end: the file is truncated or was not written by the registry (hand-written text is read with Registry::from_toml)"
    )]
    NoChecksum,
    /// The checksum does not match the contents.
    #[error(
        "checksum mismatch: the file says {stated:08x}, its contents give {actual:08x}; the file is corrupt"
    )]
    Checksum {
        /// The checksum in the file.
        stated: u32,
        /// The checksum of the contents.
        actual: u32,
    },
    /// The text is not valid TOML or does not have the registry's shape. The message gives
    /// the line and column.
    #[error("{0}")]
    Syntax(String),
    /// A format version this crate does not read.
    #[error("format {found} is not supported (this version reads formats 1 to {FORMAT_VERSION})")]
    Version {
        /// The version in the file.
        found: i64,
    },
    /// The plan in the file does not check.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// The policy does not fit the plan.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// A member does not fit the plan or the members before it.
    #[error("member {name} (id {id}): {source}")]
    Member {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// What is wrong.
        source: Box<RegistryError>,
    },
    /// A quarantined address does not fit.
    #[error("quarantined address {addr}: {source}")]
    Quarantine {
        /// The address.
        addr: IpAddr,
        /// What is wrong.
        source: Box<RegistryError>,
    },
}

/// Why a registry could not be saved. The previous file, if any, is untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// Writing, syncing or renaming failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file acted on.
        path: PathBuf,
        /// What was being done ("create", "write", "fsync", "rename", ...).
        op: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The registry could not be rendered as TOML (should not happen; reported, not panicked).
    #[error("rendering the registry: {0}")]
    Render(String),
}

#[derive(Serialize, Deserialize)]
struct Quarantined {
    segment: String,
    address: IpAddr,
    #[serde(rename = "until_ms", with = "millis")]
    until: Instant,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: u32,
    next_id: u32,
    plan: PlanSpec,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    member: Vec<Member>,
    #[serde(default)]
    quarantine: Vec<Quarantined>,
}

#[derive(Deserialize)]
struct Version {
    format: Option<toml::Value>,
}

/// CRC-32 (ISO-HDLC: reflected, polynomial 0xEDB88320), as zlib and Ethernet compute it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl Registry {
    /// The registry as TOML text, without the checksum line.
    pub fn to_toml(&self) -> Result<String, SaveError> {
        let file = FileV1 {
            format: FORMAT_VERSION,
            next_id: self.next_id(),
            plan: self.plan().spec().clone(),
            policy: self.policy().clone(),
            member: self.members().cloned().collect(),
            quarantine: self
                .quarantined()
                .map(|(s, a, t)| Quarantined {
                    segment: s.to_string(),
                    address: a,
                    until: t,
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| SaveError::Render(e.to_string()))?;
        Ok(format!("{HEADER}{body}"))
    }

    /// The registry file's full text: the TOML and its checksum line.
    pub fn to_file_text(&self) -> Result<String, SaveError> {
        let mut text = self.to_toml()?;
        let sum = crc32(text.as_bytes());
        text.push_str(&format!("{TRAILER}{sum:08x}\n"));
        Ok(text)
    }

    /// Reads registry TOML (the file format, with or without its checksum line, which is
    /// then not checked): for text written or edited by hand.
    pub fn from_toml(text: &str) -> Result<Registry, LoadError> {
        let v: Version = toml::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
        match v.format {
            Some(toml::Value::Integer(1)) => {}
            Some(toml::Value::Integer(n)) => return Err(LoadError::Version { found: n }),
            Some(_) => return Err(LoadError::Syntax("format must be an integer".into())),
            None => {
                return Err(LoadError::Syntax(
                    "missing key `format` (the format version)".into(),
                ));
            }
        }
        // Format 1 is the first; migrations from older formats go here when there are some.
        let file: FileV1 = toml::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
        let plan = AddressPlan::new(file.plan)?;
        let mut reg = Registry::new(plan);
        reg.set_policy(file.policy).map_err(|e| match e {
            RegistryError::Policy(p) => LoadError::Policy(p),
            other => LoadError::Syntax(other.to_string()),
        })?;
        reg.set_next_id(file.next_id);
        for m in file.member {
            let (id, name) = (m.id.0, m.name.clone());
            reg.restore_member(m).map_err(|e| LoadError::Member {
                id,
                name,
                source: Box::new(e),
            })?;
        }
        for q in file.quarantine {
            reg.restore_quarantine(&q.segment, q.address, q.until)
                .map_err(|e| LoadError::Quarantine {
                    addr: q.address,
                    source: Box::new(e),
                })?;
        }
        Ok(reg)
    }

    /// Reads a registry file's bytes: the checksum line must be there and match.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Registry, LoadError> {
        let text = std::str::from_utf8(bytes).map_err(|e| LoadError::NotText {
            offset: e.valid_up_to(),
        })?;
        let body_end = text
            .strip_suffix('\n')
            .and_then(|t| t.rfind('\n'))
            .map(|i| i + 1)
            .ok_or(LoadError::NoChecksum)?;
        let (body, last) = text.split_at(body_end);
        let stated = last
            .strip_prefix(TRAILER)
            .map(str::trim_end)
            .filter(|h| h.len() == 8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or(LoadError::NoChecksum)?;
        let actual = crc32(body.as_bytes());
        if stated != actual {
            return Err(LoadError::Checksum { stated, actual });
        }
        Registry::from_toml(body)
    }

    /// Loads the registry saved at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Registry, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Registry::from_file_bytes(&bytes)
    }

    /// Saves the registry to `path` atomically: the text goes to a temporary file in the same
    /// directory, which is fsynced and renamed over `path`, then the directory is fsynced. A
    /// crash at any point leaves either the previous file or the new one, whole. A crash may
    /// leave a `.NAME.tmp.*` file behind, which can be deleted.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = path.as_ref();
        let text = self.to_file_text()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map_or_else(|| "registry".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| SaveError::Io {
                path: p,
                op,
                source,
            }
        };
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            drop(f);
            std::fs::rename(&tmp, path).map_err(io("rename", path))?;
            // The rename is durable once the directory entry is.
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync directory", &dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC catalogue's check value for CRC-32/ISO-HDLC: crc("123456789") = 0xCBF43926.
    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
