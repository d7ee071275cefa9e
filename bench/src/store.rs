//! The durable log store on its own: `store` (concurrent writers appending one entry per call
//! and waiting for durability) and `store-recovery` (the time to reopen a large log).

use crate::{Args, Measured};
use raft_core::node::LogStore;
use raft_core::{Entry, LogIndex, Payload, Term};
use raft_storage::FileLogStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scratch directory for one run, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `--dir` (or the system's temporary directory) joined with a name unique to this run.
    pub fn new(args: &Args, what: &str) -> Result<Scratch, String> {
        let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("raft-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64, payload: &[u8]) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: Payload::Command(payload.into()),
    }
}

/// `--clients` writers share one store (clones of it); each appends one entry of `--payload`
/// bytes per call and waits until it is durable. The next index is taken and the write queued
/// under one lock, so the log stays contiguous; the wait happens outside it, so the writes of
/// all writers that queue while a sync runs go out together with the next one.
pub async fn store(args: &Args, payload: usize) -> Result<Measured, String> {
    let scratch = Scratch::new(args, "store")?;
    let store = FileLogStore::open(scratch.path())
        .await
        .map_err(|e| e.to_string())?;
    let next = Arc::new(Mutex::new(1u64));
    let remaining = Arc::new(Mutex::new(args.ops));
    let data: Arc<[u8]> = vec![0x5a; payload].into();
    // Time a store that has been open a while: its writer has preallocated the segment it
    // writes and the next one (the spare is complete shortly before it is synced).
    let spare = scratch.path().join("spare.tmp");
    let full = raft_storage::FileLogOptions::default().segment_bytes;
    for _ in 0..200 {
        if std::fs::metadata(&spare).is_ok_and(|m| m.len() >= full) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (store, next, remaining, data) = (
            store.clone(),
            Arc::clone(&next),
            Arc::clone(&remaining),
            Arc::clone(&data),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                {
                    let mut left = remaining.lock().map_err(|_| "poisoned lock")?;
                    if *left == 0 {
                        break;
                    }
                    *left -= 1;
                }
                let t0 = Instant::now();
                let durable = {
                    let mut next = next.lock().map_err(|_| "poisoned lock")?;
                    let index = *next;
                    *next += 1;
                    store.submit_write(None, vec![entry(index, &data)])
                };
                durable.await.map_err(|e| e.to_string())?;
                latencies.push(t0.elapsed().as_micros() as u64);
            }
            Ok::<Vec<u64>, String>(latencies)
        }));
    }
    let mut latencies_us = Vec::with_capacity(args.ops as usize);
    for task in tasks {
        latencies_us.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    drop(store);
    Ok(Measured {
        latencies_us,
        elapsed,
    })
}

/// Writes `--ops` entries of `--payload` bytes (default: 1 GiB of 128-byte entries), then
/// reopens the log and times the recovery; reports the disk space an entry costs.
pub async fn recovery(args: &Args, payload: usize) -> Result<(), String> {
    let scratch = Scratch::new(args, "store-recovery")?;
    let data = vec![0x5a; payload];
    let written = Instant::now();
    let mut store = FileLogStore::open(scratch.path())
        .await
        .map_err(|e| e.to_string())?;
    let batch = 4096u64;
    let mut index = 1;
    while index <= args.ops {
        let last = (index + batch - 1).min(args.ops);
        let entries = (index..=last).map(|i| entry(i, &data)).collect();
        store
            .write(None, entries)
            .await
            .map_err(|e| e.to_string())?;
        index = last + 1;
    }
    drop(store);
    let write_s = written.elapsed().as_secs_f64();
    let (mut segment_bytes, mut files) = (0u64, 0u64);
    for file in std::fs::read_dir(scratch.path()).map_err(|e| e.to_string())? {
        let file = file.map_err(|e| e.to_string())?;
        if file.path().extension().is_some_and(|e| e == "wal") {
            segment_bytes += file.metadata().map_err(|e| e.to_string())?.len();
            files += 1;
        }
    }
    let opened = Instant::now();
    let mut store = FileLogStore::open(scratch.path())
        .await
        .map_err(|e| e.to_string())?;
    let recovered = store.recover().await.map_err(|e| e.to_string())?;
    let recover_s = opened.elapsed().as_secs_f64();
    if recovered.entries.len() as u64 != args.ops {
        return Err(format!(
            "recovered {} entries of {}",
            recovered.entries.len(),
            args.ops
        ));
    }
    let log_mb = segment_bytes as f64 / (1 << 20) as f64;
    // Each record: a 9-byte header, then index, term and kind (17 bytes), then the payload.
    let record_bytes = 9 + 17 + payload;
    println!(
        "store-recovery entries {} payload {payload}  log {log_mb:.0} MiB in {files} segments  written in {write_s:.2} s  recovered in {recover_s:.2} s ({:.0} MiB/s)  {record_bytes} bytes per entry on disk",
        args.ops,
        log_mb / recover_s.max(1e-9)
    );
    if args.json {
        println!(
            "{{\"case\":\"store-recovery\",\"entries\":{},\"payload\":{payload},\"log_mb\":{log_mb:.0},\"segments\":{files},\"write_s\":{write_s:.3},\"recover_s\":{recover_s:.3},\"bytes_per_entry\":{record_bytes},\"max_rss_mb\":{}}}",
            args.ops,
            crate::max_rss_mb()
        );
    }
    Ok(())
}
