//! A process writing to the durable log is killed with SIGKILL in the middle of its writes,
//! several times over on the same directory; after each kill the log reopens and holds every
//! entry the process was told was durable, byte for byte.
//!
//! The test runs itself as the child: with `RAFT_WAL_KILL_CHILD` set to a directory, the test
//! function writes to the log there and prints `acked N` after each durable write until it is
//! killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::LogStore;
use raft_core::{Entry, LogIndex, Payload, Term};
use raft_storage::{FileLogOptions, FileLogStore};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "RAFT_WAL_KILL_CHILD";
const TEST_NAME: &str = "a_writer_killed_mid_write_loses_nothing_acknowledged";

fn options() -> FileLogOptions {
    // Small segments, so kills also land around rollovers.
    FileLogOptions::new().segment_bytes(256 * 1024)
}

fn entry(index: u64) -> Entry {
    let data: Vec<u8> = index
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take((index % 97) as usize * 8)
        .collect();
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: Payload::Command(data.into()),
    }
}

/// The child: appends from where the log ends, several writes in flight, until killed.
fn child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut store = FileLogStore::open_with(dir, options()).await.unwrap();
        let recovered = store.recover().await.unwrap();
        let mut next = recovered.entries.last().map_or(1, |e| e.index.0 + 1);
        let mut out = std::io::stdout();
        loop {
            let mut pending = Vec::new();
            for batch in 0..4 {
                let count = 1 + (next + batch) % 13;
                let entries: Vec<Entry> = (next..next + count).map(entry).collect();
                next += count;
                pending.push((next - 1, store.submit_write(None, entries)));
            }
            for (last, answer) in pending {
                answer.await.unwrap();
                writeln!(out, "acked {last}").unwrap();
            }
            out.flush().unwrap();
        }
    });
}

#[test]
fn a_writer_killed_mid_write_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0;
    for round in 0..4 {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a number of acknowledgements that differs per round, or after a while.
        let started = Instant::now();
        let target = 500 + round * 377;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("acked ") {
                acknowledged = acknowledged.max(n.parse::<u64>().unwrap());
                seen += 1;
            }
            if seen >= target || started.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        process.kill().unwrap(); // SIGKILL
        process.wait().unwrap();
        assert!(seen > 0, "round {round}: the child acknowledged nothing");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let entries = runtime.block_on(async {
            let mut store = FileLogStore::open_with(dir.path(), options())
                .await
                .unwrap();
            store.recover().await.unwrap().entries
        });
        assert!(
            entries.len() as u64 >= acknowledged,
            "round {round}: {} entries recovered, {acknowledged} acknowledged",
            entries.len()
        );
        for (i, recovered) in entries.iter().enumerate() {
            assert_eq!(*recovered, entry(i as u64 + 1), "round {round}");
        }
    }
}
