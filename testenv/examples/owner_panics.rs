//! Used by `tests/control_plane.rs`: starts a component (`sleep <arg>`), then
//! panics without stopping it. The watchdog must stop the component anyway.

fn main() {
    let marker = std::env::args()
        .nth(1)
        .expect("usage: owner_panics <sleep-seconds>");
    let dir = std::env::temp_dir().join(format!("owner-panics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proc =
        paysaga_testenv::process::Proc::spawn("sleep", &dir, "TERM", "sleep", &[marker]).unwrap();
    std::mem::forget(proc); // no destructor runs, as in a panicking test binary
    std::thread::sleep(std::time::Duration::from_millis(300));
    panic!("the owner dies with its component still running");
}
