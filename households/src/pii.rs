//! Personal data sealed at rest, searchable by keyed hash.
//!
//! Names, phone numbers and ID numbers of households never reach the database in clear. Each value
//! is sealed with XChaCha20-Poly1305 under the *active* encryption key, with the column
//! ([`Field`]) as associated data, so a sealed phone number cannot be swapped into the name
//! column. Exact-match deduplication uses [`PiiKeys::blind_index`], an HMAC-SHA256 under a
//! separate index key, never the plaintext.
//!
//! ```
//! use cva_households::pii::{Field, PiiKeys};
//!
//! // In production: `PiiKeys::from_spec(&std::env::var("CVA_PII_KEYS")?)` or
//! // `PiiKeys::load_or_create(path)`; the spec looks like
//! // "active=k2;enc=k1:BASE64,k2:BASE64;index=BASE64".
//! let (mut keys, _spec) = PiiKeys::generate();
//!
//! let sealed = keys.seal(Field::Msisdn, "+22376123456");
//! assert!(sealed.starts_with("v1.k1."));
//! assert_eq!(keys.open(Field::Msisdn, &sealed).unwrap(), "+22376123456");
//! assert!(keys.open(Field::HeadName, &sealed).is_err()); // wrong column
//!
//! // Lookup column for duplicates: normalise first (E.164, trimmed upper-case ID), then hash.
//! let index = keys.blind_index(Field::Msisdn, "+22376123456");
//! assert_eq!(index.len(), 64);
//!
//! // Rotation: store the returned spec, then re-seal values whose key id is not the active one.
//! let _new_spec = keys.rotate("k2").unwrap();
//! assert_eq!(PiiKeys::key_id_of(&sealed), Some("k1"));
//! assert_ne!(PiiKeys::key_id_of(&sealed), Some(keys.active_key_id()));
//! assert_eq!(keys.open(Field::Msisdn, &sealed).unwrap(), "+22376123456");
//! ```
//!
//! Key bytes are zeroized when the keys are dropped, and neither `Debug` nor any error message
//! shows key material or personal data: errors name the problem and, at most, a key id. The spec
//! string returned by [`PiiKeys::generate`] and [`PiiKeys::rotate`] *is* key material: store it as
//! a secret and never log it. The index key does not rotate (rotating it would mean re-hashing every
//! value from its plaintext).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Length of every key (encryption and index), in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const VERSION: &str = "v1";
const MAX_KEY_ID_LEN: usize = 16;

type Key = Zeroizing<[u8; KEY_LEN]>;

/// A column holding personal data. Its name is the associated data of the seal and the domain
/// separator of the blind index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    HeadName,
    Msisdn,
    NationalId,
    BiometricRef,
}

