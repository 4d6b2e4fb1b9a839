//! The README's `make dev` walk-through, run as written against a fresh
//! make-dev stack, so that it cannot drift from what paysaga does.
//!
//! Every `$ ` command of the console blocks between "**`make dev`**" and
//! "**`make test`**" runs in order in bash from the workspace root, with the
//! make-dev addresses (`127.0.0.1:8080`, `:8090`, `:9090`, `$PWD/.dev/`) pointed at
//! this stack (and what it prints pointed back). A command must succeed unless the README shows its error; the
//! output it shows must be what it prints (spaces aside). A watch (`-w`)
//! runs for a while and may print fewer rows than shown (a step shows only
//! once it has lasted a second), but no row the README does not show, and
//! it ends on the README's last row; the AGE column is not compared.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use paysaga_testenv::{DevOptions, DevStack, workspace_root};

/// One `$ command` and the output the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    shown: Vec<String>,
}

/// The console blocks of the `make dev` walk-through.
fn walkthrough(readme: &str) -> Vec<Step> {
    let start = readme
        .find("- **`make dev`**")
        .expect("the README describes make dev");
    let end = start
        + readme[start..]
            .find("- **`make test`**")
            .expect("the README describes make test");
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for line in readme[start..end].lines() {
        let line = line.strip_prefix("  ").unwrap_or(line);
        if line.starts_with("```") {
            in_console = line == "```console";
            continued = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if continued {
            let last = steps.last_mut().unwrap();
            last.command.push('\n');
            last.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            continued = command.ends_with('\\');
            steps.push(Step {
                command: command.to_string(),
                shown: Vec::new(),
            });
        } else if let Some(last) = steps.last_mut() {
            last.shown.push(line.to_string());
        }
    }
    steps
}

fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `kubectl get -w` row without its AGE.
fn row(line: &str) -> String {
    let mut w: Vec<&str> = line.split_whitespace().collect();
    w.pop();
    w.join(" ")
}

fn run(script: &str, cwd: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(cwd)
        .output()
        .expect("running bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_readme_walkthrough_does_what_it_shows_against_make_dev() {
    let _logs = paysaga_testenv::logs_on_failure();
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = walkthrough(&readme);
    assert!(
        steps.len() >= 10,
        "the walk-through was not found whole: {steps:#?}"
    );

    let dir = paysaga_testenv::run_dir().join("readme");
    let stack = DevStack::start(
        &dir,
        &DevOptions {
            prometheus: true,
            ..Default::default()
        }
        .temporal_as_make_dev(),
    )
    .unwrap();
    let prometheus = stack.prometheus.as_ref().expect("started with Prometheus");
    let point = |s: &str| {
        s.replace("$PWD/.dev/", &format!("{}/", dir.display()))
            .replace("http://127.0.0.1:9090", &prometheus.url)
            .replace("http://127.0.0.1:8080", &stack.api.url)
            .replace("http://127.0.0.1:8090", &stack.sim.url)
    };

    let mut exports = String::new();
    let mut checked = 0;
    for step in &steps {
        let command = point(&step.command);
        if command.starts_with("export ") {
            exports.push_str(&command);
            exports.push('\n');
            continue;
        }
        let watch = command.contains(" -w");
        let script = if watch {
            format!("{exports}timeout 15 {command}")
        } else {
            format!("{exports}{command}")
        };
        let (ok, printed) = run(&script, &root);
        // And back: what it prints, as make dev would print it.
        let printed = printed
            .replace(&stack.api.url, "http://127.0.0.1:8080")
            .replace(&stack.sim.url, "http://127.0.0.1:8090")
            .replace(&prometheus.url, "http://127.0.0.1:9090");
        let printed: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
        let context = format!(
            "README command `{}`\nprinted:\n{}\nthe README shows:\n{}",
            step.command,
            printed.join("\n"),
            step.shown.join("\n")
        );
        println!("$ {}\n{}", step.command, printed.join("\n"));
        if watch {
            let shown: Vec<String> = step.shown.iter().map(|l| row(l)).collect();
            for line in &printed {
                assert!(
                    shown.contains(&row(line)),
                    "a row the README does not show: {line}\n{context}"
                );
            }
            assert_eq!(
                printed.last().map(|l| row(l)),
                shown.last().cloned(),
                "the watch does not end as shown\n{context}"
            );
        } else {
            assert!(
                ok || !step.shown.is_empty(),
                "failed, and the README does not say it fails\n{context}"
            );
            if !step.shown.is_empty() {
                let printed: Vec<String> = printed.iter().map(|l| words(l)).collect();
                let shown: Vec<String> = step.shown.iter().map(|l| words(l)).collect();
                assert_eq!(printed, shown, "{context}");
            }
        }
        checked += 1;
        // The watch rows depend on the payment before it having finished.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(checked >= 10, "only {checked} commands ran");
    let (report, ok) = stack.audit().unwrap();
    assert!(ok, "{report}");
}
