//! Per-key limits: a token bucket for calls, a count of open streams, a
//! token bucket for model tokens.
//!
//! A bucket holds up to `burst` calls and refills at the configured rate;
//! a call takes one or is refused with the time until one is back, which
//! the client gets as `google.rpc.RetryInfo`. Model tokens are charged
//! after the fact (a query's size is known only when it ends), so a key may
//! overdraw once; the next call then waits until the bucket is positive.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::keys::KeyLimitSettings;

/// Why a call over a key's limits was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// More calls a second than the key's `requests_per_second`.
    Requests {
        /// The key's rate.
        per_second: f64,
        /// When one more call would be admitted.
        retry_after: Duration,
    },
    /// The key's `max_streams` streaming calls are already open.
    Streams {
        /// The limit.
        max: u32,
    },
    /// The key used its `tokens_per_minute`.
    Tokens {
        /// The limit.
        per_minute: u64,
        /// When the budget is positive again.
        retry_after: Duration,
    },
}

impl Refusal {
    /// When to try again, if waiting helps by itself.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Requests { retry_after, .. } | Refusal::Tokens { retry_after, .. } => {
                Some(*retry_after)
            }
            // A stream slot frees when one of the key's streams ends.
            Refusal::Streams { .. } => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Requests {
                per_second,
                retry_after,
            } => write!(
                f,
                "the key's limit of {per_second} requests/s is used up; retry in {} ms",
                retry_after.as_millis().max(1)
            ),
            Refusal::Streams { max } => write!(
                f,
                "the key already has its limit of {max} streaming calls open"
            ),
            Refusal::Tokens {
                per_minute,
                retry_after,
            } => write!(
                f,
                "the key's limit of {per_minute} model tokens/minute is used up; retry in {} ms",
                retry_after.as_millis().max(1)
            ),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_second: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: f64, per_second: f64, now: Instant) -> Bucket {
        Bucket {
            capacity,
            per_second,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.at = now;
    }

    /// Takes `amount` if the bucket holds it; else how long until it does.
    fn take(&mut self, amount: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= amount {
            self.level -= amount;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (amount - self.level) / self.per_second,
            ))
        }
    }

    /// Takes `amount` whatever the level (it may go below zero).
    fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level -= amount;
    }
}

/// One key's limits and their state. Kept across reloads of the keys file
/// while the key's settings stay the same.
#[derive(Debug)]
pub struct KeyLimits {
    settings: KeyLimitSettings,
    requests: Option<Mutex<Bucket>>,
    tokens: Option<Mutex<Bucket>>,
    open_streams: AtomicU32,
}

impl KeyLimits {
    /// Fresh state for `settings` (full buckets).
    pub fn new(settings: KeyLimitSettings) -> KeyLimits {
        let now = Instant::now();
        let requests = settings.requests_per_second.map(|rate| {
            let burst = settings.burst.map_or(rate.ceil().max(1.0), f64::from);
            Mutex::new(Bucket::new(burst, rate, now))
        });
        let tokens = settings.tokens_per_minute.map(|per_minute| {
            let per_minute = per_minute as f64;
            Mutex::new(Bucket::new(per_minute, per_minute / 60.0, now))
        });
        KeyLimits {
            settings,
            requests,
            tokens,
            open_streams: AtomicU32::new(0),
        }
    }

    /// The settings this state follows.
    pub fn settings(&self) -> KeyLimitSettings {
        self.settings
    }

    /// Admits one call, or says when one would be.
    pub fn admit_call(&self, now: Instant) -> Result<(), Refusal> {
        let Some(bucket) = &self.requests else {
            return Ok(());
        };
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket
            .take(1.0, now)
            .map_err(|retry_after| Refusal::Requests {
                per_second: bucket.per_second,
                retry_after,
            })
    }

