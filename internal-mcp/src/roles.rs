//! The acting users' current roles, read from the users table and kept in memory until the
//! database says that user changed.
//!
//! Every request needs the role of the user its credential names, and reading it costs a round
//! trip. A trigger of demo-backend's migration 0005 notifies `internal_mcp_user_changes` when a
//! user's role or organisation changes, or the user is deleted (the payload is the user's id; `*`
//! after a TRUNCATE). One task listens on a connection of its own and forgets what it is told
//! changed, so a demotion or removal takes effect as soon as the notification arrives, moments
//! after its transaction commits.
//!
//! Nothing is kept while nothing listens: before the listener is connected, after it lost its
//! connection (notifications may have been missed, so everything is forgotten), and until it is
//! back, every request reads the table. The same holds while the triggers are missing or disabled:
//! the listener checks them when it connects and every [`TRIGGERS_CHECKED_EVERY`], so one dropped
//! while the server runs stops roles being kept within that time, not at the next restart. A look-up that raced with a notification is not kept
//! (a generation count tells), and only memberships are kept: a user who is not a member is read
//! again on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use demo_backend::domain::kinds::Role;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::database::silent_user_triggers;
use crate::error::Error;

/// The channel migration 0005's trigger notifies.
pub const USER_CHANGES_CHANNEL: &str = "internal_mcp_user_changes";

/// The most roles kept; when full, all are forgotten and read again.
const MOST_KEPT: usize = 10_000;

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How often the listener checks that the triggers on `users` are still there and enabled.
pub const TRIGGERS_CHECKED_EVERY: Duration = Duration::from_secs(10);

/// Users' roles, read through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Roles {
    database: PgPool,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Whether the listener is connected: nothing is kept otherwise.
    listening: bool,
    /// Moves on whenever something is forgotten: a look-up that started before may be stale.
    generation: u64,
    roles: HashMap<(Uuid, Uuid), Role>,
}

impl Roles {
    /// Roles read from `database` (the privileged pool), with the listener started on the
    /// current Tokio runtime; it runs for as long as the runtime does.
    pub fn new(database: PgPool) -> Self {
        let roles = Self {
            database,
            kept: Arc::default(),
        };
        tokio::spawn(roles.clone().listen());
        roles
    }

    /// The role of `user_id` in `organization_id`, or `None` when they are not a member.
    pub async fn role_of(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Role>, Error> {
        let key = (organization_id, user_id);
        let generation = {
            let kept = self.kept();
            if let Some(role) = kept.roles.get(&key) {
                return Ok(Some(*role));
            }
            kept.generation
        };
        let role: Option<Role> =
            sqlx::query_scalar("SELECT role FROM users WHERE organization_id = $1 AND id = $2")
                .bind(organization_id)
                .bind(user_id)
                .fetch_optional(&self.database)
                .await?;
        if let Some(role) = role {
            let mut kept = self.kept();
            if kept.listening && kept.generation == generation {
                if kept.roles.len() >= MOST_KEPT {
                    kept.roles.clear();
                }
                kept.roles.insert(key, role);
            }
        }
        Ok(role)
    }

    /// Whether roles are being kept (the listener is connected).
    pub fn is_listening(&self) -> bool {
        self.kept().listening
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Nothing panics while holding the lock; a poisoned map is still a valid map.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets every role, or only `user_id`'s, and whether the listener is connected.
    fn forget(&self, user_id: Option<Uuid>, listening: bool) {
        let mut kept = self.kept();
        kept.generation += 1;
        kept.listening = listening;
        match user_id {
            Some(user_id) if listening => kept.roles.retain(|(_, user), _| *user != user_id),
            _ => kept.roles.clear(),
        }
    }

    /// Listens for changes to users, forever, connecting again whenever the connection is lost.
    async fn listen(self) {
        loop {
            let wait = match self.listen_once().await {
                Ok(()) => {
                    tracing::warn!(
                        "the listener for users' role changes lost its connection; roles are read on every request until it is back"
                    );
                    RECONNECT_AFTER
                }
                Err(error @ Error::Refused(_)) => {
                    tracing::error!(
                        %error,
                        "users' role changes cannot be heard; roles are read on every request until the triggers are back (demo-backend's migration 0005)"
                    );
                    TRIGGERS_CHECKED_EVERY
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "cannot listen for users' role changes; roles are read on every request until it can"
                    );
                    RECONNECT_AFTER
                }
            };
            self.forget(None, false);
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection's worth of listening: returns when it is lost, or when the triggers that
    /// notify it are not all there and enabled.
    async fn listen_once(&self) -> Result<(), Error> {
        let mut listener = PgListener::connect_with(&self.database).await?;
        listener.listen(USER_CHANGES_CHANNEL).await?;
        self.check_triggers().await?;
        // From here on every change is heard; what was kept before may be stale.
        self.forget(None, true);
        let mut checks = tokio::time::interval(TRIGGERS_CHECKED_EVERY);
        checks.reset();
        loop {
            tokio::select! {
                // `None`: the connection was lost, and notifications with it (sqlx would
                // reconnect behind our back; `listen` forgets everything first instead).
                notification = listener.try_recv() => {
                    let Some(notification) = notification? else {
                        return Ok(());
                    };
                    let user_id = notification.payload().parse::<Uuid>().ok();
                    self.forget(user_id, true);
                }
                _ = checks.tick() => self.check_triggers().await?,
            }
        }
    }

    /// Fails while a trigger that tells of users' changes is missing or disabled.
    async fn check_triggers(&self) -> Result<(), Error> {
        let silent = silent_user_triggers(&self.database).await?;
        if silent.is_empty() {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "the users table lacks the enabled trigger(s) {}",
            silent.join(", ")
        )))
    }
}
