//! What the reader role must not reach, declared once: the built-in functions and views the
//! migrations take from PUBLIC (by pattern, so whole families go at once), the extensions that
//! would reach past row-level security, and the start-up check that refuses to run while any of it
//! is within the reader's reach.
//!
//! demo-backend's migrations `0003_internal_mcp_reader_hardening.sql` and
//! `0005_internal_mcp_guarded_select.sql` apply these lists; a test below checks that they name
//! every pattern, and [`check_reader_hardening`] checks the effect on
//! the live database as the reader itself, so inherited and PUBLIC privileges count.

use sqlx::PgPool;

/// LIKE patterns over `name(argument types)` of functions in `pg_catalog` (as
/// `proname || '(' || oidvectortypes(proargtypes) || ')'` spells them) that the reader must not
/// execute, by why.
pub const FUNCTIONS_KEPT_FROM_READER: &[&str] = &[
    // Settings, including app.organization_id, on which row-level security rests.
    r"set\_config(%",
    // Signals to other backends.
    r"pg\_terminate\_backend(%",
    r"pg\_cancel\_backend(%",
    // Other sessions' activity: table, database, backend, function and WAL statistics.
    r"pg\_stat\_%",
    r"pg\_lock\_status(%",
    r"pg\_blocking\_pids(%",
    r"pg\_safe\_snapshot\_blocking\_pids(%",
    r"pg\_isolation\_test\_session\_is\_blocked(%",
    r"pg\_prepared\_xact(%",
    r"pg\_prepared\_statement(%",
    r"pg\_get\_multixact\_members(%",
    r"pg\_last\_committed\_xact(%",
    r"pg\_xact\_commit\_timestamp%",
    r"pg\_notification\_queue\_usage(%",
    r"pg\_get\_backend\_memory\_contexts(%",
    r"pg\_get\_shmem\_allocations(%",
    // Sizes of relations and databases, internal-mcp's own tables included.
    r"pg\_relation\_size(%",
    r"pg\_total\_relation\_size(%",
    r"pg\_table\_size(%",
    r"pg\_indexes\_size(%",
    r"pg\_database\_size(%",
    r"pg\_tablespace\_size(%",
    r"pg\_relation\_filenode(%",
    r"pg\_relation\_filepath(%",
    r"pg\_filenode\_relation(%",
    // Transaction ids, snapshots and WAL positions (txid_current() even consumes an id).
    r"txid\_current%",
    r"txid\_status(%",
    r"pg\_current\_xact\_id%",
    r"pg\_current\_snapshot(%",
    r"pg\_xact\_status(%",
    r"pg\_current\_wal%",
    r"pg\_last\_wal%",
    r"pg\_last\_xact\_replay\_timestamp(%",
    r"pg\_walfile\_name%",
    r"pg\_control\_%",
    r"pg\_get\_replication\_slots(%",
    r"pg\_logical\_%",
    r"%replication\_slot%",
    // Reaching outside the read-only transaction.
    r"pg\_export\_snapshot(%",
    r"pg\_notify(%",
    // Advisory locks: they outlive the transaction or exhaust the lock table.
    r"pg\_%advisory\_%",
    // SQL held in a string, out of sight of the EXPLAIN-based checks.
    r"query\_to\_xml%",
    r"cursor\_to\_xml%",
    r"table\_to\_xml%",
    r"schema\_to\_xml%",
    r"database\_to\_xml%",
    r"ts\_stat(%",
    r"ts\_rewrite(tsquery, text)",
    // Large objects and server files.
    r"lo\_%",
    r"lowrite(%",
    r"loread(%",
    r"pg\_read\_file%",
    r"pg\_read\_binary\_file%",
    r"pg\_ls\_%",
    // From migration 0005 on. The cluster's transaction counter, read through any row's xmin.
    r"age(xid)",
    r"mxid\_age(xid)",
    // The shared server: when it started and reloaded, and its addresses.
    r"pg\_postmaster\_start\_time()",
    r"pg\_conf\_load\_time()",
    r"inet\_server\_%",
];

