//! Retry timing: exponential backoff with full jitter (a random delay
//! between zero and the exponential bound), so many failed events do not
//! all come back at the same instant. A target's `Retry-After` wins when it
//! asks for longer, up to the time left before `max_age`.

use std::time::{Duration, SystemTime};

use crate::config::RetryConfig;
use crate::store::Disposition;

/// The exponential bound for the retry after attempt `attempt` (1-based).
pub fn bound(cfg: &RetryConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    cfg.initial_delay
        .saturating_mul(1u32 << exp)
        .min(cfg.max_delay)
}

/// A uniformly random duration in `[0, max]`.
pub fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    crate::id::fill_random(&mut b);
    let r = u64::from_le_bytes(b) as f64 / u64::MAX as f64;
    // try_: a configured max_delay near Duration::MAX must not panic on rounding.
    Duration::try_from_secs_f64(max.as_secs_f64() * r)
        .unwrap_or(max)
        .min(max)
}

/// What to do after a failed attempt: retry later, or give up.
pub fn after_failure(
    cfg: &RetryConfig,
    attempt: u32,
    received_at: SystemTime,
    now: SystemTime,
    retry_after: Option<Duration>,
    permanent: bool,
    error: String,
) -> Disposition {
    if permanent {
        return Disposition::Dead { error };
    }
    if attempt >= cfg.max_attempts {
        return Disposition::Dead {
            error: format!("gave up after {attempt} attempts: {error}"),
        };
    }
    // An age limit past the end of time is no limit.
    let age_limit = received_at.checked_add(cfg.max_age);
    // A target's Retry-After is honoured, even beyond max_delay, but only up
    // to the time left before max_age (one last attempt then): it comes from
    // the network and may be anything (18446744073709551615 overflowed the
    // time arithmetic and panicked the delivery task).
    let left = age_limit.map_or(Duration::MAX, |l| {
        l.duration_since(now).unwrap_or(Duration::ZERO)
    });
    let asked = retry_after.unwrap_or(Duration::ZERO).min(left);
    let delay = jitter(bound(cfg, attempt)).max(asked);
    let too_old = || Disposition::Dead {
        error: format!("older than max_age ({:?}): {error}", cfg.max_age),
    };
    let Some(at) = now.checked_add(delay) else {
        return too_old();
    };
    if age_limit.is_some_and(|limit| at > limit) {
        return too_old();
    }
    Disposition::Retry { at, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }

    #[test]
    fn bound_doubles_then_caps() {
        let c = cfg();
        assert_eq!(bound(&c, 1), Duration::from_secs(1));
        assert_eq!(bound(&c, 2), Duration::from_secs(2));
        assert_eq!(bound(&c, 4), Duration::from_secs(8));
        assert_eq!(bound(&c, 5), Duration::from_secs(10));
        assert_eq!(bound(&c, 100), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_bound_and_varies() {
        let max = Duration::from_millis(1000);
        let v: Vec<_> = (0..200).map(|_| jitter(max)).collect();
        assert!(v.iter().all(|d| *d <= max));
        assert!(v.iter().any(|d| *d < Duration::from_millis(250)));
        assert!(v.iter().any(|d| *d > Duration::from_millis(750)));
    }

    #[test]
    fn dispositions() {
        let c = cfg();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        match after_failure(&c, 1, t0, t0, None, false, "e".into()) {
            Disposition::Retry { at, .. } => assert!(at <= t0 + Duration::from_secs(1)),
            d => panic!("{d:?}"),
        }
        match after_failure(
            &c,
            1,
            t0,
            t0,
            Some(Duration::from_secs(120)),
            false,
            "e".into(),
        ) {
            Disposition::Retry { at, .. } => assert!(at >= t0 + Duration::from_secs(120)),
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            after_failure(&c, 5, t0, t0, None, false, "e".into()),
            Disposition::Dead { .. }
        ));
        assert!(matches!(
            after_failure(&c, 1, t0, t0, None, true, "e".into()),
            Disposition::Dead { .. }
        ));
        // A Retry-After from the network is capped at the time left before
        // max_age, whatever it says.
        match after_failure(
            &c,
            1,
            t0,
            t0,
            Some(Duration::from_secs(u64::MAX)),
            false,
            "e".into(),
        ) {
            Disposition::Retry { at, .. } => assert_eq!(at, t0 + c.max_age),
            d => panic!("{d:?}"),
        }
        // Configured extremes do not panic either.
        let huge = RetryConfig {
            max_age: Duration::MAX,
            max_delay: Duration::MAX,
            initial_delay: Duration::MAX,
            ..cfg()
        };
        let _ = after_failure(&huge, 3, t0, t0, Some(Duration::MAX), false, "e".into());
        let old = t0 - Duration::from_secs(3600);
        assert!(matches!(
            after_failure(&c, 2, old, t0, None, false, "e".into()),
            Disposition::Dead { .. }
        ));
    }
}
