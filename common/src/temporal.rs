//! Connecting to Temporal.

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_common::data_converters::DataConverter;
use url::Url;

use crate::codec::{EncryptionCodec, KeyringError};

/// Where Temporal is and who we are.
#[derive(clap::Args, Clone, Debug)]
pub struct TemporalOpts {
    /// Temporal frontend address.
    #[arg(
        long,
        env = "PAYSAGA_TEMPORAL_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    pub temporal_address: String,
    /// Temporal namespace.
    #[arg(long, env = "PAYSAGA_TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,
    /// File holding the payload-encryption keyring (a mounted Secret; see
    /// `paysaga_common::codec`). Without it payloads go to Temporal in plaintext.
    #[arg(long, env = "PAYSAGA_CODEC_KEYS_FILE")]
    pub codec_keys_file: Option<PathBuf>,
}

impl TemporalOpts {
    /// The payload codec, when a keyring is configured.
    pub fn codec(&self) -> Result<Option<EncryptionCodec>, KeyringError> {
        self.codec_keys_file
            .as_deref()
            .map(EncryptionCodec::from_file)
            .transpose()
    }

    /// The data converter clients, workers and replayers use: the codec's,
    /// or the default (plaintext) one, said once per process in a warning.
    pub fn data_converter(&self) -> Result<DataConverter, KeyringError> {
        Ok(match self.codec()? {
            Some(codec) => codec.data_converter(),
            None => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "no codec keyring (PAYSAGA_CODEC_KEYS_FILE): workflow payloads go to Temporal in plaintext"
                    )
                });
                DataConverter::default()
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Temporal address {address:?}: {source}")]
    Address {
        address: String,
        source: url::ParseError,
    },
    #[error("failed to connect to Temporal at {address}: {source}")]
    Connect {
        address: String,
        source: temporalio_client::errors::ClientConnectError,
    },
    #[error("failed to create a Temporal client for namespace {namespace}: {source}")]
    Client {
        namespace: String,
        source: temporalio_client::errors::ClientNewError,
    },
    #[error("failed to load the payload codec: {0}")]
    Codec(#[from] KeyringError),
}

/// Connects a namespace-bound client; `identity` names this process in Temporal's history.
pub async fn connect(opts: &TemporalOpts, identity: &str) -> Result<Client, ConnectError> {
    connect_with(opts, identity, opts.data_converter()?).await
}

/// [`connect`] with this data converter instead of the one `opts` name.
pub async fn connect_with(
    opts: &TemporalOpts,
    identity: &str,
    data_converter: DataConverter,
) -> Result<Client, ConnectError> {
    let address = &opts.temporal_address;
    let target = Url::parse(address).map_err(|source| ConnectError::Address {
        address: address.clone(),
        source,
    })?;
    let connection = Connection::connect(
        ConnectionOptions::new(target)
            .identity(identity.to_string())
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .map_err(|source| ConnectError::Connect {
        address: address.clone(),
        source,
    })?;
    Client::new(
        connection,
        ClientOptions::new(opts.temporal_namespace.clone())
            .data_converter(data_converter)
            // Spans for starts, signals, workflows and activities, and the
            // trace context in their headers, when traces are exported
            // (workers made from this client inherit it).
            .plugins(crate::telemetry::temporal_plugin())
            .build(),
    )
    .map_err(|source| ConnectError::Client {
        namespace: opts.temporal_namespace.clone(),
        source,
    })
}
