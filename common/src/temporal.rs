//! Connecting to Temporal.

use std::time::Duration;

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use url::Url;

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
}

/// Connects a namespace-bound client; `identity` names this process in Temporal's history.
pub async fn connect(opts: &TemporalOpts, identity: &str) -> Result<Client, ConnectError> {
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
        ClientOptions::new(opts.temporal_namespace.clone()).build(),
    )
    .map_err(|source| ConnectError::Client {
        namespace: opts.temporal_namespace.clone(),
        source,
    })
}
