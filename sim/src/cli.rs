//! Command line and environment: every flag has an `env` twin.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use paysaga_api::external::SimConfig;

use crate::{RetryPolicy, SimSettings, validate};

/// paysaga-sim: the outside world of the payment saga (payment gateway,
/// email/SMS provider, fraud scoring) as real HTTP services.
#[derive(Parser, Debug, Clone)]
#[command(name = "paysaga-sim", version, about)]
pub struct Cli {
    /// Address to listen on (port 0 picks a free port; the real one is logged).
    #[arg(long, env = "PAYSAGA_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Where confirmations go when a charge names no callbackUrl.
    #[arg(long, env = "PAYSAGA_SIM_CALLBACK_URL", value_parser = http_url)]
    pub callback_url: Option<String>,
    /// Added to every gateway, fraud and notification request.
    #[arg(long, env = "PAYSAGA_SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of gateway calls answered 503.
    #[arg(long, env = "PAYSAGA_SIM_TRANSIENT_FAILURE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub transient_failure_rate: f64,
    /// Share of charges declined (402).
    #[arg(long, env = "PAYSAGA_SIM_DECLINE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub decline_rate: f64,
    /// Delay before a charge's confirmation is sent.
    #[arg(long, env = "PAYSAGA_SIM_CALLBACK_DELAY_MS", default_value_t = 200)]
    pub callback_delay_ms: u64,
    /// Share of confirmations reporting a failed charge.
    #[arg(long, env = "PAYSAGA_SIM_CALLBACK_FAILURE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub callback_failure_rate: f64,
    /// Share of charges never confirmed.
    #[arg(long, env = "PAYSAGA_SIM_CALLBACK_DROP_RATE", default_value_t = 0.0, value_parser = rate)]
    pub callback_drop_rate: f64,
    /// Share of fraud scores forced to 100.
    #[arg(long, env = "PAYSAGA_SIM_FRAUD_REJECT_RATE", default_value_t = 0.0, value_parser = rate)]
    pub fraud_reject_rate: f64,
    /// Seed of the random faults (logged at start; from the clock when not given).
    #[arg(long, env = "PAYSAGA_SIM_SEED")]
    pub seed: Option<u64>,
    /// Keep the gateway's charges, answers and pending confirmations in
    /// this file, so that a restart forgets nothing (as a real gateway);
    /// in memory only without it.
    #[arg(long, env = "PAYSAGA_SIM_STATE_FILE")]
    pub state_file: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "PAYSAGA_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl Cli {
    /// The simulator's settings; without `--seed`, one from the clock.
    /// The settings, with the callback signing key (read from the
    /// environment or a file by the caller, never from the command line).
    pub fn settings(&self, callback_secret: Vec<u8>) -> SimSettings {
        let seed = self.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        SimSettings {
            config: SimConfig {
                latency_ms: self.latency_ms,
                transient_failure_rate: self.transient_failure_rate,
                decline_rate: self.decline_rate,
                callback_delay_ms: self.callback_delay_ms,
                callback_failure_rate: self.callback_failure_rate,
                callback_drop_rate: self.callback_drop_rate,
                fraud_reject_rate: self.fraud_reject_rate,
                callback_url: self.callback_url.clone(),
            },
            callback_secret,
            seed,
            retry: RetryPolicy::default(),
            state_file: self.state_file.clone(),
        }
    }
}

fn rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("a rate is a probability within [0, 1], got {rate}"))
    }
}

fn http_url(text: &str) -> Result<String, String> {
    validate::http_url("the callback URL", text).map(|()| text.to_owned())
}

/// Log format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("paysaga-sim").chain(args.iter().copied()))
    }

    #[test]
    fn flags_become_settings() {
        let cli = parse(&[
            "--listen=127.0.0.1:0",
            "--callback-url=http://127.0.0.1:8080/v1/gateway/callbacks",
            "--latency-ms=5",
            "--transient-failure-rate=0.1",
            "--decline-rate=0.2",
            "--callback-delay-ms=30",
            "--callback-failure-rate=0.3",
            "--callback-drop-rate=0.4",
            "--fraud-reject-rate=1",
            "--seed=7",
        ])
        .expect("valid flags");
        let settings = cli.settings(b"s3cret".to_vec());
        assert_eq!(cli.listen.port(), 0);
        assert_eq!(settings.seed, 7);
        assert_eq!(settings.callback_secret, b"s3cret");
        assert_eq!(
            settings.config,
            SimConfig {
                latency_ms: 5,
                transient_failure_rate: 0.1,
                decline_rate: 0.2,
                callback_delay_ms: 30,
                callback_failure_rate: 0.3,
                callback_drop_rate: 0.4,
                fraud_reject_rate: 1.0,
                callback_url: Some("http://127.0.0.1:8080/v1/gateway/callbacks".into()),
            }
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        let table: [&[&str]; 5] = [
            &["--decline-rate=1.5"],
            &["--fraud-reject-rate=abc"],
            &["--callback-url=ftp://x/y"],
            // A secret is never taken from the command line.
            &["--callback-secret=s"],
            &["--listen=localhost"],
        ];
        for args in table {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