impl Field {
    pub const ALL: [Field; 4] = [
        Field::HeadName,
        Field::Msisdn,
        Field::NationalId,
        Field::BiometricRef,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::HeadName => "head_name",
            Field::Msisdn => "msisdn",
            Field::NationalId => "national_id",
            Field::BiometricRef => "biometric_ref",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with keys or sealed values. Messages never contain key material or
/// personal data; key ids appear only once they are known to be well formed.
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("key spec has no `{0}=` part")]
    MissingPart(&'static str),
    #[error("key spec has the `{0}=` part twice")]
    DuplicatePart(&'static str),
    #[error("key spec has a part that is not `active=`, `enc=` or `index=`")]
    UnknownPart,
    #[error("key spec `enc=` entries must look like `ID:BASE64`, separated by commas")]
    MalformedEncEntry,
    #[error("invalid key id: expected 1 to 16 characters among a-z, 0-9, `_` and `-`")]
    InvalidKeyId,
    #[error("key id `{0}` is used twice")]
    DuplicateKeyId(String),
    #[error("active key id `{0}` is not among the encryption keys")]
    ActiveKeyMissing(String),
    #[error("key `{0}` is not valid standard base64")]
    BadBase64(String),
    #[error("key `{key}` must be 32 bytes after base64 decoding, not {len}")]
    BadKeyLength { key: String, len: usize },
    #[error("unknown key id `{0}`")]
    UnknownKeyId(String),
    #[error("sealed value is malformed (expected `v1.<key id>.<base64url>`)")]
    MalformedSealed,
    #[error("sealed value has an unsupported format version")]
    UnsupportedVersion,
    #[error("ciphertext was altered or belongs to another field")]
    Tampered,
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: Box<PiiError>,
    },
    #[error("key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The encryption keys (one active, older ones kept to open old values) and the index key.
///
/// `Debug` shows only key ids; the key bytes are zeroized on drop.
#[derive(Clone)]
pub struct PiiKeys {
    active: String,
    /// In spec order; ids are unique.
    enc: Vec<(String, Key)>,
    index: Key,
}

impl fmt::Debug for PiiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiKeys")
            .field("active", &self.active)
            .field(
                "enc_key_ids",
                &self
                    .enc
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("index", &"<redacted>")
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn random_key() -> Key {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// Decodes one key; `name` (a validated key id or "index") is the only thing errors mention.
fn decode_key(name: &str, text: &str) -> Result<Key, PiiError> {
    // Enough capacity up front that decoding never reallocates (and leaves copies behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(text.len() + 4));
    // The decode error itself is dropped: it can quote a byte of the input.
    STANDARD
        .decode_vec(text.trim(), &mut buf)
        .map_err(|_| PiiError::BadBase64(name.to_owned()))?;
    if buf.len() != KEY_LEN {
        return Err(PiiError::BadKeyLength {
            key: name.to_owned(),
            len: buf.len(),
        });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&buf);
    Ok(key)
}

impl PiiKeys {
    /// Parses the configuration string (env var `CVA_PII_KEYS` or a key file's content):
    /// `active=k2;enc=k1:BASE64,k2:BASE64;index=BASE64`. The three parts may come in any order;
    /// whitespace and newlines around parts and entries are ignored. Every key is exactly 32 bytes
    /// in standard base64; key ids are 1–16 characters among `a-z0-9_-`; the active id must be
    /// one of the `enc` keys.
    pub fn from_spec(spec: &str) -> Result<PiiKeys, PiiError> {
        let mut active: Option<&str> = None;
        let mut enc: Option<Vec<(String, Key)>> = None;
        let mut index: Option<Key> = None;

        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            // Never echo `part`: a mistyped part may well be key material.
            let (name, value) = part.split_once('=').ok_or(PiiError::UnknownPart)?;
            match name.trim() {
                "active" => {
                    if active.is_some() {
                        return Err(PiiError::DuplicatePart("active"));
                    }
                    let id = value.trim();
                    if !valid_key_id(id) {
                        return Err(PiiError::InvalidKeyId);
                    }
                    active = Some(id);
                }
                "enc" => {
                    if enc.is_some() {
                        return Err(PiiError::DuplicatePart("enc"));
                    }
                    let mut keys: Vec<(String, Key)> = Vec::new();
                    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        let (id, b64) = entry.split_once(':').ok_or(PiiError::MalformedEncEntry)?;
                        let id = id.trim();
                        if !valid_key_id(id) {
                            return Err(PiiError::InvalidKeyId);
                        }
                        if keys.iter().any(|(known, _)| known == id) {
                            return Err(PiiError::DuplicateKeyId(id.to_owned()));
                        }
                        keys.push((id.to_owned(), decode_key(id, b64)?));
                    }
                    if keys.is_empty() {
                        return Err(PiiError::MalformedEncEntry);
                    }
                    enc = Some(keys);
                }
                "index" => {
                    if index.is_some() {
                        return Err(PiiError::DuplicatePart("index"));
                    }
                    index = Some(decode_key("index", value)?);
                }
                _ => return Err(PiiError::UnknownPart),
            }
        }

        let active = active.ok_or(PiiError::MissingPart("active"))?;
        let enc = enc.ok_or(PiiError::MissingPart("enc"))?;
        let index = index.ok_or(PiiError::MissingPart("index"))?;
        if !enc.iter().any(|(id, _)| id == active) {
            return Err(PiiError::ActiveKeyMissing(active.to_owned()));
        }
        Ok(PiiKeys {
            active: active.to_owned(),
            enc,
            index,
        })
    }

    /// Fresh random keys (from the OS) with key id `k1`, and the spec string that reproduces
    /// them. The spec is key material: store it as a secret.
    pub fn generate() -> (PiiKeys, String) {
        let keys = PiiKeys {
            active: "k1".to_owned(),
            enc: vec![("k1".to_owned(), random_key())],
            index: random_key(),
        };
        let spec = keys.spec();
        (keys, spec)
    }

    /// Reads the spec from `path`; if the file does not exist, creates it with fresh keys
    /// (mode 0600 on unix; `create_new`, so two processes starting together cannot both write
    /// it: the loser reads the winner's keys) and returns them.
    pub fn load_or_create(path: &Path) -> Result<PiiKeys, PiiError> {
        let io_err = |source| PiiError::Io {
            path: path.to_owned(),
            source,
        };
        match read_spec(path) {
            Ok(spec) => return parse_key_file(path, &spec),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }

        let (keys, spec) = PiiKeys::generate();
        let spec = Zeroizing::new(spec);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                let written = file
                    .write_all(format!("{}\n", spec.as_str()).as_bytes())
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    drop(file);
                    // Best effort: do not leave a half-written key file behind.
                    let _ = std::fs::remove_file(path);
                    return Err(io_err(e));
                }
                Ok(keys)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another process won the race; it may still be writing, so give it a moment.
                let mut last = None;
                for _ in 0..20 {
                    let spec = read_spec(path).map_err(io_err)?;
                    match parse_key_file(path, &spec) {
                        Ok(keys) => return Ok(keys),
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(last.unwrap_or(PiiError::MissingPart("active")))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Adds a new random encryption key under `new_id` and makes it active. Returns the new spec
    /// string, to be stored in place of the old one (it keeps the old keys, so old values still
    /// open).
    pub fn rotate(&mut self, new_id: &str) -> Result<String, PiiError> {
        if !valid_key_id(new_id) {
            return Err(PiiError::InvalidKeyId);
        }
        if self.enc.iter().any(|(id, _)| id == new_id) {
            return Err(PiiError::DuplicateKeyId(new_id.to_owned()));
        }
        self.enc.push((new_id.to_owned(), random_key()));
        self.active = new_id.to_owned();
        Ok(self.spec())
    }

    /// Id of the key new values are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals `plaintext` for column `field` under the active key: XChaCha20-Poly1305 with a
    /// random 24-byte nonce and the field name as associated data. The result is
    /// `v1.{key_id}.{base64url-no-pad(nonce || ciphertext)}`; two seals of the same value differ.
    pub fn seal(&self, field: Field, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let cipher = self.cipher(&self.active);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: field.as_str().as_bytes(),
        };
        let ciphertext = match cipher.encrypt(XNonce::from_slice(&nonce), payload) {
            Ok(ciphertext) => ciphertext,
            // Only fails for messages of hundreds of gigabytes, which a `&str` field never is.
            Err(_) => panic!("value too long to seal"),
        };
        let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        format!("{VERSION}.{}.{}", self.active, URL_SAFE_NO_PAD.encode(&raw))
    }

    /// Opens a value sealed by [`seal`](Self::seal) for the same `field`, under any known key.
    pub fn open(&self, field: Field, sealed: &str) -> Result<String, PiiError> {
        let (version, key_id, body) = split_sealed(sealed).ok_or(PiiError::MalformedSealed)?;
        if version != VERSION {
            return Err(PiiError::UnsupportedVersion);
        }
        if !valid_key_id(key_id) {
            return Err(PiiError::MalformedSealed);
        }
        if !self.enc.iter().any(|(id, _)| id == key_id) {
            return Err(PiiError::UnknownKeyId(key_id.to_owned()));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PiiError::MalformedSealed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(PiiError::MalformedSealed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: field.as_str().as_bytes(),
        };
        let plaintext = self
            .cipher(key_id)
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| PiiError::Tampered)?;
        String::from_utf8(plaintext).map_err(|e| {
            e.into_bytes().zeroize();
            PiiError::NotUtf8
        })
    }

    /// Key id of a sealed value, to find values that need re-sealing after a rotation. `None`
    /// when `sealed` is not a `v1` sealed value.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        match split_sealed(sealed) {
            Some((VERSION, key_id, _)) if valid_key_id(key_id) => Some(key_id),
            _ => None,
        }
    }

    /// Hex HMAC-SHA256 under the index key over `field.as_str() || 0x00 || value`: equal values
    /// of the same field give equal indexes. Callers normalise `value` first (E.164 phone number,
    /// trimmed upper-case ID number).
    pub fn blind_index(&self, field: Field, value: &str) -> String {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.index.as_ref()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(field.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The spec string reproducing these keys (key material).
    fn spec(&self) -> String {
        let enc = self
            .enc
            .iter()
            .map(|(id, key)| format!("{id}:{}", STANDARD.encode(key.as_ref())))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "active={};enc={enc};index={}",
            self.active,
            STANDARD.encode(self.index.as_ref())
        )
    }

    /// The cipher for a key id known to be present (the active one or one checked by the caller).
    fn cipher(&self, key_id: &str) -> XChaCha20Poly1305 {
        let key = self
            .enc
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
            .unwrap_or_else(|| unreachable!("key id checked by the caller"));
        // The cipher zeroizes its copy of the key on drop.
        XChaCha20Poly1305::new(key.as_ref().into())
    }
}

fn split_sealed(sealed: &str) -> Option<(&str, &str, &str)> {
    let mut parts = sealed.splitn(3, '.');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

fn read_spec(path: &Path) -> io::Result<Zeroizing<String>> {
    let mut spec = Zeroizing::new(String::new());
    std::fs::File::open(path)?.read_to_string(&mut spec)?;
    Ok(spec)
}

fn parse_key_file(path: &Path, spec: &str) -> Result<PiiKeys, PiiError> {
    PiiKeys::from_spec(spec).map_err(|e| PiiError::KeyFile {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [0x11; 32];
    const K2: [u8; 32] = [0x22; 32];
    const IX: [u8; 32] = [0x33; 32];

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn fixed_spec() -> String {
        format!(
            "active=k1;enc=k1:{},k2:{};index={}",
            b64(&K1),
            b64(&K2),
            b64(&IX)
        )
    }

    fn keys() -> PiiKeys {
        PiiKeys::from_spec(&fixed_spec()).unwrap()
    }

    fn assert_no_key_material(text: &str) {
        for key in [K1, K2, IX] {
            assert!(!text.contains(&b64(&key)), "key material in {text:?}");
            assert!(!text.contains(&b64(&key)[..8]), "key material in {text:?}");
        }
    }

    fn unique_temp_path(tag: &str) -> PathBuf {
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        std::env::temp_dir().join(format!(
            "cva-pii-{tag}-{}-{}.keys",
            std::process::id(),
            hex::encode(nonce)
        ))
    }

    #[test]
    fn round_trip_for_each_field() {
        let keys = keys();
        for field in Field::ALL {
            for value in [
                "Aminata Traoré",
                "+22376123456",
                "",
                "ML-1234 567 890",
                "ناصر 李",
            ] {
                let sealed = keys.seal(field, value);
                assert!(sealed.starts_with("v1.k1."));
                assert!(!sealed.contains(value) || value.is_empty());
                assert_eq!(keys.open(field, &sealed).unwrap(), value);
            }
        }
    }

    #[test]
    fn field_names() {
        let names: Vec<_> = Field::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            names,
            ["head_name", "msisdn", "national_id", "biometric_ref"]
        );
        assert_eq!(Field::NationalId.to_string(), "national_id");
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let keys = keys();
        let a = keys.seal(Field::HeadName, "Aminata Traoré");
        let b = keys.seal(Field::HeadName, "Aminata Traoré");
        assert_ne!(a, b);
        assert_eq!(keys.open(Field::HeadName, &a).unwrap(), "Aminata Traoré");
        assert_eq!(keys.open(Field::HeadName, &b).unwrap(), "Aminata Traoré");
    }

    #[test]
    fn tampering_with_any_byte_is_detected() {
        let keys = keys();
        let sealed = keys.seal(Field::Msisdn, "+22376123456");
        let body = sealed.rsplit('.').next().unwrap();
        let raw = URL_SAFE_NO_PAD.decode(body).unwrap();
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 0x01;
            let forged = format!("v1.k1.{}", URL_SAFE_NO_PAD.encode(&altered));
            let err = keys.open(Field::Msisdn, &forged).unwrap_err();
            assert!(matches!(err, PiiError::Tampered), "byte {i}: {err:?}");
            assert_eq!(
                err.to_string(),
                "ciphertext was altered or belongs to another field"
            );
        }
        // Truncated or garbled text is an error too, never a panic.
        assert!(keys
            .open(Field::Msisdn, &sealed[..sealed.len() - 1])
            .is_err());
        assert!(matches!(
            keys.open(Field::Msisdn, "v1.k1.AAAA"),
            Err(PiiError::MalformedSealed)
        ));
        assert!(matches!(
            keys.open(Field::Msisdn, "v1.k1.not base64!"),
            Err(PiiError::MalformedSealed)
        ));
    }

    #[test]
    fn wrong_field_is_rejected() {
        let keys = keys();
        let sealed = keys.seal(Field::Msisdn, "+22376123456");
        for field in [Field::HeadName, Field::NationalId, Field::BiometricRef] {
            assert!(matches!(keys.open(field, &sealed), Err(PiiError::Tampered)));
        }
    }

    #[test]
    fn malformed_and_unknown_sealed_values() {
        let keys = keys();
        let sealed = keys.seal(Field::HeadName, "Aminata Traoré");
        let other = sealed.replacen("v1.k1.", "v1.k9.", 1);
        let err = keys.open(Field::HeadName, &other).unwrap_err();
        assert!(matches!(err, PiiError::UnknownKeyId(ref id) if id == "k9"));
        assert_eq!(err.to_string(), "unknown key id `k9`");

        // A plaintext stored by mistake is not echoed back in the error.
        let err = keys.open(Field::HeadName, "Aminata Traoré").unwrap_err();
        assert!(matches!(err, PiiError::MalformedSealed));
        assert!(!err.to_string().contains("Aminata"));
        let err = keys.open(Field::HeadName, "Aminata.Traoré.x").unwrap_err();
        assert!(matches!(err, PiiError::UnsupportedVersion));
        assert!(!format!("{err} {err:?}").contains("Aminata"));
        let err = keys.open(Field::HeadName, "v1.Traoré.xyz").unwrap_err();
        assert!(matches!(err, PiiError::MalformedSealed));
        assert!(matches!(
            keys.open(Field::HeadName, &sealed.replacen("v1.", "v2.", 1)),
            Err(PiiError::UnsupportedVersion)
        ));
    }

    #[test]
    fn unknown_key_id_after_losing_a_key() {
        let sealed = keys().seal(Field::NationalId, "ML1234567890");
        let (other, _) = PiiKeys::generate();
        assert!(matches!(
            other.open(Field::NationalId, &sealed),
            Err(PiiError::Tampered)
        ));
        let only_k2 =
            PiiKeys::from_spec(&format!("active=k2;enc=k2:{};index={}", b64(&K2), b64(&IX)))
                .unwrap();
        assert!(matches!(
            only_k2.open(Field::NationalId, &sealed),
            Err(PiiError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let (mut keys, spec1) = PiiKeys::generate();
        assert_eq!(keys.active_key_id(), "k1");
        let old = keys.seal(Field::HeadName, "Fatoumata Diallo");
        let index_before = keys.blind_index(Field::HeadName, "FATOUMATA DIALLO");

        let spec2 = keys.rotate("k2").unwrap();
        assert_ne!(spec1, spec2);
        assert_eq!(keys.active_key_id(), "k2");
        let new = keys.seal(Field::HeadName, "Fatoumata Diallo");
        assert_eq!(PiiKeys::key_id_of(&old), Some("k1"));
        assert_eq!(PiiKeys::key_id_of(&new), Some("k2"));
        assert_eq!(
            keys.open(Field::HeadName, &old).unwrap(),
            "Fatoumata Diallo"
        );
        assert_eq!(
            keys.open(Field::HeadName, &new).unwrap(),
            "Fatoumata Diallo"
        );
        // The index key does not rotate.
        assert_eq!(
            keys.blind_index(Field::HeadName, "FATOUMATA DIALLO"),
            index_before
        );

        // The returned spec reproduces the rotated keys.
        let reloaded = PiiKeys::from_spec(&spec2).unwrap();
        assert_eq!(reloaded.active_key_id(), "k2");
        assert_eq!(
            reloaded.open(Field::HeadName, &old).unwrap(),
            "Fatoumata Diallo"
        );
        assert_eq!(
            reloaded.open(Field::HeadName, &new).unwrap(),
            "Fatoumata Diallo"
        );

        assert!(matches!(
            keys.rotate("k2"),
            Err(PiiError::DuplicateKeyId(_))
        ));
        assert!(matches!(keys.rotate("K3"), Err(PiiError::InvalidKeyId)));
        assert!(matches!(keys.rotate(""), Err(PiiError::InvalidKeyId)));
        assert!(matches!(
            keys.rotate("a-very-long-key-id"),
            Err(PiiError::InvalidKeyId)
        ));
        assert_eq!(keys.active_key_id(), "k2");
    }

    #[test]
    fn key_id_of() {
        assert_eq!(PiiKeys::key_id_of("v1.k_2-b.AAAA"), Some("k_2-b"));
        assert_eq!(PiiKeys::key_id_of("v2.k1.AAAA"), None);
        assert_eq!(PiiKeys::key_id_of("v1.k1"), None);
        assert_eq!(PiiKeys::key_id_of("v1.K1.AAAA"), None);
        assert_eq!(PiiKeys::key_id_of("Aminata"), None);
        assert_eq!(PiiKeys::key_id_of(""), None);
    }

    #[test]
    fn blind_index_is_deterministic_and_separated() {
        let keys = keys();
        let a = keys.blind_index(Field::Msisdn, "+22376123456");
        assert_eq!(a, keys.blind_index(Field::Msisdn, "+22376123456"));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, keys.blind_index(Field::Msisdn, "+22376123457"));
        assert_ne!(a, keys.blind_index(Field::NationalId, "+22376123456"));
        // Same enc keys, different index key.
        let other =
            PiiKeys::from_spec(&format!("active=k1;enc=k1:{};index={}", b64(&K1), b64(&K2)))
                .unwrap();
        assert_ne!(a, other.blind_index(Field::Msisdn, "+22376123456"));
        // Reference value: HMAC-SHA256(IX, "msisdn\0+22376123456").
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&IX).unwrap();
        mac.update(b"msisdn\0+22376123456");
        assert_eq!(a, hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn spec_parsing_is_lenient_about_layout() {
        let spec = format!(
            "\n  index = {} ;\n enc = k2:{} , k1:{} ;\n active = k2 \n;\n",
            b64(&IX),
            b64(&K2),
            b64(&K1)
        );
        let keys = PiiKeys::from_spec(&spec).unwrap();
        assert_eq!(keys.active_key_id(), "k2");
        let sealed = keys.seal(Field::HeadName, "Awa");
        assert_eq!(self::keys().open(Field::HeadName, &sealed).unwrap(), "Awa");
        assert_eq!(
            keys.blind_index(Field::HeadName, "AWA"),
            self::keys().blind_index(Field::HeadName, "AWA")
        );
    }

    #[test]
    fn spec_errors_do_not_echo_key_material() {
        let k1 = b64(&K1);
        let ix = b64(&IX);
        let short = b64(&K1[..31]);
        let cases: Vec<(String, &str)> = vec![
            (
                format!("active=k1;enc=k1:{}!;index={ix}", &k1[..20]),
                "key `k1` is not valid standard base64",
            ),
            (
                format!("active=k1;enc=k1:{short};index={ix}"),
                "key `k1` must be 32 bytes after base64 decoding, not 31",
            ),
            (
                format!("active=k1;enc=k1:{k1};index={short}"),
                "key `index` must be 32 bytes after base64 decoding, not 31",
            ),
            (
                format!("active=k2;enc=k1:{k1};index={ix}"),
                "active key id `k2` is not among the encryption keys",
            ),
            (
                format!("active=k1;enc=k1:{k1}"),
                "key spec has no `index=` part",
            ),
            (
                format!("enc=k1:{k1};index={ix}"),
                "key spec has no `active=` part",
            ),
            (
                format!("active=k1;index={ix}"),
                "key spec has no `enc=` part",
            ),
            (
                format!("active=k1;enc=k1:{k1},k1:{k1};index={ix}"),
                "key id `k1` is used twice",
            ),
            (
                format!("active=k1;enc=k1:{k1};index={ix};index={ix}"),
                "key spec has the `index=` part twice",
            ),
            (
                format!("active=k1;enc=K1:{k1};index={ix}"),
                "invalid key id: expected 1 to 16 characters among a-z, 0-9, `_` and `-`",
            ),
            (
                format!("active=k1;enc={k1};index={ix}"),
                "key spec `enc=` entries must look like `ID:BASE64`, separated by commas",
            ),
            // A key pasted without its part name: base64 padding contains '='.
            (
                format!("active=k1;enc=k1:{k1};{ix}"),
                "key spec has a part that is not `active=`, `enc=` or `index=`",
            ),
            (
                format!("active=k1;enc=k1:{k1};index={ix};{k1}"),
                "key spec has a part that is not `active=`, `enc=` or `index=`",
            ),
            (String::new(), "key spec has no `active=` part"),
        ];
        for (spec, message) in cases {
            let err = PiiKeys::from_spec(&spec).unwrap_err();
            assert_eq!(err.to_string(), message, "spec case {message}");
            assert_no_key_material(&format!("{err} {err:?}"));
        }
    }

    #[test]
    fn debug_shows_only_key_ids() {
        let keys = keys();
        let debug = format!("{keys:?} {keys:#?}");
        assert!(debug.contains("k1") && debug.contains("k2"));
        assert_no_key_material(&debug);
        assert!(!debug.contains("17, 17"), "raw key bytes in {debug}");

        let (generated, spec) = PiiKeys::generate();
        let debug = format!("{generated:?}");
        for part in spec.split([';', ',', ':', '=']) {
            if part.len() >= 40 {
                assert!(!debug.contains(part));
                assert!(!debug.contains(&part[..12]));
            }
        }
    }

    #[test]
    fn generated_spec_reproduces_the_keys() {
        let (keys, spec) = PiiKeys::generate();
        let again = PiiKeys::from_spec(&spec).unwrap();
        let sealed = keys.seal(Field::BiometricRef, "iris:0042");
        assert_eq!(
            again.open(Field::BiometricRef, &sealed).unwrap(),
            "iris:0042"
        );
        assert_eq!(
            keys.blind_index(Field::BiometricRef, "iris:0042"),
            again.blind_index(Field::BiometricRef, "iris:0042")
        );
        let (other, other_spec) = PiiKeys::generate();
        assert_ne!(spec, other_spec);
        assert_ne!(
            keys.blind_index(Field::Msisdn, "+22376123456"),
            other.blind_index(Field::Msisdn, "+22376123456")
        );
    }

    #[test]
    fn load_or_create_creates_once_then_reloads() {
        let path = unique_temp_path("create");
        assert!(!path.exists());
        let created = PiiKeys::load_or_create(&path).unwrap();
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let content = std::fs::read_to_string(&path).unwrap();

        let reloaded = PiiKeys::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            content,
            "file rewritten"
        );
        let sealed = created.seal(Field::HeadName, "Moussa Keïta");
        assert_eq!(
            reloaded.open(Field::HeadName, &sealed).unwrap(),
            "Moussa Keïta"
        );
        assert_eq!(
            created.blind_index(Field::Msisdn, "+22376123456"),
            reloaded.blind_index(Field::Msisdn, "+22376123456")
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn load_or_create_reports_a_bad_file_without_its_content() {
        let path = unique_temp_path("bad");
        let short = b64(&K1[..31]);
        std::fs::write(&path, format!("active=k1;enc=k1:{short};index={short}")).unwrap();
        let err = PiiKeys::load_or_create(&path).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, PiiError::KeyFile { .. }));
        assert!(text.contains("must be 32 bytes"), "{text}");
        assert!(!text.contains(&short[..12]));
        // The bad file is left alone, not replaced with fresh keys.
        assert!(std::fs::read_to_string(&path).unwrap().contains(&short));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn load_or_create_race_yields_one_key_set() {
        let path = unique_temp_path("race");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || PiiKeys::load_or_create(&path).unwrap())
            })
            .collect();
        let all: Vec<PiiKeys> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let index = all[0].blind_index(Field::Msisdn, "+22376123456");
        for keys in &all {
            assert_eq!(keys.blind_index(Field::Msisdn, "+22376123456"), index);
        }
        std::fs::remove_file(&path).unwrap();
    }
}
