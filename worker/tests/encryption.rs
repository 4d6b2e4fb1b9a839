//! Payload encryption against the real Temporal dev server: what Temporal
//! stores of a real payment holds no payer data in plaintext; keys rotate
//! without losing old histories; a payload that does not decrypt stops the
//! workflow loudly before any money moves.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use futures::future::BoxFuture;
use paysaga_api::{Notify, Phase};
use paysaga_common::codec::{CodecError, EncryptionCodec, KEY_ID_KEY, is_encrypted};
use paysaga_common::temporal::{TemporalOpts, connect, connect_with};
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::{
    Client, WorkflowFetchHistoryOptions, WorkflowHistory, WorkflowStartOptions,
    WorkflowTerminateOptions,
};
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
    SerializationContextData,
};
use temporalio_common::payload_visitor::{
    AsyncPayloadVisitor, PayloadField, PayloadFieldData, PayloadVisitable,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

const EMAIL: &str = "payer.private@example.com";
const PHONE: &str = "+15550104321";
const AMOUNT: i64 = 4321;
const USER: &str = "alice";

/// Every payload of a message, with the path of its field.
#[derive(Default)]
struct Collect(Vec<(&'static str, Payload)>);

impl AsyncPayloadVisitor for Collect {
    fn visit<'a>(
        &'a mut self,
        field: PayloadField<'a>,
    ) -> BoxFuture<'a, Result<(), PayloadConversionError>> {
        let path = field.path;
        match field.data {
            PayloadFieldData::Single(p) => self.0.push((path, p.clone())),
            PayloadFieldData::Repeated(ps) => self.0.extend(ps.iter().map(|p| (path, p.clone()))),
            PayloadFieldData::Payloads(ps) => {
                self.0.extend(ps.payloads.iter().map(|p| (path, p.clone())))
            }
        }
        async { Ok(()) }.boxed()
    }
}

async fn payloads(history: &History) -> Vec<(&'static str, Payload)> {
    let mut history = history.clone();
    let mut c = Collect::default();
    history.visit_payloads_mut(&mut c).await.unwrap();
    c.0
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The bytes of a payload, metadata values and data.
fn bytes(p: &Payload) -> Vec<u8> {
    let mut all = p.data.clone();
    for v in p.metadata.values() {
        all.extend_from_slice(v);
    }
    all
}

/// A client that sends payloads as they are: what anyone reading Temporal
/// without the keys sees.
async fn plaintext_client() -> Client {
    let opts = TemporalOpts {
        codec_keys_file: None,
        ..temporal_opts()
    };
    connect(&opts, "encryption-test-raw").await.unwrap()
}

async fn raw_history(raw: &Client, workflow_id: &str) -> History {
    let events = raw
        .get_workflow_handle::<PaymentWorkflow>(workflow_id)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("fetching the history");
    History { events }
}

/// The ids of the child workflows a history started (the fraud check).
fn children(history: &History) -> Vec<String> {
    history
        .events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => {
                a.workflow_execution.as_ref().map(|x| x.workflow_id.clone())
            }
            _ => None,
        })
        .collect()
}

fn input(h: &Harness, id: &str) -> paysaga_api::saga::PaymentInput {
    let mut input = h.input(id, AMOUNT);
    assert_eq!(input.user_id, USER);
    input.notify = Some(Notify {
        email: Some(EMAIL.into()),
        phone: Some(PHONE.into()),
    });
    input
}

/// The run's keyring with `extra` random keys added, written as `primary`
/// over the keys `keep` (every key when empty).
struct Keys {
    all: serde_json::Value,
}

impl Keys {
    fn with(extra: &[&str]) -> Keys {
        let run = std::fs::read_to_string(paysaga_testenv::codec_keys_file()).unwrap();
        let mut all: serde_json::Value = serde_json::from_str(&run).unwrap();
        let fresh: serde_json::Value =
            serde_json::from_str(&paysaga_common::codec::random_keyring_json(extra[0], extra))
                .unwrap();
        for (id, key) in fresh["keys"].as_object().unwrap() {
            all["keys"][id] = key.clone();
        }
        Keys { all }
    }

    fn file(&self, primary: &str, drop: &[&str]) -> PathBuf {
        let mut v = self.all.clone();
        v["primary"] = primary.into();
        v["keys"]
            .as_object_mut()
            .unwrap()
            .retain(|id, _| !drop.contains(&id.as_str()));
        let path = paysaga_testenv::run_dir().join(format!("{}.json", unique("keys")));
        std::fs::write(&path, v.to_string()).unwrap();
        path
    }

