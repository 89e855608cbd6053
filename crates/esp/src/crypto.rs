//! Cipher suites, key material and the AEAD backends (ring, RustCrypto).
//!
//! ESP here uses combined-mode (AEAD) algorithms only: AES-GCM with a 16-byte ICV (RFC 4106)
//! and ChaCha20-Poly1305 (RFC 7634). Both take 4 bytes of salt after the key (the KEYMAT of
//! RFC 4106 §8.1 and RFC 7634 §4) and an 8-byte explicit IV per packet; the nonce is
//! salt ‖ IV.

use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the ICV of every suite here.
pub const ICV_LEN: usize = 16;
/// Length of the explicit IV carried in each packet.
pub const IV_LEN: usize = 8;
/// Length of the salt that follows the key.
pub const SALT_LEN: usize = 4;

/// An ESP cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// AES-GCM with a 128-bit key and a 16-byte ICV (RFC 4106; IKEv2 transform ENCR_AES_GCM_16).
    AesGcm128,
    /// AES-GCM with a 256-bit key and a 16-byte ICV.
    AesGcm256,
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
    /// The null AEAD: no confidentiality, no integrity. Exists only so that fuzzing gets past
    /// authentication.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    Null,
}

impl Suite {
    /// Length of the cipher key in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Suite::AesGcm128 => 16,
            Suite::AesGcm256 | Suite::ChaCha20Poly1305 => 32,
            #[cfg(feature = "fuzzing")]
            Suite::Null => 0,
        }
    }
    /// Length of the key material: the key and the 4-byte salt.
    pub const fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }
    /// A short name, as in strongSwan proposals.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::AesGcm128 => "aes128gcm16",
            Suite::AesGcm256 => "aes256gcm16",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
            #[cfg(feature = "fuzzing")]
            Suite::Null => "null",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Suite {
    type Err = crate::ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aes128gcm16" | "aes128gcm" | "aes-gcm-128" | "aes-128-gcm" => Ok(Suite::AesGcm128),
            "aes256gcm16" | "aes256gcm" | "aes-gcm-256" | "aes-256-gcm" => Ok(Suite::AesGcm256),
            "chacha20poly1305" | "chacha20-poly1305" => Ok(Suite::ChaCha20Poly1305),
            _ => Err(crate::ConfigError::UnknownSuite { name: s.into() }),
        }
    }
}

/// Key material: the cipher key followed by the 4-byte salt. Zeroized on drop, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    bytes: [u8; 36],
    len: u8,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({} bytes, redacted)", self.len)
    }
}

impl KeyMaterial {
    /// Key material from raw bytes (key ‖ salt), checked against the suite's length.
    pub fn new(suite: Suite, bytes: &[u8]) -> Result<Self, crate::ConfigError> {
        if bytes.len() != suite.keymat_len() {
            return Err(crate::ConfigError::KeyLength {
                suite,
                expected: suite.keymat_len(),
                got: bytes.len(),
            });
        }
        let mut km = KeyMaterial {
            bytes: [0; 36],
            len: bytes.len() as u8,
        };
        km.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(km)
    }

    /// Key material from hex (an optional `0x` prefix, whitespace and `:` ignored), as in a
    /// configuration file or `ip xfrm`'s output.
    pub fn from_hex(suite: Suite, hex: &str) -> Result<Self, crate::ConfigError> {
        let mut buf = zeroize::Zeroizing::new([0u8; 36]);
        let mut n = 0usize;
        let mut hi: Option<u8> = None;
        let s = hex.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        for (pos, c) in s.char_indices() {
            if c.is_whitespace() || c == ':' {
                continue;
            }
            let v = c
                .to_digit(16)
                .ok_or(crate::ConfigError::BadHex { position: pos })? as u8;
            match hi.take() {
                None => hi = Some(v),
                Some(h) => {
                    if n >= buf.len() {
                        return Err(crate::ConfigError::KeyLength {
                            suite,
                            expected: suite.keymat_len(),
                            got: n + 1,
                        });
                    }
                    buf[n] = h << 4 | v;
                    n += 1;
                }
            }
        }
        if hi.is_some() {
            return Err(crate::ConfigError::BadHex { position: s.len() });
        }
        KeyMaterial::new(suite, &buf[..n])
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).saturating_sub(SALT_LEN)]
    }

    fn salt(&self) -> [u8; SALT_LEN] {
        let l = usize::from(self.len);
        let mut s = [0u8; SALT_LEN];
        if l >= SALT_LEN {
            s.copy_from_slice(&self.bytes[l - SALT_LEN..l]);
        }
        s
    }
}

