//! Brute-force throttling of sign-ins: failed attempts are counted per account and per client
//! address over a sliding window, and once either is over its limit no password is checked
//! (Argon2id is not even run) until the oldest failure leaves the window.
//!
//! The counts live in the process: behind several replicas each counts alone, which multiplies
//! the limits by the number of replicas (still a hard bound). A shared store would remove that.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in the window before an account is held back.
pub const ACCOUNT_FAILURES: usize = 5;
/// Failures allowed in the window from one address (several accounts may share an address).
pub const ADDRESS_FAILURES: usize = 20;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Above this many tracked keys, keys without recent failures are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

impl SignInThrottle {
    /// `Err(wait)` when the account or the address has too many recent failures.
    pub fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        self.check_at(account, address, Instant::now())
    }

    /// Records a failed attempt.
    pub fn failed(&self, account: &str, address: Option<IpAddr>) {
        self.failed_at(account, address, Instant::now());
    }

    /// Forgets the account's failures after a successful sign-in (the address's stay).
    pub fn succeeded(&self, account: &str) {
        let mut failures = self.lock();
        failures.remove(&Key::Account(account_key(account)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_at(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut failures = self.lock();
        let mut longest_wait = None;
        for (key, limit) in keys(account, address) {
            if let Some(times) = failures.get_mut(&key) {
                forget_old(times, now);
                if times.len() >= limit
                    && let Some(oldest) = times.front()
                {
                    let wait = WINDOW.saturating_sub(now.duration_since(*oldest));
                    longest_wait =
                        Some(longest_wait.map_or(wait, |other: Duration| other.max(wait)));
                }
            }
        }
        match longest_wait {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    fn failed_at(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        let mut failures = self.lock();
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, times| {
                forget_old(times, now);
                !times.is_empty()
            });
        }
        for (key, limit) in keys(account, address) {
            let times = failures.entry(key).or_default();
            forget_old(times, now);
            times.push_back(now);
            while times.len() > limit {
                times.pop_front();
            }
        }
    }
}

fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

fn keys(account: &str, address: Option<IpAddr>) -> Vec<(Key, usize)> {
    let mut keys = vec![(Key::Account(account_key(account)), ACCOUNT_FAILURES)];
    if let Some(address) = address {
        keys.push((Key::Address(address), ADDRESS_FAILURES));
    }
    keys
}

fn forget_old(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|time| now.duration_since(*time) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_held_back_after_its_failures_then_released() {
        let throttle = SignInThrottle::default();
        let start = Instant::now();
        let address = Some("192.0.2.1".parse().unwrap());
        for _ in 0..ACCOUNT_FAILURES {
            assert!(throttle.check_at("acme/a@x", address, start).is_ok());
            throttle.failed_at("acme/a@x", address, start);
        }
        assert!(
            throttle.check_at("ACME/A@X", None, start).is_err(),
            "case does not matter"
        );
        assert!(
            throttle.check_at("acme/b@x", address, start).is_ok(),
            "other accounts are not"
        );
        assert!(
            throttle
                .check_at("acme/a@x", address, start + WINDOW)
                .is_ok()
        );
    }

    #[test]
    fn an_address_is_held_back_across_accounts() {
        let throttle = SignInThrottle::default();
        let start = Instant::now();
        let address = Some("192.0.2.1".parse().unwrap());
        for attempt in 0..ADDRESS_FAILURES {
            throttle.failed_at(&format!("acme/user{attempt}@x"), address, start);
        }
        assert!(throttle.check_at("acme/new@x", address, start).is_err());
        assert!(
            throttle
                .check_at("acme/new@x", Some("192.0.2.2".parse().unwrap()), start)
                .is_ok()
        );
    }
}
