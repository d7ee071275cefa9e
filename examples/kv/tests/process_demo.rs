//! `raft-kv demo` runs its whole scenario (a 3-node cluster under load, a leader killed and
//! restarted, a fourth node added and promoted) and reports that no acknowledged write was
//! lost, with exit code 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};
use support::run;

#[test]
fn the_demo_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let finished = run(dir.path(), &["demo"], Duration::from_secs(120));
    let report = format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        finished.status, finished.stdout, finished.stderr
    );
    assert_eq!(finished.status.code(), Some(0), "{report}");
    assert!(
        finished
            .stdout
            .contains("OK: no acknowledged write was lost"),
        "{report}"
    );
    assert!(!finished.stderr.contains("panicked"), "{report}");
    eprintln!("the demo took {:?}", started.elapsed());
}
