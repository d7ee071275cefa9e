//! Rate-limited warnings: a peer that sends a flood of bad input must not turn into a flood of
//! log lines. Each (subject, cause) pair logs at most once per [`WARNING_INTERVAL`]; the rest
//! are counted, and the next line that gets through says how many were suppressed.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How often one subject may log one cause.
pub(crate) const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The most (subject, cause) pairs remembered; beyond it the memory is forgotten at once, so
/// that a flood from ever new addresses cannot grow it (it then logs a little more, once).
const MAX_SUBJECTS: usize = 4096;

/// Decides which warnings are logged.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: Mutex<BTreeMap<(String, &'static str), (Instant, u64)>>,
    /// Warnings not logged, over all subjects and causes.
    pub(crate) suppressed: AtomicU64,
}

impl Warnings {
    /// Whether to log a warning about `subject` (a peer or an address) for `cause` now; if so,
    /// how many were suppressed since the last one logged.
    pub(crate) fn admit(&self, subject: impl ToString, cause: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.len() >= MAX_SUBJECTS {
            last.clear();
        }
        match last.entry((subject.to_string(), cause)) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert((now, 0));
                Some(0)
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let (at, suppressed) = entry.get_mut();
                if now.duration_since(*at) >= WARNING_INTERVAL {
                    let count = *suppressed;
                    *at = now;
                    *suppressed = 0;
                    Some(count)
                } else {
                    *suppressed += 1;
                    crate::tcp::stats::bump(&self.suppressed);
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_subject_and_cause_per_interval() {
        let warnings = Warnings::default();
        assert_eq!(warnings.admit("node 2", "undecodable"), Some(0));
        assert_eq!(warnings.admit("node 2", "undecodable"), None);
        assert_eq!(warnings.admit("node 2", "oversized"), Some(0));
        assert_eq!(warnings.admit("node 3", "undecodable"), Some(0));
        assert_eq!(warnings.admit("node 2", "undecodable"), None);
        tokio::time::advance(WARNING_INTERVAL).await;
        assert_eq!(warnings.admit("node 2", "undecodable"), Some(2));
        assert_eq!(warnings.suppressed.load(Ordering::Relaxed), 2);
    }
}
