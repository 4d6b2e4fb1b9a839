//! Temporal payload encryption: every workflow input, result, memo, signal,
//! query, update and activity argument is encrypted before it leaves the
//! process, so the Temporal server (its database, its UI, `temporal workflow
//! show`) holds no payer data in plaintext.
//!
//! The metadata follows the conventions of Temporal's other SDKs'
//! encryption samples, `encoding: binary/encrypted` and
//! `encryption-key-id: <id>` (their codecs are not interchangeable with
//! this one: it authenticates the metadata too, below); data
//! = a random 96-bit nonce followed by the AES-256-GCM ciphertext (with its
//! tag) of the original payload, metadata and data, serialized as protobuf.
//! The associated data binds the key id and the encoding, so the metadata
//! cannot be swapped without the tag failing.
//!
//! Decoding passes through a payload whose encoding is not
//! `binary/encrypted` (histories written before encryption still replay);
//! an unknown key id or a ciphertext that does not authenticate is an error,
//! never silently plaintext.
//!
//! Keys come from a file (as a Kubernetes Secret is mounted), never from a
//! flag's value or a log line: JSON
//! `{"primary":"k2","keys":{"k1":"<base64 of 32 bytes>","k2":"…"}}`. The
//! primary key encrypts; every listed key decrypts, so a key is rotated by
//! adding a new one, making it primary, and removing the old one once no
//! history still needed is written under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::FutureExt;
use futures::future::BoxFuture;
use prost::Message;
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
    SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use zeroize::{Zeroize, Zeroizing};

/// The metadata key naming a payload's encoding.
pub const ENCODING_KEY: &str = "encoding";
/// The encoding of an encrypted payload.
pub const ENCODING_ENCRYPTED: &str = "binary/encrypted";
/// The metadata key naming the key a payload was encrypted with.
pub const KEY_ID_KEY: &str = "encryption-key-id";
/// AES-256: 32-byte keys.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Why a keyring file could not be used. Names the file and the key, never
/// the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read the codec keyring {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the codec keyring {path:?} is not JSON of the form {{\"primary\":\"<id>\",\"keys\":{{\"<id>\":\"<base64 of 32 bytes>\"}}}}: {reason}"
    )]
    Parse { path: PathBuf, reason: String },
    #[error("the codec keyring {path:?} lists no keys")]
    NoKeys { path: PathBuf },
    #[error("the codec keyring {path:?} has an empty key id")]
    EmptyKeyId { path: PathBuf },
    #[error("the codec keyring {path:?}: primary key {primary:?} is not among its keys {known:?}")]
    UnknownPrimary {
        path: PathBuf,
        primary: String,
        known: Vec<String>,
    },
    #[error("the codec keyring {path:?}: key {key_id:?} is not valid base64")]
    Base64 { path: PathBuf, key_id: String },
    #[error("the codec keyring {path:?}: key {key_id:?} is {len} bytes, AES-256 needs {KEY_LEN}")]
    Length {
        path: PathBuf,
        key_id: String,
        len: usize,
    },
}

/// Why a payload could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("encrypted payload names no {KEY_ID_KEY}")]
    NoKeyId,
    #[error(
        "payload encrypted with key {key_id:?}, which the keyring does not hold (it holds {known:?})"
    )]
    UnknownKey { key_id: String, known: Vec<String> },
    #[error("payload encrypted with key {key_id:?} is too short to hold a nonce and a tag")]
    Truncated { key_id: String },
    #[error(
        "payload encrypted with key {key_id:?} does not authenticate (tampered, or another key under the same id)"
    )]
    Decrypt { key_id: String },
    #[error("payload decrypted with key {key_id:?} is not a Temporal payload: {reason}")]
    Inner { key_id: String, reason: String },
    #[error("failed to encrypt a payload with key {key_id:?}")]
    Encrypt { key_id: String },
}

impl From<CodecError> for PayloadConversionError {
    fn from(e: CodecError) -> Self {
        PayloadConversionError::EncodingError(Box::new(e))
    }
}

/// The keys: one encrypts, all decrypt. Its `Debug` shows key ids only.
pub struct Keyring {
    primary: String,
    ciphers: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    primary: String,
    keys: BTreeMap<String, String>,
}

impl Drop for KeyringFile {
    fn drop(&mut self) {
        for v in self.keys.values_mut() {
            v.zeroize();
        }
    }
}