/// Which implementation of the AEAD an SA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// ring (the default).
    #[cfg(feature = "ring")]
    Ring,
    /// RustCrypto's `aes-gcm` and `chacha20poly1305`.
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl Default for Backend {
    fn default() -> Self {
        #[cfg(feature = "ring")]
        return Backend::Ring;
        #[cfg(not(feature = "ring"))]
        return Backend::RustCrypto;
    }
}

/// The AEAD failed to verify (or, for seal, refused the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadError;

/// A keyed AEAD with its salt: what an SA seals and opens with.
pub(crate) struct Aead {
    cipher: Cipher,
    salt: [u8; SALT_LEN],
}

impl Drop for Aead {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

// The ring key stays inline (it is the default and the hot one); the others are boxed.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    #[cfg(feature = "ring")]
    Ring(ring::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    Aes128(Box<aes_gcm::Aes128Gcm>),
    #[cfg(feature = "rustcrypto")]
    Aes256(Box<aes_gcm::Aes256Gcm>),
    #[cfg(feature = "rustcrypto")]
    ChaCha(Box<chacha20poly1305::ChaCha20Poly1305>),
    #[cfg(feature = "fuzzing")]
    Null,
}

impl Aead {
    pub(crate) fn new(
        suite: Suite,
        backend: Backend,
        km: &KeyMaterial,
    ) -> Result<Aead, crate::ConfigError> {
        if usize::from(km.len) != suite.keymat_len() {
            return Err(crate::ConfigError::KeyLength {
                suite,
                expected: suite.keymat_len(),
                got: usize::from(km.len),
            });
        }
        let bad = || crate::ConfigError::KeyLength {
            suite,
            expected: suite.keymat_len(),
            got: usize::from(km.len),
        };
        #[cfg(feature = "fuzzing")]
        if suite == Suite::Null {
            return Ok(Aead {
                cipher: Cipher::Null,
                salt: km.salt(),
            });
        }
        let cipher = match backend {
            #[cfg(feature = "ring")]
            Backend::Ring => {
                let alg = match suite {
                    Suite::AesGcm128 => &ring::aead::AES_128_GCM,
                    Suite::AesGcm256 => &ring::aead::AES_256_GCM,
                    Suite::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
                    #[cfg(feature = "fuzzing")]
                    Suite::Null => return Err(bad()),
                };
                let key = ring::aead::UnboundKey::new(alg, km.key()).map_err(|_| bad())?;
                Cipher::Ring(ring::aead::LessSafeKey::new(key))
            }
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => {
                use aes_gcm::KeyInit;
                match suite {
                    Suite::AesGcm128 => Cipher::Aes128(Box::new(
                        aes_gcm::Aes128Gcm::new_from_slice(km.key()).map_err(|_| bad())?,
                    )),
                    Suite::AesGcm256 => Cipher::Aes256(Box::new(
                        aes_gcm::Aes256Gcm::new_from_slice(km.key()).map_err(|_| bad())?,
                    )),
                    Suite::ChaCha20Poly1305 => Cipher::ChaCha(Box::new(
                        chacha20poly1305::ChaCha20Poly1305::new_from_slice(km.key())
                            .map_err(|_| bad())?,
                    )),
                    #[cfg(feature = "fuzzing")]
                    Suite::Null => return Err(bad()),
                }
            }
        };
        Ok(Aead {
            cipher,
            salt: km.salt(),
        })
    }

