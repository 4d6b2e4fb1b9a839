//! The accounts ledger on both of its databases, its refunds, and the audit
//! command.

use std::process::Command;

use paysaga_worker::audit;
use paysaga_worker::ledger::{Applied, Ledger, LedgerError, RefundClaim, RefundState, parse_seeds};

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

    // Recording says whether it changed anything: a retried activity's
    // second recording does not (the worker counts a payment's end once).
    let record = |phase: &'static str, reason: &'static str| {
        ledger.record_outcome("once", "alice", 5, "EUR", phase, reason)
    };
    assert!(record("Processing", "Accepted").await.unwrap(), "new");
    assert!(
        !record("Processing", "Accepted").await.unwrap(),
        "the same again"
    );
    assert!(record("Failed", "Declined").await.unwrap(), "the end");
    assert!(
        !record("Failed", "Declined").await.unwrap(),
        "the end again"
    );
    assert!(
        record("Failed", "CompensationFailed").await.unwrap(),
        "another reason"
    );
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

/// Audits read while debits commit: each must see one moment. (Read table
/// by table under read committed, an audit could count a debit whose
/// balance change it read before: a discrepancy that is not there.)
async fn audits_while_money_moves(ledger: &Ledger) {
    ledger
        .seed(&parse_seeds("dave:EUR:100000000").unwrap())
        .await
        .unwrap();
    let debits = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                ledger
                    .debit(&format!("moving-{i}"), "dave", "EUR", 1)
                    .await
                    .unwrap();
            }
        })
    };
    let mut audits = 0;
    while !debits.is_finished() {
        audit_is_clean(ledger).await;
        audits += 1;
    }
    debits.await.unwrap();
    assert!(audits > 1, "only {audits} audit ran while money moved");
    audit_is_clean(ledger).await;
    assert_eq!(ledger.balance("dave").await.unwrap(), Some(100000000 - 300));
}

#[tokio::test]
async fn an_audit_on_postgres_sees_one_moment() {
    let _logs = paysaga_testenv::logs_on_failure();
    let url = paysaga_testenv::postgres().database("moment").unwrap();
    audits_while_money_moves(&Ledger::connect(&url, 4).await.unwrap()).await;
}