/// LIKE patterns over the names of views in `pg_catalog` the reader must not read:
/// `pg_stat_*`, `pg_statio_*`, `pg_stats` (other tenants' most common values), locks, prepared
/// statements and transactions, replication and memory internals.
pub const VIEWS_KEPT_FROM_READER: &[&str] = &[
    r"pg\_stat%",
    r"pg\_locks",
    r"pg\_prepared\_statements",
    r"pg\_prepared\_xacts",
    r"pg\_replication\_slots",
    r"pg\_replication\_origin\_status",
    r"pg\_backend\_memory\_contexts",
    r"pg\_shmem\_allocations",
];

/// Extensions whose presence in the product's database reaches past the reader's confinement:
/// connections to other databases, other sessions' SQL, raw pages, row locks, server files.
pub const EXTENSIONS_REFUSED: &[&str] = &[
    "dblink",
    "postgres_fdw",
    "file_fdw",
    "pg_stat_statements",
    "adminpack",
    "pageinspect",
    "pg_buffercache",
    "pgstattuple",
    "pgrowlocks",
    "pg_visibility",
    "pg_freespacemap",
    "pg_walinspect",
];

/// SECURITY DEFINER functions the reader may execute after review. PostgreSQL 15 ships none, and
/// the product defines none; any other is refused at start-up.
pub const VETTED_SECURITY_DEFINER_FUNCTIONS: &[&str] = &[];

/// The function that checks and runs the model's query inside the database (migration 0005, see
/// [`crate::reader`]): the reader must be able to execute it.
pub const GUARD_FUNCTIONS: &[&str] =
    &["public.internal_mcp_guarded_query(uuid, text, double precision, integer, boolean)"];

/// The most names listed per problem in the start-up refusal.
const NAMES_SHOWN: i64 = 20;

