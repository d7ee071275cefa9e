//! A limit on repeated warnings: at most one line per remote address and cause every
//! [`LOG_EVERY`], so that a client retrying with a bad token, or a scanner speaking plaintext
//! to the HTTPS port, cannot flood the log. The metrics count every event; the log names each
//! kind once in a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a (remote address, cause) pair stays quiet after it was logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The most pairs remembered. When every one of them was logged within the last
/// [`LOG_EVERY`] (a storm from that many addresses), further new pairs go unlogged until
/// some expire: the table's memory is bounded whatever the traffic.
pub(crate) const MAX_REMEMBERED: usize = 1024;

/// Which (remote address, cause) pairs were logged, and when.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    /// At most [`MAX_REMEMBERED`] entries; `None` stands for a request whose remote address
    /// is not known.
    logged: Mutex<HashMap<(Option<IpAddr>, &'static str), Instant>>,
}

impl LogLimiter {
    /// Whether to log an event of `cause` from `remote` now; if so, it is remembered.
    pub(crate) fn allow(&self, remote: Option<IpAddr>, cause: &'static str) -> bool {
        self.allow_at(remote, cause, Instant::now())
    }

    fn allow_at(&self, remote: Option<IpAddr>, cause: &'static str, now: Instant) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let key = (remote, cause);
        let quiet = |at: &Instant| now.saturating_duration_since(*at) < LOG_EVERY;
        if let Some(at) = logged.get(&key) {
            if quiet(at) {
                return false;
            }
        } else if logged.len() >= MAX_REMEMBERED {
            logged.retain(|_, at| quiet(at));
            if logged.len() >= MAX_REMEMBERED {
                return false;
            }
        }
        logged.insert(key, now);
        true
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.logged.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn one_line_per_address_and_cause_per_period_in_bounded_memory() {
        let limiter = LogLimiter::default();
        let start = Instant::now();
        let a = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let b = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(limiter.allow_at(a, "unknown_token", start));
        assert!(!limiter.allow_at(a, "unknown_token", start + Duration::from_secs(9)));
        assert!(limiter.allow_at(a, "missing_token", start));
        assert!(limiter.allow_at(b, "unknown_token", start));
        assert!(limiter.allow_at(None, "unknown_token", start));
        assert!(limiter.allow_at(a, "unknown_token", start + LOG_EVERY));

        // A storm from many addresses: the table never grows past its cap, and once the
        // entries age out, new addresses are logged again.
        let storm = LogLimiter::default();
        for i in 0..(MAX_REMEMBERED as u32 + 500) {
            let ip = Some(IpAddr::V4(Ipv4Addr::from(i)));
            let logged = storm.allow_at(ip, "plaintext", start);
            assert_eq!(logged, (i as usize) < MAX_REMEMBERED, "address {i}");
            assert!(storm.remembered() <= MAX_REMEMBERED);
        }
        let later = start + LOG_EVERY;
        let new = Some(IpAddr::V4(Ipv4Addr::from(u32::MAX)));
        assert!(storm.allow_at(new, "plaintext", later));
        assert_eq!(storm.remembered(), 1);
    }
}
