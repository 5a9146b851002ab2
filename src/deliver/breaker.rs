//! A circuit breaker per target: after `failures` consecutive failures the
//! target is left alone for `cooldown`, then a single probe is let through
//! (half-open); its success closes the breaker, its failure opens it again.
//! Events wait in the store meanwhile; none are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct Target {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// All breakers of this instance, keyed by target.
#[derive(Debug, Default)]
pub struct Breakers {
    targets: Mutex<HashMap<String, Target>>,
}

impl Breakers {
    /// How many attempts may start now for `target` (at most `want`).
    pub fn permits(&self, target: &str, threshold: u32, want: usize, now: Instant) -> usize {
        if threshold == 0 {
            return want;
        }
        let Ok(map) = self.targets.lock() else {
            return want;
        };
        let Some(t) = map.get(target) else {
            return want;
        };
        match t.open_until {
            None => want,
            Some(until) if now < until => 0,
            Some(_) if t.probing => 0,
            Some(_) => want.min(1),
        }
    }

    /// An attempt is starting: when half-open, it is the one probe.
    pub fn begin(&self, target: &str, now: Instant) {
        if let Ok(mut map) = self.targets.lock() {
            if let Some(t) = map.get_mut(target) {
                if t.open_until.is_some_and(|u| now >= u) {
                    t.probing = true;
                }
            }
        }
    }

    /// Record the result of an attempt.
    pub fn record(&self, target: &str, ok: bool, threshold: u32, cooldown: Duration, now: Instant) {
        if threshold == 0 {
            return;
        }
        let Ok(mut map) = self.targets.lock() else {
            return;
        };
        let t = map.entry(target.to_string()).or_insert(Target {
            failures: 0,
            open_until: None,
            probing: false,
        });
        if ok {
            if t.open_until.is_some() {
                log::info!("circuit breaker for {target} closed: the probe succeeded");
            }
            *t = Target {
                failures: 0,
                open_until: None,
                probing: false,
            };
            return;
        }
        t.failures += 1;
        let was_probe = t.probing;
        t.probing = false;
        if was_probe || t.failures >= threshold {
            if t.open_until.is_none() || was_probe {
                log::warn!(
                    "circuit breaker for {target} open for {cooldown:?} after {} consecutive failure(s)",
                    t.failures
                );
            }
            // A cooldown beyond the end of time keeps the breaker open "for ever".
            t.open_until = Some(
                now.checked_add(cooldown)
                    .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
                    .unwrap_or(now),
            );
        }
    }

    pub fn state(&self, target: &str, now: Instant) -> State {
        let Ok(map) = self.targets.lock() else {
            return State::Closed;
        };
        match map
            .get(target)
            .and_then(|t| t.open_until.map(|u| (u, t.probing)))
        {
            None => State::Closed,
            Some((until, _)) if now < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Every known target and its state, for /status and /metrics.
    pub fn snapshot(&self, now: Instant) -> Vec<(String, State)> {
        let keys: Vec<String> = match self.targets.lock() {
            Ok(m) => m.keys().cloned().collect(),
            Err(_) => return Vec::new(),
        };
        let mut v: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let s = self.state(&k, now);
                (k, s)
            })
            .collect();
        v.sort();
        v
    }
}

impl PartialOrd for State {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for State {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_half_opens_and_closes() {
        let b = Breakers::default();
        let t0 = Instant::now();
        let cd = Duration::from_secs(10);
        assert_eq!(b.permits("x", 3, 5, t0), 5);
        for _ in 0..2 {
            b.record("x", false, 3, cd, t0);
        }
        assert_eq!(b.state("x", t0), State::Closed);
        b.record("x", false, 3, cd, t0);
        assert_eq!(b.state("x", t0), State::Open);
        assert_eq!(b.permits("x", 3, 5, t0 + Duration::from_secs(1)), 0);
        // After the cool-down exactly one probe goes through.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.state("x", later), State::HalfOpen);
        assert_eq!(b.permits("x", 3, 5, later), 1);
        b.begin("x", later);
        assert_eq!(b.permits("x", 3, 5, later), 0);
        // A failed probe opens it again at once.
        b.record("x", false, 3, cd, later);
        assert_eq!(b.state("x", later), State::Open);
        let later2 = later + Duration::from_secs(11);
        assert_eq!(b.permits("x", 3, 5, later2), 1);
        b.begin("x", later2);
        b.record("x", true, 3, cd, later2);
        assert_eq!(b.state("x", later2), State::Closed);
        assert_eq!(b.permits("x", 3, 5, later2), 5);
    }

    #[test]
    fn disabled_breaker_always_permits() {
        let b = Breakers::default();
        let t = Instant::now();
        for _ in 0..10 {
            b.record("y", false, 0, Duration::from_secs(1), t);
        }
        assert_eq!(b.permits("y", 0, 3, t), 3);
    }
}