/// Adds a problem to `problems` for everything in the lists above that the reader can reach, for
/// every SECURITY DEFINER function it may execute, and, unless `allow_other_databases`, for every
/// other database it may connect to. Runs on the reader's own connection.
pub async fn check_reader_hardening(
    reader: &PgPool,
    allow_other_databases: bool,
    problems: &mut Vec<String>,
) -> Result<(), sqlx::Error> {
    let (count, names): (i64, Vec<String>) = sqlx::query_as(
        "SELECT count(*), coalesce((array_agg(signature ORDER BY signature))[1:$2], '{}')::text[]
           FROM (SELECT p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS signature, p.oid
                   FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind IN ('f', 'w')) f
          WHERE signature LIKE ANY ($1) AND has_function_privilege(f.oid, 'EXECUTE')",
    )
    .bind(FUNCTIONS_KEPT_FROM_READER)
    .bind(NAMES_SHOWN)
    .fetch_one(reader)
    .await?;
    if count > 0 {
        problems.push(format!(
            "the reader may execute {count} function(s) the migrations take away, such as pg_catalog.{} \
             (apply demo-backend's migrations as a superuser; see internal-mcp/README.md)",
            names.join(", pg_catalog.")
        ));
    }

    let (count, names): (i64, Vec<String>) = sqlx::query_as(
        "SELECT count(*), coalesce((array_agg(c.relname::text ORDER BY c.relname))[1:$2], '{}')::text[]
           FROM pg_catalog.pg_class c
          WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
            AND c.relname LIKE ANY ($1) AND has_table_privilege(c.oid, 'SELECT')",
    )
    .bind(VIEWS_KEPT_FROM_READER)
    .bind(NAMES_SHOWN)
    .fetch_one(reader)
    .await?;
    if count > 0 {
        problems.push(format!(
            "the reader may read {count} view(s) the migrations take away, such as pg_catalog.{} \
             (apply demo-backend's migrations as a superuser; see internal-mcp/README.md)",
            names.join(", pg_catalog.")
        ));
    }

    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT signature FROM unnest($1::text[]) AS signature
          WHERE to_regprocedure(signature) IS NULL
             OR NOT has_function_privilege(to_regprocedure(signature), 'EXECUTE')",
    )
    .bind(GUARD_FUNCTIONS)
    .fetch_all(reader)
    .await?;
    if !missing.is_empty() {
        problems.push(format!(
            "the reader cannot execute {}, which checks and runs its queries (apply demo-backend's migrations)",
            missing.join(", ")
        ));
    }

    let definers: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
          WHERE p.prosecdef AND has_function_privilege(p.oid, 'EXECUTE')
            AND NOT p.oid::regprocedure::text = ANY ($1)
          ORDER BY 1 LIMIT $2",
    )
    .bind(VETTED_SECURITY_DEFINER_FUNCTIONS)
    .bind(NAMES_SHOWN)
    .fetch_all(reader)
    .await?;
    if !definers.is_empty() {
        problems.push(format!(
            "the reader may execute SECURITY DEFINER function(s) {} (they run with their owner's privileges)",
            definers.join(", ")
        ));
    }

    let extensions: Vec<String> = sqlx::query_scalar(
        "SELECT extname::text FROM pg_catalog.pg_extension WHERE extname = ANY ($1) ORDER BY 1",
    )
    .bind(EXTENSIONS_REFUSED)
    .fetch_all(reader)
    .await?;
    if !extensions.is_empty() {
        problems.push(format!(
            "the database has the extension(s) {}, which reach past the reader's confinement; drop them",
            extensions.join(", ")
        ));
    }

    if !allow_other_databases {
        let databases: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_catalog.pg_database
              WHERE datname <> current_database() AND datallowconn
                AND has_database_privilege(oid, 'CONNECT')
              ORDER BY 1 LIMIT $1",
        )
        .bind(NAMES_SHOWN)
        .fetch_all(reader)
        .await?;
        if !databases.is_empty() {
            problems.push(format!(
                "the reader may connect to other database(s): {} (REVOKE CONNECT ON DATABASE ... FROM PUBLIC, \
                 or start with --allow-reader-in-other-databases on a shared test server)",
                databases.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The migrations that revoke, in order: 0005 continues 0003's function list.
    const MIGRATIONS: [&str; 2] = [
        include_str!("../../demo-backend/migrations/0003_internal_mcp_reader_hardening.sql"),
        include_str!("../../demo-backend/migrations/0005_internal_mcp_guarded_select.sql"),
    ];

    /// The migration must apply every pattern the start-up check verifies, so a pattern added
    /// here without the migration fails this test, not a deployment.
    #[test]
    fn the_migration_revokes_every_listed_pattern() {
        let migrations = MIGRATIONS.concat();
        for pattern in FUNCTIONS_KEPT_FROM_READER
            .iter()
            .chain(VIEWS_KEPT_FROM_READER)
        {
            assert!(
                migrations.contains(&format!("'{pattern}'")),
                "no migration revokes {pattern}"
            );
        }
        // 0003's functions, then its views, then 0005's functions.
        let listed_in = |migration: &'static str| -> Vec<&'static str> {
            migration
                .lines()
                .map(str::trim)
                .filter(|line| {
                    line.starts_with('\'') && (line.ends_with("',") || line.ends_with('\''))
                })
                .map(|line| line.trim_end_matches(',').trim_matches('\''))
                .collect()
        };
        let in_migrations: Vec<&str> = MIGRATIONS.into_iter().flat_map(listed_in).collect();
        let added_by_0005 = FUNCTIONS_KEPT_FROM_READER
            .iter()
            .position(|pattern| *pattern == r"age(xid)")
            .expect("0005's first pattern");
        let listed: Vec<&str> = FUNCTIONS_KEPT_FROM_READER[..added_by_0005]
            .iter()
            .chain(VIEWS_KEPT_FROM_READER)
            .chain(&FUNCTIONS_KEPT_FROM_READER[added_by_0005..])
            .copied()
            .collect();
        assert_eq!(in_migrations, listed, "the migrations and the lists differ");
    }
}
