//! The host's own database: its role, its schema, its migrations, and the start-up check that the
//! role can touch nothing of the product's.
//!
//! An administrator creates the role and the schema once ([`bootstrap_sql`]); the host then runs
//! its migrations as that role, inside that schema, and refuses to start when the role is a
//! superuser, bypasses row-level security, or holds any privilege on a table outside its schema.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::Error;

/// The host's database role.
pub const ROLE: &str = "internal_host";
/// The host's schema, owned by [`ROLE`].
pub const SCHEMA: &str = "internal_host";

/// The host's migrations, run as [`ROLE`] with `search_path` = [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What an administrator runs once per cluster (the role) and database (the schema); run again, it
/// sets the role's password to `password`. The password must not contain a single quote.
///
/// One transaction behind an advisory lock: the role is the cluster's, so two bootstraps at once
/// (two databases of one cluster, say) would otherwise race on its catalog row and one would fail
/// with "tuple concurrently updated".
pub fn bootstrap_sql(password: &str) -> Result<String, Error> {
    if password.len() < 16 || password.contains(['\'', '\\']) {
        return Err(Error::Startup(
            "the host role's password needs 16+ characters and no quotes or backslashes".into(),
        ));
    }
    Ok(format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('internal-host: bootstrap'));
         DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
             CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '{password}';
           ELSE
             ALTER ROLE {ROLE} PASSWORD '{password}';
           END IF;
         END $$;
         CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {ROLE};
         REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
         -- sqlx serialises migrations with an advisory lock; the product's hardening takes these
         -- functions away from PUBLIC.
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_lock(bigint),
                                   pg_catalog.pg_advisory_unlock(bigint) TO {ROLE};
         COMMIT;"
    ))
}

/// Connects as the host's role with its schema first on the search path, checks the role's
/// privileges, and applies pending migrations.
pub async fn connect(options: &PgConnectOptions) -> Result<PgPool, Error> {
    let options = options
        .clone()
        .options([("search_path", SCHEMA)])
        .application_name("internal-host");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|error| Error::Startup(format!("cannot connect to the host database: {error}")))?;
    check_privileges(&pool).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The structural guarantee that the host never reads the product's tables: its role must hold
/// no privilege on any table, view or sequence outside its own schema (system catalogs aside).
pub async fn check_privileges(pool: &PgPool) -> Result<(), Error> {
    let (superuser, bypasses_rls, schema_owner): (bool, bool, Option<String>) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolbypassrls,
                (SELECT pg_get_userbyid(n.nspowner)::text FROM pg_namespace n WHERE n.nspname = $1)
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    .bind(SCHEMA)
    .fetch_one(pool)
    .await?;
    if superuser || bypasses_rls {
        return Err(Error::Startup(
            "the host's database role must not be a superuser nor bypass row-level security".into(),
        ));
    }
    let current_user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await?;
    if schema_owner.as_deref() != Some(current_user.as_str()) {
        return Err(Error::Startup(format!(
            "the schema {SCHEMA} must exist and be owned by {current_user} (see bootstrap_sql)"
        )));
    }
    let reachable: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
            AND n.nspname NOT IN ($1, 'pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%'
            AND (has_table_privilege(c.oid, 'SELECT') OR has_table_privilege(c.oid, 'INSERT')
              OR has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
              OR has_table_privilege(c.oid, 'TRUNCATE') OR has_table_privilege(c.oid, 'REFERENCES')
              OR has_table_privilege(c.oid, 'TRIGGER'))
          ORDER BY 1 LIMIT 5",
    )
    .bind(SCHEMA)
    .fetch_all(pool)
    .await?;
    if !reachable.is_empty() {
        return Err(Error::Startup(format!(
            "the host's database role may touch tables outside its schema ({}); revoke that",
            reachable.join(", ")
        )));
    }
    Ok(())
}
