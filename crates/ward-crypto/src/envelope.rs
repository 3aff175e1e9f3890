use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{self, AES_256_GCM, NONCE_LEN, Nonce, RandomizedNonceKey};

use crate::{DataKey, Error, Result};

/// Version byte at the start of every sealed value.
pub const FORMAT_VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// Associated data binding a ciphertext to its place: tenant, resource type, id and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    pub tenant: &'a str,
    pub rtype: &'a str,
    pub id: &'a str,
    pub version: i64,
}

impl Aad<'_> {
    /// Unambiguous encoding: a domain label, then each string as u32 big-endian length || bytes,
    /// then the version as i64 big-endian.
    pub fn encode(&self) -> Vec<u8> {
        const LABEL: &[u8] = b"ward-aad-v1";
        let mut out =
            Vec::with_capacity(LABEL.len() + 12 + self.tenant.len() + self.rtype.len() + self.id.len() + 8);
        out.extend_from_slice(LABEL);
        for field in [self.tenant, self.rtype, self.id] {
            // Lengths above u32::MAX cannot occur for these identifiers; saturate defensively.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// AES-256-GCM envelope encryption with a keyring of data keys by epoch.
///
/// Sealed format: `FORMAT_VERSION (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
/// Nonces are 96-bit random values chosen by aws-lc (`RandomizedNonceKey`); start a new epoch
/// well before 2^32 encryptions under one key.
pub struct Envelope {
    keys: HashMap<u32, RandomizedNonceKey>,
    current: u32,
}

impl Envelope {
    /// `current_epoch` must be one of the given epochs; new seals use it.
    pub fn new(keys: Vec<(u32, DataKey)>, current_epoch: u32) -> Result<Envelope> {
        let mut map = HashMap::with_capacity(keys.len());
        for (epoch, key) in keys {
            let k = RandomizedNonceKey::new(&AES_256_GCM, key.expose())
                .map_err(|_| Error::InvalidKey("data key"))?;
            map.insert(epoch, k);
        }
        if !map.contains_key(&current_epoch) {
            return Err(Error::UnknownEpoch(current_epoch));
        }
        Ok(Envelope {
            keys: map,
            current: current_epoch,
        })
    }

    pub fn current_epoch(&self) -> u32 {
        self.current
    }

    /// Encrypts under the current epoch; returns (epoch, sealed bytes).
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<(u32, Vec<u8>)> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or(Error::UnknownEpoch(self.current))?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.push(FORMAT_VERSION);
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        let mut body = plaintext.to_vec();
        let nonce = key.seal_in_place_append_tag(aead::Aad::from(aad.encode()), &mut body)?;
        buf[1..1 + NONCE_LEN].copy_from_slice(nonce.as_ref());
        buf.extend_from_slice(&body);
        Ok((self.current, buf))
    }

    /// Decrypts and authenticates a sealed value of `epoch` under `aad`.
    pub fn open(&self, epoch: u32, aad: &Aad<'_>, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(Error::Malformed("sealed value"));
        }
        if sealed[0] != FORMAT_VERSION {
            return Err(Error::Malformed("sealed value version"));
        }
        let key = self.keys.get(&epoch).ok_or(Error::UnknownEpoch(epoch))?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| Error::Malformed("sealed value"))?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let n = key
            .open_in_place(nonce, aead::Aad::from(aad.encode()), &mut body)
            .map_err(|_| Error::Decrypt)?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut epochs: Vec<_> = self.keys.keys().copied().collect();
        epochs.sort_unstable();
        f.debug_struct("Envelope")
            .field("epochs", &epochs)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(id: &str, version: i64) -> Aad<'_> {
        Aad {
            tenant: "default",
            rtype: "Patient",
            id,
            version,
        }
    }

    fn env() -> Envelope {
        Envelope::new(vec![(1, DataKey::generate().unwrap())], 1).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_format() {
        let e = env();
        let pt = br#"{"resourceType":"Patient","name":[{"family":"Zyxwv"}]}"#;
        let (epoch, sealed) = e.seal(&aad("a", 1), pt).unwrap();
        assert_eq!(epoch, 1);
        assert_eq!(sealed[0], FORMAT_VERSION);
        assert_eq!(sealed.len(), 1 + 12 + pt.len() + 16);
        assert!(!sealed.windows(5).any(|w| w == b"Zyxwv"));
        assert_eq!(e.open(1, &aad("a", 1), &sealed).unwrap(), pt);
        // Random nonces: sealing twice differs.
        let (_, sealed2) = e.seal(&aad("a", 1), pt).unwrap();
        assert_ne!(sealed[1..13], sealed2[1..13]);
        // Empty plaintext works.
        let (_, s) = e.seal(&aad("a", 1), b"").unwrap();
        assert_eq!(e.open(1, &aad("a", 1), &s).unwrap(), b"");
    }

    #[test]
    fn wrong_aad_fails() {
        let e = env();
        let (ep, sealed) = e.seal(&aad("a", 1), b"secret").unwrap();
        assert!(matches!(e.open(ep, &aad("a", 2), &sealed), Err(Error::Decrypt)));
        assert!(matches!(e.open(ep, &aad("b", 1), &sealed), Err(Error::Decrypt)));
        let other_type = Aad {
            rtype: "Observation",
            ..aad("a", 1)
        };
        assert!(matches!(e.open(ep, &other_type, &sealed), Err(Error::Decrypt)));
        let other_tenant = Aad {
            tenant: "t2",
            ..aad("a", 1)
        };
        assert!(matches!(e.open(ep, &other_tenant, &sealed), Err(Error::Decrypt)));
    }

    #[test]
    fn aad_encoding_is_unambiguous() {
        let a = Aad {
            tenant: "ab",
            rtype: "c",
            id: "d",
            version: 1,
        };
        let b = Aad {
            tenant: "a",
            rtype: "bc",
            id: "d",
            version: 1,
        };
        assert_ne!(a.encode(), b.encode());
        let c = Aad {
            tenant: "a",
            rtype: "b",
            id: "cd",
            version: 1,
        };
        let d = Aad {
            tenant: "a",
            rtype: "bc",
            id: "d",
            version: 1,
        };
        assert_ne!(c.encode(), d.encode());
    }

    #[test]
    fn tamper_fails() {
        let e = env();
        let (ep, sealed) = e.seal(&aad("a", 1), b"some plaintext").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(e.open(ep, &aad("a", 1), &t).is_err(), "byte {i}");
        }
        assert!(e.open(ep, &aad("a", 1), &sealed[..sealed.len() - 1]).is_err());
        assert!(matches!(
            e.open(ep, &aad("a", 1), &sealed[..20]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn epochs() {
        let k1 = DataKey::generate().unwrap();
        let k2 = DataKey::generate().unwrap();
        let old = Envelope::new(vec![(1, k1.clone())], 1).unwrap();
        let (ep1, s1) = old.seal(&aad("a", 1), b"v1").unwrap();
        let new = Envelope::new(vec![(1, k1), (2, k2)], 2).unwrap();
        let (ep2, s2) = new.seal(&aad("a", 2), b"v2").unwrap();
        assert_eq!((ep1, ep2), (1, 2));
        assert_eq!(new.open(1, &aad("a", 1), &s1).unwrap(), b"v1");
        assert_eq!(new.open(2, &aad("a", 2), &s2).unwrap(), b"v2");
        assert!(matches!(new.open(2, &aad("a", 1), &s1), Err(Error::Decrypt)));
        assert!(matches!(
            old.open(2, &aad("a", 2), &s2),
            Err(Error::UnknownEpoch(2))
        ));
        assert!(Envelope::new(vec![], 1).is_err());
        assert!(!format!("{new:?}").is_empty());
    }
}
