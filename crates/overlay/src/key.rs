//! Member identities: x25519 keys, written as WireGuard writes them (standard base64, 44 chars).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not standard base64.
    #[error("key {text:?} is not base64: {reason}")]
    Base64 {
        /// The text, shortened to 60 characters.
        text: String,
        /// What the decoder said.
        reason: String,
    },
    /// The text decodes to something other than 32 bytes.
    #[error("key {text:?} decodes to {len} bytes, an x25519 key has 32")]
    Length {
        /// The text, shortened to 60 characters.
        text: String,
        /// Decoded length.
        len: usize,
    },
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let short: String = text.chars().take(60).collect();
    let mut bytes = STANDARD.decode(text.trim()).map_err(|e| KeyError::Base64 {
        text: short.clone(),
        reason: e.to_string(),
    })?;
    let out = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length {
        text: short,
        len: bytes.len(),
    });
    bytes.zeroize();
    out
}

/// A member's identity: its x25519 public key.
///
/// Displayed and parsed in WireGuard's form (standard base64 of the 32 bytes), and stored that
/// way in the registry file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
    /// The key's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The key in WireGuard's base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl core::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl core::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A member's private key. The registry never stores it: it is generated for a member, put into
/// that member's client pack, and forgotten. Wiped from memory on drop.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        PrivateKey(x25519_dalek::StaticSecret::random())
    }
    /// The key from its 32 bytes (clamping happens when it is used, as in WireGuard).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
    /// The key in WireGuard's base64 form (secret: handle with care).
    pub fn to_base64(&self) -> String {
        let mut bytes = self.0.to_bytes();
        let out = STANDARD.encode(bytes);
        bytes.zeroize();
        out
    }
    /// The x25519 shared secret with `peer` (the Diffie-Hellman step of a handshake).
    pub fn diffie_hellman(&self, peer: &PublicKey) -> [u8; 32] {
        self.0
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0))
            .to_bytes()
    }
}

impl core::str::FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut bytes = decode32(s)?;
        let key = PrivateKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// RFC 7748 §6.1 (Curve25519 Diffie-Hellman):
    /// "Alice's private key, a: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a
    ///  Alice's public key, X25519(a, 9): 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a
    ///  Bob's private key, b: 5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb
    ///  Bob's public key, X25519(b, 9): de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f
    ///  Their shared secret, K: 4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    #[test]
    fn rfc7748_section_6_1() {
        let a = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let b = PrivateKey::from_bytes(hex(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            a.public_key().as_bytes(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b.public_key().as_bytes(),
            &hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let k = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(a.diffie_hellman(&b.public_key()), k);
        assert_eq!(b.diffie_hellman(&a.public_key()), k);
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let k = PrivateKey::generate();
        let pk = k.public_key();
        assert_eq!(pk.to_base64().len(), 44);
        assert_eq!(pk.to_base64().parse::<PublicKey>().unwrap(), pk);
        let k2: PrivateKey = k.to_base64().parse().unwrap();
        assert_eq!(k2.public_key(), pk);
        assert!(matches!(
            "not base64!".parse::<PublicKey>(),
            Err(KeyError::Base64 { .. })
        ));
        assert!(matches!(
            "AAAA".parse::<PublicKey>(),
            Err(KeyError::Length { len: 3, .. })
        ));
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }
}
