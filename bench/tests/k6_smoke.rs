//! `k6/smoke.js` against a fresh make-dev stack: a few payments through the
//! HTTP API, every k6 check must pass, and the ledger audit must find money
//! conserved. Correctness only: no latency threshold is asserted.

use paysaga_bench::k6::Run;
use paysaga_testenv::{DevOptions, DevStack};

#[test]
fn the_k6_smoke_run_passes_every_check_and_the_audit_is_clean() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = paysaga_testenv::run_dir().join("k6-smoke");
    let stack = DevStack::start(&dir, &DevOptions::default()).unwrap();
    let run = Run {
        script: "k6/smoke.js",
        env: vec![
            ("BASE_URL".into(), stack.api.url.clone()),
            ("API_TOKEN".into(), stack.api_key.clone()),
            ("SIM_URL".into(), stack.sim.url.clone()),
        ],
        out: &dir,
        verbose: false,
    }
    .go()
    .unwrap();
    let s = &run.summary;
    let passes = s.get("checks", "passes").unwrap_or(0.0);
    let fails = s.get("checks", "fails").unwrap_or(-1.0);
    assert_eq!(
        (run.code, fails),
        (0, 0.0),
        "k6 smoke failed: thresholds {:?}; see {}",
        s.failed_thresholds(),
        dir.display()
    );
    // Every check of the script ran: the contract's 13 and two per concurrent payment.
    assert_eq!(passes, 40.0, "not every check ran");
    assert_eq!(s.count("payments_succeeded"), 11.0);
    assert_eq!(s.count("payments_failed"), 2.0);
    let (report, ok) = stack.audit().unwrap();
    assert!(ok, "{report}");
    assert!(
        report.contains("13 payments (11 succeeded, 2 failed"),
        "{report}"
    );
}
