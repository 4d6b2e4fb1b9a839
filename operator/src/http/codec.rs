//! The Temporal codec-server protocol: `POST /codec/encode` and
//! `POST /codec/decode`, so the Temporal UI and CLI (`--codec-endpoint`)
//! show the encrypted payloads of paysaga's workflows
//! (`paysaga_common::codec`) to whoever may decode them.
//!
//! Body and answer: `{"payloads":[{"metadata":{"k":"<base64>"},"data":"<base64>"}]}`
//! (the protobuf JSON mapping of `Payloads`). The `X-Namespace` header, when
//! sent, must name the Temporal namespace this API works in: the keys are
//! that namespace's. Who may call is the [`super::auth`] guard's business.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use paysaga_common::codec::{CodecError, EncryptionCodec};
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use super::AppState;
use super::problem::Problem;

/// The header naming the Temporal namespace of the payloads.
pub const NAMESPACE_HEADER: &str = "x-namespace";

/// The codec and the Temporal namespace its keys are for.
#[derive(Clone, Debug)]
pub struct CodecEndpoint {
    codec: EncryptionCodec,
    temporal_namespace: String,
}

impl CodecEndpoint {
    pub fn new(codec: EncryptionCodec, temporal_namespace: &str) -> Self {
        Self {
            codec,
            temporal_namespace: temporal_namespace.to_string(),
        }
    }
}

/// `Payloads` in the protobuf JSON mapping.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonPayloads {
    #[serde(default)]
    pub payloads: Vec<JsonPayload>,
}

/// One `Payload`: metadata values and data base64-encoded.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonPayload {
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub data: String,
}

// The JSON mapping writes standard base64 with padding, and readers accept
// the URL-safe alphabet and missing padding too.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

impl JsonPayload {
    fn to_proto(&self, index: usize) -> Result<Payload, Problem> {
        let bad = |what: &str| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("payloads[{index}]: {what} is not base64"),
            )
        };
        let metadata = self
            .metadata
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    b64_decode(v).ok_or_else(|| bad(&format!("metadata {k:?}")))?,
                ))
            })
            .collect::<Result<_, Problem>>()?;
        Ok(Payload {
            metadata,
            data: b64_decode(&self.data).ok_or_else(|| bad("data"))?,
            ..Default::default()
        })
    }

    fn from_proto(p: &Payload) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        JsonPayload {
            metadata: p
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), b64.encode(v)))
                .collect(),
            data: b64.encode(&p.data),
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Encode,
    Decode,
}

fn transcode(
    endpoint: Option<&CodecEndpoint>,
    headers: &HeaderMap,
    body: &[u8],
    direction: Direction,
) -> Result<JsonPayloads, Problem> {
    let Some(endpoint) = endpoint else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API instance has no payload codec keyring (PAYSAGA_CODEC_KEYS_FILE)",
        ));
    };
    if let Some(ns) = headers.get(NAMESPACE_HEADER) {
        let ns = ns.to_str().unwrap_or_default();
        if ns != endpoint.temporal_namespace {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{NAMESPACE_HEADER} {ns:?}: this codec's keys are for Temporal namespace {:?}",
                    endpoint.temporal_namespace
                ),
            ));
        }
    }
    let sent: JsonPayloads = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid payloads: {e}"),
        )
    })?;
    let payloads = sent
        .payloads
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_proto(i))
        .collect::<Result<Vec<_>, _>>()?;
    let codec = &endpoint.codec;
    let out = match direction {
        Direction::Encode => codec.encrypt_all(&payloads),
        Direction::Decode => codec.decrypt_all(payloads),
    }
    .map_err(codec_problem)?;
    Ok(JsonPayloads {
        payloads: out.iter().map(JsonPayload::from_proto).collect(),
    })
}

fn codec_problem(e: CodecError) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