impl Keyring {
    /// Reads the keyring file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        Self::parse(&text, path)
    }

    /// Parses a keyring; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyringError> {
        let file: KeyringFile = serde_json::from_str(text).map_err(|e| KeyringError::Parse {
            path: path.to_path_buf(),
            // serde_json's message names a position, not the content.
            reason: e.to_string(),
        })?;
        if file.keys.is_empty() {
            return Err(KeyringError::NoKeys {
                path: path.to_path_buf(),
            });
        }
        let mut ciphers = BTreeMap::new();
        for (id, b64) in &file.keys {
            if id.is_empty() {
                return Err(KeyringError::EmptyKeyId {
                    path: path.to_path_buf(),
                });
            }
            let raw = Zeroizing::new(B64.decode(b64.trim()).map_err(|_| KeyringError::Base64 {
                path: path.to_path_buf(),
                key_id: id.clone(),
            })?);
            if raw.len() != KEY_LEN {
                return Err(KeyringError::Length {
                    path: path.to_path_buf(),
                    key_id: id.clone(),
                    len: raw.len(),
                });
            }
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| KeyringError::Length {
                path: path.to_path_buf(),
                key_id: id.clone(),
                len: raw.len(),
            })?;
            ciphers.insert(id.clone(), cipher);
        }
        if !ciphers.contains_key(&file.primary) {
            return Err(KeyringError::UnknownPrimary {
                path: path.to_path_buf(),
                primary: file.primary.clone(),
                known: ciphers.keys().cloned().collect(),
            });
        }
        Ok(Self {
            primary: file.primary.clone(),
            ciphers,
        })
    }

    /// The id of the key that encrypts.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The ids of every key that decrypts.
    pub fn key_ids(&self) -> Vec<String> {
        self.ciphers.keys().cloned().collect()
    }
}

/// A keyring file's text with fresh random keys named `ids`, `primary`
/// among them (for test environments and `make dev`).
pub fn random_keyring_json(primary: &str, ids: &[&str]) -> Zeroizing<String> {
    let keys: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .map(|id| {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut OsRng, key.as_mut_slice());
            (id.to_string(), B64.encode(key.as_slice()).into())
        })
        .collect();
    Zeroizing::new(serde_json::json!({ "primary": primary, "keys": keys }).to_string())
}

/// The associated data: what the tag binds besides the ciphertext.
fn associated_data(key_id: &str) -> Vec<u8> {
    format!("{ENCODING_ENCRYPTED}\0{key_id}").into_bytes()
}

/// AES-256-GCM payload codec over a [`Keyring`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EncryptionCodec {
    keyring: Arc<Keyring>,
}

impl EncryptionCodec {
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: Arc::new(keyring),
        }
    }

    /// Reads the keyring file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        Keyring::from_file(path).map(Self::new)
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// A data converter with the default payload converter and this codec.
    /// Failures' messages and stack traces are moved into an encoded payload
    /// too (their type and retryability stay readable): a gateway's or
    /// provider's error text may quote what it was sent.
    pub fn data_converter(&self) -> DataConverter {
        DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::new(true),
            self.clone(),
        )
    }

    /// Encrypts one payload with the primary key.
    pub fn encrypt(&self, payload: &Payload) -> Result<Payload, CodecError> {
        let key_id = self.keyring.primary.as_str();
        let cipher = &self.keyring.ciphers[key_id];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = Zeroizing::new(payload.encode_to_vec());
        let aad = associated_data(key_id);
        let sealed = cipher
            .encrypt(
                &nonce,
                AeadPayload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| CodecError::Encrypt {
                key_id: key_id.to_string(),
            })?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&sealed);
        Ok(Payload {
            metadata: [
                (
                    ENCODING_KEY.to_string(),
                    ENCODING_ENCRYPTED.as_bytes().to_vec(),
                ),
                (KEY_ID_KEY.to_string(), key_id.as_bytes().to_vec()),
            ]
            .into(),
            data,
            ..Default::default()
        })
    }

    /// Decrypts one payload; one not encrypted passes through unchanged.
    pub fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if !is_encrypted(&payload) {
            return Ok(payload);
        }
        let key_id = payload
            .metadata
            .get(KEY_ID_KEY)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or(CodecError::NoKeyId)?;
        let cipher = self
            .keyring
            .ciphers
            .get(&key_id)
            .ok_or_else(|| CodecError::UnknownKey {
                key_id: key_id.clone(),
                known: self.keyring.key_ids(),
            })?;
        if payload.data.len() < NONCE_LEN + 16 {
            return Err(CodecError::Truncated { key_id });
        }
        let (nonce, sealed) = payload.data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let aad = associated_data(&key_id);
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &Nonce::from(nonce),
                    AeadPayload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| CodecError::Decrypt {
                    key_id: key_id.clone(),
                })?,
        );
        Payload::decode(plain.as_slice()).map_err(|e| CodecError::Inner {
            key_id,
            reason: e.to_string(),
        })
    }

    pub fn encrypt_all(&self, payloads: &[Payload]) -> Result<Vec<Payload>, CodecError> {
        payloads.iter().map(|p| self.encrypt(p)).collect()
    }

    pub fn decrypt_all(&self, payloads: Vec<Payload>) -> Result<Vec<Payload>, CodecError> {
        payloads.into_iter().map(|p| self.decrypt(p)).collect()
    }
}

