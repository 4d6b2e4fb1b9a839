//! The accounts ledger on both of its databases, and the audit command.

use std::process::Command;

use paysaga_worker::audit;
use paysaga_worker::ledger::{Applied, Ledger, LedgerError, parse_seeds};

async fn exercise(ledger: &Ledger) {
    ledger
        .seed(&parse_seeds("alice:EUR:1000,bob:EUR:1000:frozen").unwrap())
        .await
        .unwrap();
    // Seeding again changes nothing.
    ledger
        .seed(&parse_seeds("alice:EUR:5").unwrap())
        .await
        .unwrap();
    assert_eq!(ledger.balance("alice").await.unwrap(), Some(1000));

    assert!(matches!(
        ledger.validate("nobody", "EUR", 1).await,
        Err(LedgerError::NoAccount(_))
    ));
    assert!(matches!(
        ledger.validate("bob", "EUR", 1).await,
        Err(LedgerError::Frozen(_))
    ));
    assert!(matches!(
        ledger.validate("alice", "USD", 1).await,
        Err(LedgerError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        ledger.validate("alice", "EUR", 1001).await,
        Err(LedgerError::InsufficientFunds { .. })
    ));

    // Twenty concurrent debits of 100 against 1000: exactly ten land.
    let ids: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let results =
        futures::future::join_all(ids.iter().map(|id| ledger.debit(id, "alice", "EUR", 100))).await;
    let moved = results
        .iter()
        .filter(|r| matches!(r, Ok(Applied::Moved)))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::InsufficientFunds { .. })))
        .count();
    assert_eq!((moved, refused), (10, 10), "{results:?}");
    assert_eq!(ledger.balance("alice").await.unwrap(), Some(0));

    // Outcomes: the ten that moved succeed; the others failed with nothing kept.
    for (i, r) in results.iter().enumerate() {
        let phase = if r.is_ok() { "Succeeded" } else { "Failed" };
        ledger
            .record_outcome(&format!("p{i}"), "alice", 100, "EUR", phase, "Test")
            .await
            .unwrap();
    }
    let report = audit::audit(&ledger.snapshot().await.unwrap());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.money["EUR"].captured, 1000);
}

#[tokio::test]
async fn the_ledger_on_postgres() {
    let _logs = paysaga_testenv::logs_on_failure();
    let url = paysaga_testenv::postgres().database("ledger").unwrap();
    exercise(&Ledger::connect(&url, 10).await.unwrap()).await;
}

#[tokio::test]
async fn the_ledger_on_sqlite() {
    let dir = paysaga_testenv::run_dir().join(paysaga_testenv::unique_name("sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
    exercise(&Ledger::connect(&url, 10).await.unwrap()).await;
}

#[tokio::test]
async fn the_audit_command_names_each_discrepancy_and_fails() {
    let _logs = paysaga_testenv::logs_on_failure();
    let url = paysaga_testenv::postgres().database("audit").unwrap();
    let ledger = Ledger::connect(&url, 2).await.unwrap();
    ledger
        .seed(&parse_seeds("alice:EUR:1000").unwrap())
        .await
        .unwrap();
    ledger.debit("ok", "alice", "EUR", 100).await.unwrap();
    ledger
        .record_outcome("ok", "alice", 100, "EUR", "Succeeded", "Confirmed")
        .await
        .unwrap();

    let audit_cmd = || {
        Command::new(env!("CARGO_BIN_EXE_paysaga-worker"))
            .args(["audit", "--database-url", &url])
            .output()
            .unwrap()
    };
    // A URL with a password is refused on the command line, where ps shows
    // it to every user; the environment is the place for it.
    let refused = Command::new(env!("CARGO_BIN_EXE_paysaga-worker"))
        .args([
            "audit",
            "--database-url",
            "postgres://u:s3cret@127.0.0.1:1/db",
        ])
        .env_remove("PAYSAGA_DATABASE_URL")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("give the URL in PAYSAGA_DATABASE_URL instead"),
        "{said}"
    );
    let clean = audit_cmd();
    let text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");

    // A payment reported failed that kept the money.
    ledger.debit("kept", "alice", "EUR", 250).await.unwrap();
    ledger
        .record_outcome("kept", "alice", 250, "EUR", "Failed", "Declined")
        .await
        .unwrap();
    let dirty = audit_cmd();
    let text = String::from_utf8_lossy(&dirty.stdout);
    assert_eq!(dirty.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DISCREPANCY: payment kept: Failed but debited 250 and credited back only 0"),
        "{text}"
    );
}