/// `POST /codec/encode`: encrypts with the primary key.
pub async fn encode(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JsonPayloads>, Problem> {
    transcode(state.codec.as_ref(), &headers, &body, Direction::Encode).map(Json)
}

/// `POST /codec/decode`: decrypts with any key of the keyring; payloads not
/// encrypted come back unchanged.
pub async fn decode(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JsonPayloads>, Problem> {
    transcode(state.codec.as_ref(), &headers, &body, Direction::Decode).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paysaga_common::codec::{Keyring, random_keyring_json};
    use std::path::Path;

    fn endpoint() -> CodecEndpoint {
        let keys = random_keyring_json("k1", &["k1"]);
        let codec = EncryptionCodec::new(Keyring::parse(&keys, Path::new("test")).unwrap());
        CodecEndpoint::new(codec, "default")
    }

    fn plain() -> JsonPayloads {
        let b64 = base64::engine::general_purpose::STANDARD;
        JsonPayloads {
            payloads: vec![
                JsonPayload {
                    metadata: [("encoding".to_string(), b64.encode("json/plain"))].into(),
                    data: b64.encode(r#"{"userId":"alice","amount":1250}"#),
                },
                JsonPayload {
                    metadata: [("encoding".to_string(), b64.encode("binary/null"))].into(),
                    data: String::new(),
                },
            ],
        }
    }

    fn call(
        e: Option<&CodecEndpoint>,
        headers: &HeaderMap,
        body: &JsonPayloads,
        d: Direction,
    ) -> Result<JsonPayloads, Problem> {
        transcode(e, headers, &serde_json::to_vec(body).unwrap(), d)
    }

    fn status(r: Result<JsonPayloads, Problem>) -> StatusCode {
        use axum::response::IntoResponse;
        r.unwrap_err().into_response().status()
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let e = endpoint();
        let h = HeaderMap::new();
        let encoded = call(Some(&e), &h, &plain(), Direction::Encode).unwrap();
        assert_eq!(encoded.payloads.len(), 2);
        let wire = serde_json::to_string(&encoded).unwrap();
        assert!(wire.contains(r#""encryption-key-id":"azE=""#), "{wire}");
        assert!(!wire.contains("alice"), "{wire}");
        let decoded = call(Some(&e), &h, &encoded, Direction::Decode).unwrap();
        assert_eq!(decoded, plain());
    }

    #[test]
    fn decode_passes_plaintext_through_and_reads_lenient_base64() {
        let e = endpoint();
        let body = br#"{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg"},"data":"MQ"}]}"#;
        let out = transcode(Some(&e), &HeaderMap::new(), body, Direction::Decode).unwrap();
        assert_eq!(out.payloads[0].data, "MQ==");
        assert_eq!(out.payloads[0].metadata["encoding"], "anNvbi9wbGFpbg==");
        // Protobuf JSON leaves out empty fields.
        let out = transcode(Some(&e), &HeaderMap::new(), b"{}", Direction::Decode).unwrap();
        assert!(out.payloads.is_empty());
    }

    #[test]
    fn refusals() {
        let e = endpoint();
        let mut other_ns = HeaderMap::new();
        other_ns.insert(NAMESPACE_HEADER, "payments-prod".parse().unwrap());
        assert_eq!(
            status(call(Some(&e), &other_ns, &plain(), Direction::Decode)),
            StatusCode::BAD_REQUEST
        );
        let mut same_ns = HeaderMap::new();
        same_ns.insert(NAMESPACE_HEADER, "default".parse().unwrap());
        assert!(call(Some(&e), &same_ns, &plain(), Direction::Decode).is_ok());
        assert_eq!(
            status(call(None, &same_ns, &plain(), Direction::Decode)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let h = HeaderMap::new();
        assert_eq!(
            status(transcode(Some(&e), &h, b"not json", Direction::Decode)),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let bad = br#"{"payloads":[{"metadata":{},"data":"%%%"}]}"#;
        assert_eq!(
            status(transcode(Some(&e), &h, bad, Direction::Decode)),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        // Encrypted under a key this keyring does not hold: an error, not
        // the ciphertext passed back as if it were plaintext.
        let foreign = call(Some(&endpoint()), &h, &plain(), Direction::Encode).unwrap();
        assert_eq!(
            status(call(Some(&e), &h, &foreign, Direction::Decode)),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
