//! The two connections internal-mcp holds, and the start-up checks that make it fail closed.
//!
//! - The *privileged* pool logs in as the schema owner. It serves the domain layer's operations, the
//!   audit trail, confirmations and user look-ups, never SQL a caller wrote.
//! - The *reader* pool logs in as `internal_mcp_reader`. Every query that reads tenant data runs
//!   there, under row-level security; the model's SQL runs nowhere else.
//!
//! [`check_reader_is_confined`] refuses to start when the reader could do more than read its own
//! organisation's rows: a superuser, BYPASSRLS, membership of another role, any write privilege,
//! ownership of a table, a readable table without row-level security, or anything
//! [`crate::hardening`] lists (functions and views the migrations take away, SECURITY DEFINER
//! functions, extensions, other databases).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};

use crate::error::Error;
use crate::hardening::check_reader_hardening;

/// The role the reader pool must log in as; the migration creates it.
pub const READER_ROLE: &str = "internal_mcp_reader";

/// Tables the reader must be able to read for the tools to work.
pub const TABLES_THE_READER_NEEDS: [&str; 11] = [
    "organizations",
    "users",
    "services",
    "metric_series",
    "metric_samples",
    "monitors",
    "incidents",
    "incident_services",
    "alerts",
    "incident_events",
    "deployments",
];

/// Prepared statements each reader connection keeps: the analytics tools' few fixed statements
/// and the model's latest queries.
const READER_STATEMENT_CACHE: usize = 32;

/// Both pools, connected.
#[derive(Debug, Clone)]
pub struct Databases {
    pub privileged: PgPool,
    pub reader: PgPool,
}

impl Databases {
    /// Connects both pools (lazily for the reader's later connections) and runs every start-up
    /// check. Pending migrations are applied first, with the privileged connection.
    pub async fn connect(
        privileged: &PgConnectOptions,
        reader: &PgConnectOptions,
        reader_connections: u32,
        allow_other_databases: bool,
    ) -> Result<Self, Error> {
        // No ping before each acquire here either: the role look-up and the audit insert are on
        // every call's path, and a connection that died fails its one query, loudly.
        let privileged = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(quiet(privileged).application_name("internal-mcp"))
            .await
            .map_err(|error| {
                Error::Startup(format!("cannot connect with DATABASE_URL: {error}"))
            })?;
        demo_backend::MIGRATOR
            .run(&privileged)
            .await
            .map_err(|error| {
                Error::Startup(format!("cannot apply the database migrations: {error}"))
            })?;
        check_privileged_schema(&privileged).await?;

        // No ping before each acquire: the pool already pings a connection when it is released
        // (which also flushes the rollback of a dropped transaction), so the request path saves a
        // round trip.
        let reader = PgPoolOptions::new()
            .max_connections(reader_connections)
            .test_before_acquire(false)
            // The model's queries are parsed alone as prepared statements and stay in this cache
            // (see `reader::parse_alone`): a smaller cache bounds what they hold, up to 100 kB
            // each, on both sides of every connection.
            .connect_with(
                quiet(reader)
                    .application_name("internal-mcp-reader")
                    .statement_cache_capacity(READER_STATEMENT_CACHE),
            )
            .await
            .map_err(|error| {
                Error::Startup(format!(
                    "cannot connect with INTERNAL_MCP_READER_URL as {READER_ROLE}: {error} \
                     (an operator must give the role a login: ALTER ROLE {READER_ROLE} LOGIN PASSWORD '...')"
                ))
            })?;
        check_reader_is_confined(&reader, &privileged, allow_other_databases).await?;
        Ok(Self { privileged, reader })
    }
}

/// Fails unless internal-mcp's own tables exist (the migration ran), and the triggers that tell it
/// a user's role changed are there and enabled.
pub async fn check_privileged_schema(privileged: &PgPool) -> Result<(), Error> {
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM unnest(ARRAY['internal_mcp_audit_log', 'internal_mcp_confirmations', 'internal_mcp_used_credentials']) AS name
          WHERE to_regclass('public.' || name) IS NULL",
    )
    .fetch_all(privileged)
    .await
    .map_err(|error| Error::Startup(format!("cannot inspect the schema: {error}")))?;
    if !missing.is_empty() {
        return Err(Error::Startup(format!(
            "the database lacks {}: apply demo-backend's migrations (demo-backend migrate)",
            missing.join(", ")
        )));
    }
    // Users' roles are kept in memory until these triggers say a user changed (crate::roles):
    // without them, a demoted user would keep their old role.
    let silent = silent_user_triggers(privileged)
        .await
        .map_err(|error| Error::Startup(format!("cannot inspect the schema: {error}")))?;
    if !silent.is_empty() {
        return Err(Error::Startup(format!(
            "the users table lacks the enabled trigger(s) {} that tell internal-mcp a user's role changed: \
             apply demo-backend's migrations, or enable them (ALTER TABLE users ENABLE TRIGGER ...)",
            silent.join(", ")
        )));
    }
    Ok(())
}

