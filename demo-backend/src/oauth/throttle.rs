//! Brute-force throttling of sign-ins: failed attempts are counted per account and per client
//! address over a sliding window, and once either is over its limit no password is checked
//! (Argon2id is not even run) until the oldest failure leaves the window.
//!
//! Dynamic Client Registration is limited per address the same way.
//!
//! The counts live in the process: behind several replicas each counts alone, which multiplies
//! the limits by the number of replicas (still a hard bound). A shared store would remove that.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in the window before an account is held back.
pub const ACCOUNT_FAILURES: usize = 5;
/// Failures allowed in the window from one address (several accounts may share an address).
pub const ADDRESS_FAILURES: usize = 20;
/// The sliding window of sign-in failures.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Dynamic Client Registrations allowed from one address per [`REGISTRATION_WINDOW`]: each
/// writes a row, so an address cannot fill the clients table.
pub const ADDRESS_REGISTRATIONS: usize = 20;
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Above this many tracked keys, keys without recent events are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// Events (failures, registrations) per key over a sliding window, each key with its limit.
#[derive(Debug)]
struct SlidingWindow<K> {
    window: Duration,
    events: Mutex<HashMap<K, VecDeque<Instant>>>,
}

impl<K: Hash + Eq + Clone> SlidingWindow<K> {
    fn new(window: Duration) -> Self {
        Self {
            window,
            events: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<Instant>>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Err(wait)` when any key has reached its limit; `wait` is when the last of them frees.
    fn check(&self, keys: &[(K, usize)], now: Instant) -> Result<(), Duration> {
        let mut events = self.lock();
        let mut longest_wait: Option<Duration> = None;
        for (key, limit) in keys {
            if let Some(times) = events.get_mut(key) {
                self.forget_old(times, now);
                if times.len() >= *limit
                    && let Some(oldest) = times.front()
                {
                    let wait = self.window.saturating_sub(now.duration_since(*oldest));
                    longest_wait = Some(longest_wait.map_or(wait, |other| other.max(wait)));
                }
            }
        }
        match longest_wait {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    fn record(&self, keys: &[(K, usize)], now: Instant) {
        let mut events = self.lock();
        if events.len() > PRUNE_ABOVE {
            events.retain(|_, times| {
                self.forget_old(times, now);
                !times.is_empty()
            });
        }
        for (key, limit) in keys {
            let times = events.entry(key.clone()).or_default();
            self.forget_old(times, now);
            times.push_back(now);
            while times.len() > *limit {
                times.pop_front();
            }
        }
    }

    fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn forget_old(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times
            .front()
            .is_some_and(|time| now.duration_since(*time) >= self.window)
        {
            times.pop_front();
        }
    }
}

/// Failed sign-ins, per account and per client address.
#[derive(Debug)]
pub struct SignInThrottle {
    failures: SlidingWindow<Key>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self {
            failures: SlidingWindow::new(WINDOW),
        }
    }
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
        self.failures.forget(&Key::Account(account_key(account)));
    }

    fn check_at(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        self.failures.check(&keys(account, address), now)
    }

    fn failed_at(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        self.failures.record(&keys(account, address), now);
    }
}

/// Dynamic Client Registrations per client address.
#[derive(Debug)]
pub struct RegistrationThrottle {
    registrations: SlidingWindow<IpAddr>,
}

impl Default for RegistrationThrottle {
    fn default() -> Self {
        Self {
            registrations: SlidingWindow::new(REGISTRATION_WINDOW),
        }
    }
}

impl RegistrationThrottle {
    /// `Err(wait)` when the address registered too many clients recently.
    pub fn check(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        self.check_at(address, Instant::now())
    }

    /// Records a registration.
    pub fn registered(&self, address: Option<IpAddr>) {
        self.registered_at(address, Instant::now());
    }

    fn check_at(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        self.registrations.check(&registration_keys(address), now)
    }

    fn registered_at(&self, address: Option<IpAddr>, now: Instant) {
        self.registrations.record(&registration_keys(address), now);
    }
}

fn registration_keys(address: Option<IpAddr>) -> Vec<(IpAddr, usize)> {
    address
        .map(|address| (address, ADDRESS_REGISTRATIONS))
        .into_iter()
        .collect()
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

    #[test]
    fn an_address_may_register_a_bounded_number_of_clients() {
        let throttle = RegistrationThrottle::default();
        let start = Instant::now();
        let address = Some("192.0.2.1".parse().unwrap());
        for _ in 0..ADDRESS_REGISTRATIONS {
            assert!(throttle.check_at(address, start).is_ok());
            throttle.registered_at(address, start);
        }
        let wait = throttle.check_at(address, start).unwrap_err();
        assert_eq!(wait, REGISTRATION_WINDOW);
        assert!(
            throttle
                .check_at(Some("192.0.2.2".parse().unwrap()), start)
                .is_ok()
        );
        assert!(
            throttle
                .check_at(address, start + REGISTRATION_WINDOW)
                .is_ok()
        );
    }
}