    fn opts(&self, primary: &str, drop: &[&str]) -> TemporalOpts {
        TemporalOpts {
            codec_keys_file: Some(self.file(primary, drop)),
            ..temporal_opts()
        }
    }

    fn codec(&self, primary: &str, drop: &[&str]) -> EncryptionCodec {
        EncryptionCodec::from_file(&self.file(primary, drop)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payments_history_holds_no_payer_data_in_plaintext_and_decodes_with_the_keys() {
    let h = Harness::start("enc-plain").await;
    let id = unique("enc-plain");
    h.scenario(&id, confirm()).await;
    let (outcome, progress) = h.pay(input(&h, &id)).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    // The confirmation came as a signal, and progress as memo upserts.
    assert!(!progress.history.is_empty());

    let raw = plaintext_client().await;
    let parent = raw_history(&raw, &id).await;
    let mut histories = vec![(id.clone(), parent.clone())];
    for child in children(&parent) {
        histories.push((child.clone(), raw_history(&raw, &child).await));
    }
    assert!(histories.len() >= 2, "the fraud check's history too");
    let secrets = [EMAIL, PHONE, USER, &AMOUNT.to_string()];
    let codec = EncryptionCodec::from_file(paysaga_testenv::codec_keys_file()).unwrap();
    let mut decoded_all = Vec::new();
    let mut paths = std::collections::BTreeSet::new();
    for (wf, history) in &histories {
        // Outside payloads (failure messages, ids, names): strings as JSON shows them.
        let json = serde_json::to_string(history).unwrap();
        for s in secrets.iter().filter(|s| s.len() > 4) {
            assert!(
                !json.contains(*s),
                "{wf}: {s:?} in plaintext in its history"
            );
        }
        for (path, p) in payloads(history).await {
            paths.insert(path);
            let b = bytes(&p);
            for s in secrets {
                assert!(
                    !contains(&b, s),
                    "{wf}: {s:?} in plaintext in a payload at {path}"
                );
            }
            // Everything but patch markers (written by sdk-core, not through
            // the codec: `{"id":<patch>,"deprecated":..}`), local activity
            // markers' bookkeeping (also sdk-core's: `{"seq":..,
            // "activity_type":..,"attempt":..}` and times; the arguments are
            // not recorded, the result is encrypted) and search attributes
            // (the server indexes them; paysaga's only ones are sdk-core's
            // TemporalChangeVersion, the patch ids) is encrypted.
            if !is_encrypted(&p) {
                let core = serde_json::from_slice::<serde_json::Value>(&p.data).is_ok_and(|v| {
                    (v.get("id").is_some() && v.get("deprecated").is_some())
                        || (v.get("seq").is_some() && v.get("activity_type").is_some())
                });
                assert!(
                    core || path.contains("SearchAttributes"),
                    "{wf}: unencrypted payload at {path}: {p:?}"
                );
            }
            decoded_all.extend(bytes(
                &codec.decrypt(p).expect("decrypting with the run's keys"),
            ));
        }
    }
    for must in [
        "Memo",
        "WorkflowExecutionStartedEventAttributes.input",
        "WorkflowExecutionSignaledEventAttributes.input",
        "WorkflowExecutionCompletedEventAttributes.result",
    ] {
        assert!(
            paths.iter().any(|p| p.contains(must)),
            "no {must} payload seen: {paths:?}"
        );
    }
    for s in secrets {
        assert!(
            contains(&decoded_all, s),
            "{s:?} not in the decoded payloads"
        );
    }
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b_a_history_written_under_an_old_key_replays_and_decodes_after_rotation() {
    let keys = Keys::with(&["k1", "k2"]);
    let mut h = Harness::prepare_with("enc-rotate", keys.opts("k1", &["k2"])).await;
    h.start_worker();
    let id = unique("enc-rotate");
    h.scenario(&id, confirm()).await;
    let (outcome, _) = h.pay(input(&h, &id)).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    h.stop_worker();

    // Recorded as Temporal holds it: encrypted, the input under k1.
    let raw = plaintext_client().await;
    let json = raw
        .get_workflow_handle::<PaymentWorkflow>(&id)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .unwrap();
    let history: History = serde_json::from_slice(&json).unwrap();
    let start_input = payloads(&history)
        .await
        .into_iter()
        .find(|(path, _)| path.contains("WorkflowExecutionStartedEventAttributes.input"))
        .map(|(_, p)| p)
        .expect("the start's input");
    assert!(is_encrypted(&start_input));
    assert_eq!(start_input.metadata[KEY_ID_KEY], b"k1");

    let replay = |codec: EncryptionCodec| {
        let json = json.clone();
        async move {
            let replayer = WorkflowReplayer::new(
                WorkflowReplayerOptions::new()
                    .data_converter(codec.data_converter())
                    .register_workflow::<PaymentWorkflow>()
                    .unwrap()
                    .build(),
            )
            .unwrap();
            tokio::time::timeout(
                Duration::from_secs(60),
                replayer.replay_workflow(WorkflowHistory::from_json(&json).unwrap()),
            )
            .await
        }
    };

    // Rotated: k2 encrypts, k1 still decrypts.
    let rotated = keys.codec("k2", &[]);
    replay(rotated.clone())
        .await
        .expect("replay finishes")
        .expect("the k1 history replays on today's code after the rotation");
    let decoded = rotated.decrypt(start_input.clone()).unwrap();
    assert!(contains(&decoded.data, EMAIL), "{decoded:?}");
    assert!(contains(&decoded.data, PHONE), "{decoded:?}");
    assert_eq!(
        rotated.encrypt(&decoded).unwrap().metadata[KEY_ID_KEY],
        b"k2"
    );

    // k1 removed: loud failures, never plaintext.
    let without_k1 = keys.codec("k2", &["k1"]);
    match without_k1.decrypt(start_input) {
        Err(CodecError::UnknownKey { key_id, .. }) => assert_eq!(key_id, "k1"),
        other => panic!("decoding without k1: {other:?}"),
    }
    match replay(without_k1).await {
        Ok(Ok(())) => panic!("the k1 history replayed without k1"),
        Ok(Err(e)) => eprintln!("replay without k1 fails: {e}"),
        Err(_) => panic!("replay without k1 neither finished nor failed in 60 s"),
    }
}

/// Encrypts with the run's keys, then flips a bit of each ciphertext (as
/// storage corruption or an attacker would).
struct Tamper(EncryptionCodec);

impl PayloadCodec for Tamper {
    fn encode(
        &self,
        context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let encoded = self.0.encode(context, payloads);
        async move {
            let mut ps = encoded.await?;
            for p in ps.iter_mut() {
                let mid = p.data.len() / 2;
                p.data[mid] ^= 0x01;
            }
            Ok(ps)
        }
        .boxed()
    }

    fn decode(
        &self,
        context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        self.0.decode(context, payloads)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn c_an_input_that_does_not_decrypt_fails_the_workflow_task_and_moves_no_money() {
    let h = Harness::start("enc-tamper").await;
    let run_keys = EncryptionCodec::from_file(paysaga_testenv::codec_keys_file()).unwrap();
    let tampering = connect_with(
        &temporal_opts(),
        "encryption-test-tamper",
        DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::default(),
            Tamper(run_keys),
        ),
    )
    .await
    .unwrap();
    // A key the worker does not have, under an id it does not know.
    let stranger = Keys::with(&["stranger"]);
    let foreign = connect(&stranger.opts("stranger", &[]), "encryption-test-foreign")
        .await
        .unwrap();
    let raw = plaintext_client().await;

    for (client, expected) in [
        (&tampering, "does not authenticate"),
        (&foreign, "\"stranger\", which the keyring does not hold"),
    ] {
        let id = unique("enc-tamper");
        h.scenario(&id, confirm()).await;
        client
            .start_workflow(
                PaymentWorkflow::run,
                input(&h, &id),
                WorkflowStartOptions::new(h.payments_queue.clone(), id.clone()).build(),
            )
            .await
            .expect("starting the workflow");
        let failure =
            paysaga_testenv::eventually(Duration::from_secs(60), "a failed workflow task", || {
                let history = paysaga_testenv::block_on(raw_history(&raw, &id));
                history
                    .events
                    .iter()
                    .find_map(|e| match &e.attributes {
                        Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => {
                            a.failure.as_ref().map(|f| f.message.clone())
                        }
                        _ => None,
                    })
                    .ok_or_else(|| {
                        format!("{} events, no WorkflowTaskFailed", history.events.len())
                    })
            });
        assert!(failure.contains(expected), "{id}: {failure}");
        let history = raw_history(&raw, &id).await;
        assert!(
            !history.events.iter().any(|e| matches!(
                e.attributes,
                Some(Attributes::ActivityTaskScheduledEventAttributes(_))
                    | Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(_))
            )),
            "{id}: the workflow went on: {:?}",
            history.events
        );
        raw.get_workflow_handle::<PaymentWorkflow>(&id)
            .terminate(
                WorkflowTerminateOptions::builder()
                    .reason("test over")
                    .build(),
            )
            .await
            .unwrap();
        assert_eq!(h.balance().await, OPENING, "{id}: money moved");
        assert!(
            h.gateway_entry(&id).await.is_none(),
            "{id}: the gateway was called"
        );
    }
    h.audit_is_clean().await;
}