/// The triggers on `users` that tell internal-mcp a user changed (migration 0005) and are missing
/// or disabled; empty when both are there and enabled.
pub async fn silent_user_triggers(privileged: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM unnest(ARRAY['internal_mcp_user_changed', 'internal_mcp_users_truncated']) AS name
          WHERE NOT EXISTS (SELECT 1 FROM pg_trigger
                             WHERE tgrelid = 'public.users'::regclass AND tgname = name AND tgenabled <> 'D')",
    )
    .fetch_all(privileged)
    .await
}

/// Fails, naming every problem, unless the reader connection is confined to reading its own
/// organisation's rows. Runs as the reader itself, so inherited privileges count too.
pub async fn check_reader_is_confined(
    reader: &PgPool,
    privileged: &PgPool,
    allow_other_databases: bool,
) -> Result<(), Error> {
    let startup =
        |error: sqlx::Error| Error::Startup(format!("cannot inspect the reader role: {error}"));
    let mut problems = Vec::new();

    let (session_user, is_superuser, bypasses_rls, creates_roles, replicates, memberships): (
        String,
        bool,
        bool,
        bool,
        bool,
        i64,
    ) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolreplication,
                    (SELECT count(*) FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid)
               FROM pg_catalog.pg_roles r
              WHERE r.rolname = session_user",
    )
    .fetch_one(reader)
    .await
    .map_err(startup)?;
    let privileged_user: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(privileged)
        .await
        .map_err(startup)?;
    if session_user != READER_ROLE {
        problems.push(format!(
            "INTERNAL_MCP_READER_URL logs in as {session_user}, not {READER_ROLE}"
        ));
    }
    if session_user == privileged_user {
        problems
            .push("the reader and the privileged connection log in as the same role".to_owned());
    }
    if is_superuser {
        problems.push(format!("{session_user} is a superuser"));
    }
    if bypasses_rls {
        problems.push(format!("{session_user} has BYPASSRLS"));
    }
    if creates_roles {
        problems.push(format!("{session_user} has CREATEROLE"));
    }
    if replicates {
        problems.push(format!("{session_user} has REPLICATION"));
    }
    if memberships > 0 {
        problems.push(format!("{session_user} is a member of {memberships} other role(s) and may inherit their privileges"));
    }

    let writable: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
            AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
                 OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
          ORDER BY 1 LIMIT 10",
    )
    .fetch_all(reader)
    .await
    .map_err(startup)?;
    if !writable.is_empty() {
        problems.push(format!(
            "{session_user} may write to {}",
            writable.join(", ")
        ));
    }

    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_catalog.pg_class c
          WHERE c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user)
          ORDER BY 1 LIMIT 10",
    )
    .fetch_all(reader)
    .await
    .map_err(startup)?;
    if !owned.is_empty() {
        problems.push(format!(
            "{session_user} owns {} (owners bypass row-level security)",
            owned.join(", ")
        ));
    }

    let without_row_security: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
            AND has_table_privilege(c.oid, 'SELECT')
            AND NOT c.relrowsecurity
          ORDER BY 1 LIMIT 10",
    )
    .fetch_all(reader)
    .await
    .map_err(startup)?;
    if !without_row_security.is_empty() {
        problems.push(format!(
            "{session_user} may read {} which has no row-level security",
            without_row_security.join(", ")
        ));
    }

    // A sequence's last_value counts every organisation's inserts; nextval would even write.
    let sequences: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'S'
            AND (has_sequence_privilege(c.oid, 'SELECT') OR has_sequence_privilege(c.oid, 'USAGE')
                 OR has_sequence_privilege(c.oid, 'UPDATE'))
          ORDER BY 1 LIMIT 10",
    )
    .fetch_all(reader)
    .await
    .map_err(startup)?;
    if !sequences.is_empty() {
        problems.push(format!(
            "{session_user} may read or advance the sequence(s) {}",
            sequences.join(", ")
        ));
    }

    let unreadable: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM unnest($1::text[]) AS name
          WHERE to_regclass('public.' || name) IS NULL OR NOT has_table_privilege('public.' || name, 'SELECT')",
    )
    .bind(&TABLES_THE_READER_NEEDS[..])
    .fetch_all(reader)
    .await
    .map_err(startup)?;
    if !unreadable.is_empty() {
        problems.push(format!(
            "{session_user} cannot read {} (apply the migrations)",
            unreadable.join(", ")
        ));
    }

    check_reader_hardening(reader, allow_other_databases, &mut problems)
        .await
        .map_err(startup)?;

    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Startup(format!(
        "refusing to start: the reader connection is not confined: {}",
        problems.join("; ")
    )))
}

/// The connection options without sqlx's statement logging: it would log a slow statement's text
/// at WARN (the model's SQL, with the values it quotes) whatever RUST_LOG says of sqlx's targets.
fn quiet(options: &PgConnectOptions) -> PgConnectOptions {
    options.clone().disable_statement_logging()
}
