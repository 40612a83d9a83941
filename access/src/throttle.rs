//! Login throttling: after `max_failures` failed logins for one username or one client address
//! within `window`, further attempts are refused (HTTP 429) until the oldest failure ages out.
//! In memory, per server process; a restart forgets (documented in the README).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Keys tracked at most; beyond it the stalest keys are dropped (bounded memory under attack).
const MAX_KEYS: usize = 100_000;

impl LoginThrottle {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        LoginThrottle {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` if any of `keys` is currently throttled.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for k in keys {
            if let Some(q) = map.get_mut(*k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max_failures {
                    if let Some(oldest) = q.front() {
                        wait = wait.max(self.window.saturating_sub(now.duration_since(*oldest)));
                    }
                }
            }
        }
        if wait > Duration::ZERO {
            Err(wait.max(Duration::from_secs(1)))
        } else {
            Ok(())
        }
    }

    pub fn record_failure(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in keys {
            let q = map.entry((*k).to_owned()).or_default();
            q.push_back(now);
            while q.len() > self.max_failures {
                q.pop_front();
            }
        }
    }

    pub fn record_success(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_max_failures() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.check(&["user:a", "ip:1"]).is_ok());
            t.record_failure(&["user:a", "ip:1"]);
        }
        assert!(t.check(&["user:a"]).is_err());
        assert!(t.check(&["ip:1"]).is_err());
        assert!(t.check(&["user:b", "ip:2"]).is_ok());
        t.record_success("user:a");
        assert!(t.check(&["user:a"]).is_ok());
    }
}
