//! Benchmark: how long one payment takes end to end (start → workflow
//! result) with an instant gateway, on the real parts: the Temporal dev
//! server, PostgreSQL, the simulators and the callback receiver. Prints
//! numbers; asserts nothing about time.
//!
//!     make bench-saga            # 300 payments, one at a time, then 20 at a time
//!     cargo run -p paysaga-worker --example saga_latency -- <count> <concurrency>...

use std::time::{Duration, Instant};

use paysaga_api::PaymentMethod;
use paysaga_api::saga::PaymentInput;
use paysaga_common::temporal::{TemporalOpts, connect};
use paysaga_testenv::Service;
use paysaga_worker::activities::Endpoints;
use paysaga_worker::worker::{WorkerConfig, open_ledger, run};
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowStartOptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn one(client: &Client, queue: &str, fraud_queue: &str, id: String) -> Duration {
    let input = PaymentInput {
        payment_id: id.clone(),
        user_id: "bench".into(),
        amount: 100,
        currency: "EUR".into(),
        method: PaymentMethod::Card,
        description: None,
        notify: None,
        confirmation_timeout_secs: 60,
        fraud_task_queue: fraud_queue.to_string(),
        compensation_max_attempts: 20,
        escalation: Default::default(),
        requested_by: None,
        object: None,
        request_id: None,
    };
    let t0 = Instant::now();
    let handle = client
        .start_workflow(
            PaymentWorkflow::run,
            input,
            WorkflowStartOptions::new(queue, id).build(),
        )
        .await
        .expect("start");
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .expect("result");
    assert_eq!(outcome.phase, paysaga_api::Phase::Succeeded, "{outcome:?}");
    t0.elapsed()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let mut concurrencies: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if concurrencies.is_empty() {
        concurrencies = vec![1, 20];
    }

    let temporal = paysaga_testenv::temporal();
    let dir = paysaga_testenv::run_dir().join("bench");
    let api = Service::api(&dir.join("api"), &temporal.address, None)?;
    let callback = format!("{}/v1/gateway/callbacks", api.url);
    // An instant gateway: no latency, confirmation sent at once.
    let sim = Service::sim(
        &dir.join("sim"),
        &callback,
        None,
        &["--callback-delay-ms=0"],
    )?;
    let database_url = paysaga_testenv::postgres().database("bench")?;
    let opts = TemporalOpts {
        temporal_address: temporal.address.clone(),
        temporal_namespace: temporal.namespace.clone(),
        codec_keys_file: Some(paysaga_testenv::codec_keys_file().to_path_buf()),
    };
    let queue = paysaga_testenv::unique_name("bench");
    let config = WorkerConfig {
        payments_task_queue: format!("{queue}-payments"),
        fraud_task_queue: format!("{queue}-fraud"),
        max_cached_workflows: 1000,
        max_concurrent_workflow_tasks: 50,
        max_concurrent_activities: 100,
        graceful_shutdown_secs: 5,
        database_url,
        database_max_connections: 20,
        seed_accounts: format!("bench:EUR:{}", 1_000_000_000),
        admin_listen: None,
        webhooks: Default::default(),
        endpoints: Endpoints {
            gateway_url: sim.url.clone(),
            fraud_url: sim.url.clone(),
            notify_url: sim.url.clone(),
            callback_url: None,
        },
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let worker_config = config.clone();
    let worker_opts = opts.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ledger = open_ledger(&worker_config).await?;
            let client = connect(&worker_opts, "bench-worker").await?;
            run(
                client,
                ledger,
                &worker_config,
                Default::default(),
                Default::default(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    });

    rt.block_on(async {
        let client = connect(&opts, "bench").await?;
        // Warm-up: caches, connections, the first workflow tasks.
        for i in 0..10 {
            one(&client, &config.payments_task_queue, &config.fraud_task_queue, format!("{queue}-warm-{i}")).await;
        }
        println!("payments end to end (start → result), instant gateway, {count} per run");
        for c in concurrencies {
            let started = Instant::now();
            let mut latencies = Vec::with_capacity(count);
            let mut next = 0;
            while next < count {
                let batch: Vec<_> = (next..(next + c).min(count))
                    .map(|i| one(&client, &config.payments_task_queue, &config.fraud_task_queue, format!("{queue}-c{c}-{i}")))
                    .collect();
                next += batch.len();
                latencies.extend(futures::future::join_all(batch).await);
            }
            let wall = started.elapsed();
            latencies.sort();
            println!(
                "concurrency {c:>3}: p50 {:>4} ms  p95 {:>4} ms  p99 {:>4} ms  max {:>4} ms  ({:.1} payments/s)",
                percentile(&latencies, 0.50).as_millis(),
                percentile(&latencies, 0.95).as_millis(),
                percentile(&latencies, 0.99).as_millis(),
                latencies.last().unwrap().as_millis(),
                count as f64 / wall.as_secs_f64()
            );
        }
        // Where the time of one payment goes (workflow time, from its first step).
        let last = format!("{queue}-warm-9");
        let progress = client
            .get_workflow_handle::<PaymentWorkflow>(last)
            .query(PaymentWorkflow::status, (), temporalio_client::WorkflowQueryOptions::default())
            .await?;
        let t0 = progress.history.first().map(|r| r.at_ms).unwrap_or_default();
        println!("timeline of one payment (ms from its first step):");
        for r in &progress.history {
            println!("  {:>5}  {:?} {:?}", r.at_ms - t0, r.step, r.event);
        }
        anyhow::Ok(())
    })?;
    let _ = stop_tx.send(());
    worker.join().expect("worker thread")?;
    drop(sim);
    drop(api);
    Ok(())
}