    #[inline]
    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    /// Encrypts `data` in place and returns the ICV.
    #[inline]
    pub(crate) fn seal(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; ICV_LEN], AeadError> {
        let nonce = self.nonce(iv);
        match &self.cipher {
            #[cfg(feature = "ring")]
            Cipher::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(aad),
                        data,
                    )
                    .map_err(|_| AeadError)?;
                let mut out = [0u8; ICV_LEN];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
            #[cfg(feature = "rustcrypto")]
            Cipher::Aes128(c) => rc_seal(&**c, &nonce, aad, data),
            #[cfg(feature = "rustcrypto")]
            Cipher::Aes256(c) => rc_seal(&**c, &nonce, aad, data),
            #[cfg(feature = "rustcrypto")]
            Cipher::ChaCha(c) => rc_seal(&**c, &nonce, aad, data),
            #[cfg(feature = "fuzzing")]
            Cipher::Null => Ok([0; ICV_LEN]),
        }
    }

    /// Verifies `icv` and decrypts `data` in place. On failure `data` is unspecified.
    #[inline]
    pub(crate) fn open(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        data: &mut [u8],
        icv: &[u8; ICV_LEN],
    ) -> Result<(), AeadError> {
        let nonce = self.nonce(iv);
        match &self.cipher {
            #[cfg(feature = "ring")]
            Cipher::Ring(k) => k
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(*icv),
                    data,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| AeadError),
            #[cfg(feature = "rustcrypto")]
            Cipher::Aes128(c) => rc_open(&**c, &nonce, aad, data, icv),
            #[cfg(feature = "rustcrypto")]
            Cipher::Aes256(c) => rc_open(&**c, &nonce, aad, data, icv),
            #[cfg(feature = "rustcrypto")]
            Cipher::ChaCha(c) => rc_open(&**c, &nonce, aad, data, icv),
            #[cfg(feature = "fuzzing")]
            Cipher::Null => Ok(()),
        }
    }
}

#[cfg(feature = "rustcrypto")]
fn rc_seal<C>(c: &C, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Result<[u8; 16], AeadError>
where
    C: aes_gcm::AeadInOut<
            NonceSize = aes_gcm::aead::consts::U12,
            TagSize = aes_gcm::aead::consts::U16,
        >,
{
    let tag = c
        .encrypt_inout_detached(&(*nonce).into(), aad, data.into())
        .map_err(|_| AeadError)?;
    Ok(tag.into())
}

#[cfg(feature = "rustcrypto")]
fn rc_open<C>(
    c: &C,
    nonce: &[u8; 12],
    aad: &[u8],
    data: &mut [u8],
    icv: &[u8; 16],
) -> Result<(), AeadError>
where
    C: aes_gcm::AeadInOut<
            NonceSize = aes_gcm::aead::consts::U12,
            TagSize = aes_gcm::aead::consts::U16,
        >,
{
    c.decrypt_inout_detached(&(*nonce).into(), aad, data.into(), &(*icv).into())
        .map_err(|_| AeadError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_lengths_hex_and_debug() {
        let km = KeyMaterial::from_hex(
            Suite::AesGcm128,
            "0x0102030405060708090a0b0c0d0e0f10 11:12:13:14",
        )
        .unwrap();
        assert_eq!(km.key(), &(1..=16).collect::<Vec<u8>>()[..]);
        assert_eq!(km.salt(), [0x11, 0x12, 0x13, 0x14]);
        let dbg = format!("{km:?}");
        assert!(!dbg.contains("01") && dbg.contains("redacted"), "{dbg}");
        assert!(matches!(
            KeyMaterial::from_hex(Suite::AesGcm256, "00"),
            Err(crate::ConfigError::KeyLength {
                expected: 36,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            KeyMaterial::from_hex(Suite::AesGcm128, "0g"),
            Err(crate::ConfigError::BadHex { position: 1 })
        ));
        assert!(matches!(
            KeyMaterial::from_hex(Suite::AesGcm128, "abc"),
            Err(crate::ConfigError::BadHex { .. })
        ));
        assert!(KeyMaterial::from_hex(Suite::AesGcm128, &"ab".repeat(40)).is_err());
        assert_eq!("aes256gcm16".parse::<Suite>().unwrap(), Suite::AesGcm256);
        assert!("des".parse::<Suite>().is_err());
    }
}
