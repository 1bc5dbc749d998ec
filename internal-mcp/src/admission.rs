//! Per-caller and per-organisation limits on calls in flight, so one tenant cannot take every
//! reader connection and make the others wait: a call over either limit is refused at once with
//! when to retry, instead of queueing for a connection.
//!
//! The server admits every tool call and resource read before it runs and holds the [`Admission`]
//! until it is over; dropping it frees the slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::auth::Caller;
use crate::error::Error;

/// Counts of calls in flight per user and per organisation.
#[derive(Debug, Clone)]
pub struct AdmissionControl {
    inner: Arc<Mutex<InFlight>>,
    per_caller: usize,
    per_organization: usize,
    /// How long a call can take at most, which is when a slot frees up at the latest.
    retry_after: Duration,
}

#[derive(Debug, Default)]
struct InFlight {
    callers: HashMap<(Uuid, Uuid), usize>,
    organizations: HashMap<Uuid, usize>,
}

/// One admitted call; its slots are freed when it is dropped.
#[derive(Debug)]
pub struct Admission {
    inner: Arc<Mutex<InFlight>>,
    caller: (Uuid, Uuid),
}

impl AdmissionControl {
    pub fn new(per_caller: usize, per_organization: usize, retry_after: Duration) -> Self {
        Self {
            inner: Arc::default(),
            per_caller,
            per_organization,
            retry_after,
        }
    }

    /// Admits a call by `caller`, or refuses it when the caller or their organisation already has
    /// as many calls in flight as allowed.
    pub fn admit(&self, caller: &Caller) -> Result<Admission, Error> {
        let key = (caller.organization_id, caller.user_id);
        let mut in_flight = lock(&self.inner);
        let by_caller = in_flight.callers.get(&key).copied().unwrap_or(0);
        let by_organization = in_flight
            .organizations
            .get(&caller.organization_id)
            .copied()
            .unwrap_or(0);
        let retry = self.retry_after.as_secs().max(1);
        if by_caller >= self.per_caller {
            return Err(Error::Refused(format!(
                "too many queries in flight: you already have {by_caller} running (at most {}); retry in {retry} s",
                self.per_caller
            )));
        }
        if by_organization >= self.per_organization {
            return Err(Error::Refused(format!(
                "too many queries in flight: your organisation already has {by_organization} running (at most {}); \
                 retry in {retry} s",
                self.per_organization
            )));
        }
        *in_flight.callers.entry(key).or_default() += 1;
        *in_flight
            .organizations
            .entry(caller.organization_id)
            .or_default() += 1;
        Ok(Admission {
            inner: self.inner.clone(),
            caller: key,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.inner);
        decrement(&mut in_flight.callers, &self.caller);
        decrement(&mut in_flight.organizations, &self.caller.0);
    }
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

fn lock(inner: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use demo_backend::domain::kinds::Role;

    use super::*;

    fn caller(organization_id: Uuid) -> Caller {
        Caller {
            user_id: Uuid::new_v4(),
            organization_id,
            role: Role::Viewer,
            credential_id: "test".into(),
            issuer: "test".into(),
        }
    }

    #[test]
    fn callers_and_organisations_are_limited_separately_and_slots_come_back() {
        let control = AdmissionControl::new(2, 3, Duration::from_secs(5));
        let acme = Uuid::new_v4();
        let (dana, sam) = (caller(acme), caller(acme));
        let first = control.admit(&dana).unwrap();
        let _second = control.admit(&dana).unwrap();
        let refused = control.admit(&dana).unwrap_err().to_string();
        assert!(
            refused.contains("too many queries in flight") && refused.contains("retry in 5 s"),
            "{refused}"
        );
        let _third = control.admit(&sam).unwrap();
        assert!(
            control
                .admit(&sam)
                .unwrap_err()
                .to_string()
                .contains("your organisation")
        );
        // Another organisation is not affected.
        let _other = control.admit(&caller(Uuid::new_v4())).unwrap();
        drop(first);
        assert!(control.admit(&dana).is_ok());
    }
}
