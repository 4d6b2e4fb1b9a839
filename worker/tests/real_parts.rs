//! The worker's real parts: a workflow through the real Temporal dev server,
//! and SQL on real PostgreSQL.

use paysaga_common::temporal::{TemporalOpts, connect};
use paysaga_worker::ping::{PingActivities, PingWorkflow};
use sqlx::Row;
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_on_the_temporal_dev_server() {
    let temporal = paysaga_testenv::temporal();
    let queue = paysaga_testenv::task_queue("ping");
    let opts = TemporalOpts {
        temporal_address: temporal.address.clone(),
        temporal_namespace: temporal.namespace.clone(),
        codec_keys_file: Some(paysaga_testenv::codec_keys_file().to_path_buf()),
    };
    let client = connect(&opts, "paysaga-test").await.unwrap();

    let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
    let mut worker = Worker::new(
        &runtime,
        client.clone(),
        WorkerOptions::new(queue.name.clone())
            .register_workflow::<PingWorkflow>()
            .unwrap()
            .register_activities(PingActivities)
            .max_cached_workflows(10)
            .build(),
    )
    .unwrap();
    let shutdown = worker.shutdown_handle();

    let workflow_id = format!("ping-{}", queue.name);
    let started = async {
        let handle = client
            .start_workflow(
                PingWorkflow::run,
                "paysaga".to_string(),
                WorkflowStartOptions::new(queue.name.clone(), workflow_id.clone()).build(),
            )
            .await
            .expect("starting the workflow");
        let result = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .expect("reading the workflow's result");
        shutdown();
        result
    };
    let (ran, result) = tokio::join!(worker.run(), started);
    ran.unwrap();
    assert_eq!(result, "pong: paysaga");

    // The server, not the test, holds the record of it.
    let described = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("temporal"))
            .args(["workflow", "describe", "--workflow-id", &workflow_id])
            .args(["--address", &temporal.host_port, "-o", "json"]),
    )
    .unwrap();
    assert!(
        described.contains("WORKFLOW_EXECUTION_STATUS_COMPLETED"),
        "{described}"
    );
}

#[tokio::test]
async fn sql_round_trip_on_postgres() {
    let pg = paysaga_testenv::postgres();
    let url = pg.database("roundtrip").unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE ledger (payment TEXT NOT NULL, kind TEXT NOT NULL, amount BIGINT NOT NULL, UNIQUE (payment, kind))")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ledger VALUES ($1, 'debit', $2)")
        .bind("p-1")
        .bind(1250i64)
        .execute(&pool)
        .await
        .unwrap();
    // The unique key refuses a second debit of the same payment.
    let dup = sqlx::query("INSERT INTO ledger VALUES ($1, 'debit', $2)")
        .bind("p-1")
        .bind(1250i64)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("duplicate key"), "{dup}");
    let row = sqlx::query("SELECT sum(amount)::BIGINT AS total, version() AS v FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("total"), 1250);
    assert!(row.get::<String, _>("v").starts_with("PostgreSQL 15"));
}