    /// Opens one streaming call; the slot frees when the permit drops.
    pub fn open_stream(self: &Arc<Self>) -> Result<StreamPermit, Refusal> {
        let Some(max) = self.settings.max_streams else {
            return Ok(StreamPermit { limits: None });
        };
        let opened = self
            .open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
        match opened {
            Ok(_) => Ok(StreamPermit {
                limits: Some(Arc::clone(self)),
            }),
            Err(_) => Err(Refusal::Streams { max }),
        }
    }

    /// Whether the key may start spending model tokens now.
    pub fn admit_tokens(&self, now: Instant) -> Result<(), Refusal> {
        let Some(bucket) = &self.tokens else {
            return Ok(());
        };
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.refill(now);
        if bucket.level > 0.0 {
            return Ok(());
        }
        Err(Refusal::Tokens {
            per_minute: bucket.capacity as u64,
            retry_after: Duration::from_secs_f64((1.0 - bucket.level) / bucket.per_second),
        })
    }

    /// Charges model tokens the key used.
    pub fn charge_tokens(&self, tokens: u64, now: Instant) {
        if let Some(bucket) = &self.tokens {
            let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
            bucket.charge(tokens as f64, now);
        }
    }
}

/// One open streaming call of a key.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Option<Arc<KeyLimits>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(limits) = &self.limits {
            limits.open_streams.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(settings: KeyLimitSettings) -> Arc<KeyLimits> {
        Arc::new(KeyLimits::new(settings))
    }

    #[test]
    fn calls_beyond_the_burst_wait_for_the_rate() {
        let l = limits(KeyLimitSettings {
            requests_per_second: Some(10.0),
            burst: Some(3),
            ..Default::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.admit_call(t0).unwrap();
        }
        let Err(Refusal::Requests { retry_after, .. }) = l.admit_call(t0) else {
            panic!("the fourth call at once is over the burst");
        };
        assert!(
            (retry_after.as_secs_f64() - 0.1).abs() < 1e-6,
            "{retry_after:?}"
        );
        l.admit_call(t0 + Duration::from_millis(100)).unwrap();
        assert!(l.admit_call(t0 + Duration::from_millis(100)).is_err());
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            l.admit_call(later).unwrap();
        }
        assert!(l.admit_call(later).is_err());
    }

    #[test]
    fn the_default_burst_is_one_seconds_worth() {
        let l = limits(KeyLimitSettings {
            requests_per_second: Some(2.5),
            ..Default::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.admit_call(t0).unwrap();
        }
        assert!(l.admit_call(t0).is_err());
    }

    #[test]
    fn streams_are_counted_until_their_permits_drop() {
        let l = limits(KeyLimitSettings {
            max_streams: Some(2),
            ..Default::default()
        });
        let a = l.open_stream().unwrap();
        let _b = l.open_stream().unwrap();
        assert_eq!(l.open_stream().unwrap_err(), Refusal::Streams { max: 2 });
        drop(a);
        let _c = l.open_stream().unwrap();
        let unlimited = limits(KeyLimitSettings::default());
        let _many: Vec<_> = (0..100).map(|_| unlimited.open_stream().unwrap()).collect();
    }

    #[test]
    fn tokens_may_be_overdrawn_once_then_wait_until_positive() {
        let l = limits(KeyLimitSettings {
            tokens_per_minute: Some(600),
            ..Default::default()
        });
        let t0 = Instant::now();
        l.admit_tokens(t0).unwrap();
        l.charge_tokens(900, t0);
        let Err(Refusal::Tokens { retry_after, .. }) = l.admit_tokens(t0) else {
            panic!("300 tokens overdrawn");
        };
        // 10 tokens a second: 301 tokens to be back above zero.
        assert!(
            (retry_after.as_secs_f64() - 30.1).abs() < 1e-6,
            "{retry_after:?}"
        );
        assert!(l.admit_tokens(t0 + Duration::from_secs(30)).is_err());
        l.admit_tokens(t0 + Duration::from_secs(31)).unwrap();
    }
}
