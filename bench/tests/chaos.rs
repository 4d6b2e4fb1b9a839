//! The short chaos run of `make test`: a small k6 load on a fresh make-dev
//! stack (ledger on PostgreSQL, the gateway simulator durable), and one `kill -9` and restart of each part
//! (worker, controller, API, Temporal server, PostgreSQL, gateway
//! simulator). Every scenario must lose, duplicate and strand nothing, and
//! the ledger audit must pass after each. `make chaos` is the long version,
//! with outages, whose figures are in docs/reliability.md.

use std::time::Duration;

use paysaga_bench::chaos::{self, Options, Scenario, Target};
use paysaga_testenv::DevStack;

#[test]
fn a_kill_of_each_part_under_load_loses_duplicates_and_strands_nothing() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = paysaga_testenv::run_dir().join("chaos");
    let mut stack = DevStack::start(&dir.join("stack"), &chaos::stack_options()).unwrap();
    let scenarios: Vec<Scenario> = Target::ALL
        .into_iter()
        .map(|target| Scenario {
            target,
            down: Duration::ZERO,
        })
        .collect();
    let opts = Options {
        rate: 2.0,
        load: Duration::from_secs(20),
        fault_at: Duration::from_secs(6),
        settle: Duration::from_secs(300),
        out: dir.clone(),
    };
    let rows = chaos::run(&mut stack, &scenarios, &opts).unwrap();
    let table = chaos::table(&rows);
    eprintln!("{table}");
    assert_eq!(rows.len(), Target::ALL.len());
    for row in &rows {
        assert!(row.accepted > 10, "too little load to judge: {row:?}");
        assert!(row.clean(), "{}: not clean\n{table}", row.scenario);
        // Nothing parked for a person either: every charge is known after a
        // restart (the gateway simulator keeps its charges in a file).
        assert_eq!(
            row.in_review, 0,
            "{}: parked for review\n{table}",
            row.scenario
        );
    }
}