/// Whether a payload is encrypted (by this codec or any SDK's sample codec).
pub fn is_encrypted(payload: &Payload) -> bool {
    payload.metadata.get(ENCODING_KEY).map(Vec::as_slice) == Some(ENCODING_ENCRYPTED.as_bytes())
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let r = self.encrypt_all(&payloads).map_err(Into::into);
        async move { r }.boxed()
    }

    fn decode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let r = self.decrypt_all(payloads).map_err(Into::into);
        async move { r }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_payload(s: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())].into(),
            data: s.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn codec(primary: &str, ids: &[&str]) -> (EncryptionCodec, Zeroizing<String>) {
        let text = random_keyring_json(primary, ids);
        let c = EncryptionCodec::new(Keyring::parse(&text, Path::new("test")).unwrap());
        (c, text)
    }

    /// The same key material under another primary, or with keys left out.
    fn rekey(text: &str, primary: &str, keep: &[&str]) -> EncryptionCodec {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["primary"] = primary.into();
        v["keys"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| keep.contains(&k.as_str()));
        EncryptionCodec::new(Keyring::parse(&v.to_string(), Path::new("test")).unwrap())
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let (c, _) = codec("k1", &["k1"]);
        let p = json_payload(r#"{"email":"payer@example.com"}"#);
        let e = c.encrypt(&p).unwrap();
        assert!(is_encrypted(&e));
        assert_eq!(e.metadata[KEY_ID_KEY], b"k1");
        assert!(!e.data.windows(5).any(|w| w == b"payer"));
        assert_eq!(c.decrypt(e).unwrap(), p);
    }

    #[test]
    fn every_payload_gets_its_own_nonce() {
        let (c, _) = codec("k1", &["k1"]);
        let p = json_payload("1");
        assert_ne!(c.encrypt(&p).unwrap().data, c.encrypt(&p).unwrap().data);
    }

    #[test]
    fn plaintext_passes_through_decoding() {
        let (c, _) = codec("k1", &["k1"]);
        let p = json_payload("42");
        assert_eq!(c.decrypt(p.clone()).unwrap(), p);
    }

    #[test]
    fn rotation_old_keys_decrypt_the_primary_encrypts() {
        let (old, text) = codec("k1", &["k1", "k2"]);
        let e1 = old.encrypt(&json_payload("1")).unwrap();
        let new = rekey(&text, "k2", &["k1", "k2"]);
        assert_eq!(new.decrypt(e1.clone()).unwrap(), json_payload("1"));
        assert_eq!(
            new.encrypt(&json_payload("1")).unwrap().metadata[KEY_ID_KEY],
            b"k2"
        );
        let without_k1 = rekey(&text, "k2", &["k2"]);
        assert!(matches!(
            without_k1.decrypt(e1),
            Err(CodecError::UnknownKey { key_id, .. }) if key_id == "k1"
        ));
    }

    #[test]
    fn tampering_is_an_error_never_plaintext() {
        let (c, text) = codec("k1", &["k1", "k2"]);
        let e = c.encrypt(&json_payload("1")).unwrap();
        let mut flipped = e.clone();
        let last = flipped.data.len() - 1;
        flipped.data[last] ^= 1;
        assert!(matches!(
            c.decrypt(flipped),
            Err(CodecError::Decrypt { .. })
        ));
        // The key id is bound: relabelling the payload with another key fails.
        let mut relabelled = e.clone();
        relabelled
            .metadata
            .insert(KEY_ID_KEY.into(), b"k2".to_vec());
        assert!(matches!(
            c.decrypt(relabelled),
            Err(CodecError::Decrypt { .. })
        ));
        let mut short = e;
        short.data.truncate(8);
        assert!(matches!(
            c.decrypt(short),
            Err(CodecError::Truncated { .. })
        ));
        // Another key under the same id.
        let (other, _) = codec("k1", &["k1"]);
        let e = other.encrypt(&json_payload("1")).unwrap();
        assert!(matches!(c.decrypt(e), Err(CodecError::Decrypt { .. })));
        let _ = text;
    }

    #[test]
    fn keyring_errors_name_the_file_and_key_never_the_material() {
        let p = Path::new("/run/keys.json");
        let err = |t: &str| Keyring::parse(t, p).unwrap_err().to_string();
        let short = B64.encode([7u8; 16]);
        let e = err(&format!(r#"{{"primary":"a","keys":{{"a":"{short}"}}}}"#));
        assert!(
            e.contains("/run/keys.json") && e.contains("\"a\"") && e.contains("16 bytes"),
            "{e}"
        );
        assert!(!e.contains(&short), "{e}");
        let e = err(r#"{"primary":"a","keys":{"a":"not base64!"}}"#);
        assert!(
            e.contains("not valid base64") && !e.contains("not base64!"),
            "{e}"
        );
        let good = B64.encode([7u8; 32]);
        let e = err(&format!(r#"{{"primary":"b","keys":{{"a":"{good}"}}}}"#));
        assert!(e.contains("primary key \"b\""), "{e}");
        assert!(err(r#"{"primary":"a","keys":{}}"#).contains("no keys"));
        assert!(err("primary=a").contains("is not JSON"));
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let (c, text) = codec("k2", &["k1", "k2"]);
        let shown = format!("{c:?}");
        assert!(shown.contains("k1") && shown.contains("k2"), "{shown}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (_, k) in v["keys"].as_object().unwrap() {
            assert!(!shown.contains(k.as_str().unwrap()), "{shown}");
        }
    }
}