#[tokio::test]
async fn an_audit_on_sqlite_sees_one_moment() {
    let dir = paysaga_testenv::run_dir().join(paysaga_testenv::unique_name("sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
    audits_while_money_moves(&Ledger::connect(&url, 4).await.unwrap()).await;
}

/// A refund of `amount` of carol's payment `paid`, in EUR.
fn claim(refund_id: &str, amount: i64) -> RefundClaim {
    RefundClaim {
        refund_id: refund_id.into(),
        payment_id: "paid".into(),
        user_id: "carol".into(),
        currency: "EUR".into(),
        amount,
    }
}

async fn audit_is_clean(ledger: &Ledger) -> audit::Report {
    let report = audit::audit(&ledger.snapshot().await.unwrap());
    assert!(report.is_clean(), "{report}");
    report
}

/// Refunds of a succeeded payment: each moves money once, together never
/// more than was captured, and the audit agrees after each step.
async fn refunds(ledger: &Ledger, url: &str) {
    ledger
        .seed(&parse_seeds("carol:EUR:1000,dave:EUR:1000").unwrap())
        .await
        .unwrap();
    ledger.debit("paid", "carol", "EUR", 600).await.unwrap();
    ledger
        .record_outcome("paid", "carol", 600, "EUR", "Succeeded", "Confirmed")
        .await
        .unwrap();
    audit_is_clean(ledger).await;

    // Reserved twice and completed twice: credited once.
    for _ in 0..2 {
        let reserved = ledger.reserve_refund(&claim("r1", 100)).await.unwrap();
        assert_eq!(reserved, RefundState::Reserved);
    }
    let completed = ledger.complete_refund("r1", "gw-r1").await.unwrap();
    assert_eq!(completed, (Applied::Moved, 100));
    let again = ledger.complete_refund("r1", "gw-r1").await.unwrap();
    assert_eq!(again, (Applied::AlreadyDone, 100));
    assert_eq!(
        ledger.reserve_refund(&claim("r1", 100)).await.unwrap(),
        RefundState::Succeeded {
            gateway_refund_id: Some("gw-r1".into()),
            payment_refunded: 100,
        }
    );
    assert_eq!(ledger.balance("carol").await.unwrap(), Some(500));
    assert_eq!(ledger.payment_refunded("paid").await.unwrap(), 100);
    let report = audit_is_clean(ledger).await;
    assert_eq!(report.refunds, 1);
    let eur = report.money["EUR"];
    assert_eq!((eur.captured, eur.refunded), (500, 100));

    // Partial refunds up to 500 of the 600 captured.
    for (id, refunded) in [("r2", 300), ("r3", 500)] {
        let reserved = ledger.reserve_refund(&claim(id, 200)).await.unwrap();
        assert_eq!(reserved, RefundState::Reserved);
        let completed = ledger.complete_refund(id, &format!("gw-{id}")).await;
        assert_eq!(completed.unwrap(), (Applied::Moved, refunded));
        audit_is_clean(ledger).await;
    }

    // Two refunds race for the last 100: exactly one reserves it.
    let (c4, c5) = (claim("r4", 100), claim("r5", 100));
    let (r4, r5) = tokio::join!(ledger.reserve_refund(&c4), ledger.reserve_refund(&c5));
    let (won, lost) = match (&r4, &r5) {
        (Ok(RefundState::Reserved), Err(e)) => ("r4", e),
        (Err(e), Ok(RefundState::Reserved)) => ("r5", e),
        _ => panic!("wanted one reserved and one refused: {r4:?}, {r5:?}"),
    };
    assert!(
        matches!(
            lost,
            LedgerError::ExceedsRefundable {
                captured: 600,
                refunded: 600,
                requested: 100,
                ..
            }
        ),
        "{lost:?}"
    );
    assert!(lost.is_permanent());
    // A reservation counts against what is left even before it completes.
    let over = ledger.reserve_refund(&claim("r6", 1)).await.unwrap_err();
    assert_eq!(
        over.to_string(),
        "payment paid captured 600, of which 600 is refunded or reserved; \
         0 is left, less than the 1 requested"
    );
    audit_is_clean(ledger).await;

    // Released (the gateway refused it): it can no longer complete, and its
    // amount is free again.
    assert_eq!(
        ledger.release_refund(won, "Declined").await.unwrap(),
        Applied::Moved
    );
    assert_eq!(
        ledger.release_refund(won, "Declined").await.unwrap(),
        Applied::AlreadyDone
    );
    let refused = ledger.complete_refund(won, "gw-late").await.unwrap_err();
    assert!(
        matches!(&refused, LedgerError::RefundAlreadyFailed(id) if id == won),
        "{refused:?}"
    );
    assert_eq!(
        ledger.reserve_refund(&claim(won, 100)).await.unwrap(),
        RefundState::Failed {
            reason: "Declined".into()
        }
    );
    assert_eq!(
        ledger.release_refund("never", "x").await.unwrap(),
        Applied::Nothing
    );
    assert!(matches!(
        ledger.complete_refund("never", "gw").await,
        Err(LedgerError::RefundNotReserved(_))
    ));
    assert!(matches!(
        ledger.release_refund("r1", "x").await,
        Err(LedgerError::RefundAlreadySucceeded(_))
    ));
    assert_eq!(ledger.balance("carol").await.unwrap(), Some(900));
    audit_is_clean(ledger).await;

    // The last 100, then not a cent more.
    assert_eq!(
        ledger.reserve_refund(&claim("r7", 100)).await.unwrap(),
        RefundState::Reserved
    );
    let completed = ledger.complete_refund("r7", "gw-r7").await.unwrap();
    assert_eq!(completed, (Applied::Moved, 600));
    assert!(matches!(
        ledger.reserve_refund(&claim("r8", 1)).await,
        Err(LedgerError::ExceedsRefundable {
            captured: 600,
            refunded: 600,
            requested: 1,
            ..
        })
    ));
    assert_eq!(ledger.balance("carol").await.unwrap(), Some(1000));
    let report = audit_is_clean(ledger).await;
    assert_eq!(report.refunds, 4);
    let eur = report.money["EUR"];
    assert_eq!((eur.captured, eur.refunded, eur.in_flight()), (0, 600, 0));

    // Refunds the ledger refuses, for good.
    ledger
        .record_outcome("declined", "carol", 100, "EUR", "Failed", "Declined")
        .await
        .unwrap();
    let not_succeeded = RefundClaim {
        payment_id: "declined".into(),
        ..claim("d1", 100)
    };
    let err = ledger.reserve_refund(&not_succeeded).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "payment declined has not succeeded (Failed); nothing to refund"
    );
    let unknown = RefundClaim {
        payment_id: "unknown".into(),
        ..claim("u1", 100)
    };
    let refused = [
        ledger.reserve_refund(&not_succeeded).await.unwrap_err(),
        ledger.reserve_refund(&unknown).await.unwrap_err(),
        ledger
            .reserve_refund(&RefundClaim {
                currency: "USD".into(),
                ..claim("c1", 1)
            })
            .await
            .unwrap_err(),
        ledger
            .reserve_refund(&RefundClaim {
                user_id: "dave".into(),
                ..claim("c2", 1)
            })
            .await
            .unwrap_err(),
        ledger.reserve_refund(&claim("c3", 0)).await.unwrap_err(),
    ];
    assert!(
        matches!(
            &refused,
            [
                LedgerError::PaymentNotRefundable { phase: Some(_), .. },
                LedgerError::PaymentNotRefundable { phase: None, .. },
                LedgerError::RefundCurrencyMismatch { .. },
                LedgerError::RefundPayerMismatch { .. },
                LedgerError::RefundNotPositive { .. },
            ]
        ),
        "{refused:?}"
    );
    assert!(refused.iter().all(LedgerError::is_permanent));
    audit_is_clean(ledger).await;

    // A refund credit changed behind the ledger's back is named.
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query("UPDATE refund_entries SET amount = amount + 1 WHERE refund_id = 'r2'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let report = audit::audit(&ledger.snapshot().await.unwrap());
    let text = report.to_string();
    assert!(!report.is_clean(), "{text}");
    for named in [
        "DISCREPANCY: refund r2: credited 201 but the refund is recorded for 200",
        "DISCREPANCY: account carol: balance 1000",
        "DISCREPANCY: payment paid: refunded 601 (r1, r2, r3, r7), more than the 600 captured",
    ] {
        assert!(text.contains(named), "{named:?} not in {text}");
    }
}

#[tokio::test]
async fn refunds_on_postgres() {
    let _logs = paysaga_testenv::logs_on_failure();
    let url = paysaga_testenv::postgres().database("refunds").unwrap();
    refunds(&Ledger::connect(&url, 10).await.unwrap(), &url).await;
}

#[tokio::test]
async fn refunds_on_sqlite() {
    let dir = paysaga_testenv::run_dir().join(paysaga_testenv::unique_name("sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
    refunds(&Ledger::connect(&url, 10).await.unwrap(), &url).await;
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
