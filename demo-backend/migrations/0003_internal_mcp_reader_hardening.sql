-- internal-mcp's reader, take two: the classes of built-in functions and views that show one
-- tenant what other tenants do, or that act outside the reader's read-only transaction, are taken
-- from PUBLIC by *pattern*, so every overload and every function of the same family goes at once.
--
-- The list is internal-mcp's `hardening::FUNCTIONS_KEPT_FROM_READER` and
-- `hardening::VIEWS_KEPT_FROM_READER`; a test there checks that every pattern appears below, and
-- internal-mcp's start-up check refuses to run while the reader can execute or read any match.
--
-- As in 0002, this needs a superuser (pg_proc is per database: other databases are unaffected),
-- and the roles that own this database and its tables get back what PUBLIC loses, so the product,
-- its migrations and pg_dump keep working.
DO $$
DECLARE
    -- LIKE patterns over `name(argument types)` of functions in pg_catalog, as
    -- `proname || '(' || oidvectortypes(proargtypes) || ')'` spells them.
    function_patterns text[] := ARRAY[
        -- Settings, including app.organization_id, on which row-level security rests.
        'set\_config(%',
        -- Signals to other backends of the same role.
        'pg\_terminate\_backend(%',
        'pg\_cancel\_backend(%',
        -- Other sessions' activity: statistics of every table (live row counts, scans, inserts),
        -- of the database, of backends (SQL text, start times, addresses), of functions and WAL.
        'pg\_stat\_%',
        'pg\_lock\_status(%',
        'pg\_blocking\_pids(%',
        'pg\_safe\_snapshot\_blocking\_pids(%',
        'pg\_isolation\_test\_session\_is\_blocked(%',
        'pg\_prepared\_xact(%',
        'pg\_prepared\_statement(%',
        'pg\_get\_multixact\_members(%',
        'pg\_last\_committed\_xact(%',
        'pg\_xact\_commit\_timestamp%',
        'pg\_notification\_queue\_usage(%',
        'pg\_get\_backend\_memory\_contexts(%',
        'pg\_get\_shmem\_allocations(%',
        -- Sizes of relations and databases, internal-mcp's own audit and confirmation tables
        -- included: they grow with every tenant's activity.
        'pg\_relation\_size(%',
        'pg\_total\_relation\_size(%',
        'pg\_table\_size(%',
        'pg\_indexes\_size(%',
        'pg\_database\_size(%',
        'pg\_tablespace\_size(%',
        'pg\_relation\_filenode(%',
        'pg\_relation\_filepath(%',
        'pg\_filenode\_relation(%',
        -- Transaction ids, snapshots and WAL positions: they move with every tenant's writes, and
        -- txid_current() assigns (consumes) a transaction id even in a read-only transaction.
        'txid\_current%',
        'txid\_status(%',
        'pg\_current\_xact\_id%',
        'pg\_current\_snapshot(%',
        'pg\_xact\_status(%',
        'pg\_current\_wal%',
        'pg\_last\_wal%',
        'pg\_last\_xact\_replay\_timestamp(%',
        'pg\_walfile\_name%',
        'pg\_control\_%',
        'pg\_get\_replication\_slots(%',
        'pg\_logical\_%',
        '%replication\_slot%',
        -- Snapshots exported for other sessions, and notifications queued from a read-only
        -- transaction: both reach outside it.
        'pg\_export\_snapshot(%',
        'pg\_notify(%',
        -- Session-level and transaction-level advisory locks: they outlive the transaction, or
        -- exhaust the server's lock table for everyone.
        'pg\_%advisory\_%',
        -- SQL held in a string, run out of sight of the EXPLAIN-based checks.
        'query\_to\_xml%',
        'cursor\_to\_xml%',
        'table\_to\_xml%',
        'schema\_to\_xml%',
        'database\_to\_xml%',
        'ts\_stat(%',
        'ts\_rewrite(tsquery, text)',
        -- Large objects and server files.
        'lo\_%',
        'lowrite(%',
        'loread(%',
        'pg\_read\_file%',
        'pg\_read\_binary\_file%',
        'pg\_ls\_%'
    ];
    -- LIKE patterns over the names of views in pg_catalog.
    view_patterns text[] := ARRAY[
        -- pg_stat_*, pg_statio_* and pg_stats (other tenants' most common values).
        'pg\_stat%',
        'pg\_locks',
        'pg\_prepared\_statements',
        'pg\_prepared\_xacts',
        'pg\_replication\_slots',
        'pg\_replication\_origin\_status',
        'pg\_backend\_memory\_contexts',
        'pg\_shmem\_allocations'
    ];
    owners name[];
    item text;
    owner_role name;
BEGIN
    IF current_setting('is_superuser') <> 'on' THEN
        RAISE WARNING 'internal-mcp hardening skipped: this migration did not run as a superuser. '
            'internal-mcp refuses to start until a superuser applies it (see internal-mcp/README.md).';
        RETURN;
    END IF;

    SELECT array_agg(DISTINCT role.rolname) INTO owners
      FROM pg_catalog.pg_roles role
     WHERE NOT role.rolsuper
       AND role.rolname <> 'internal_mcp_reader'
       AND role.oid IN (
           (SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()),
           (SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'public.organizations'::regclass));

    FOR item IN
        SELECT p.oid::regprocedure::text
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace
           AND p.prokind IN ('f', 'w')
           AND (p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')') LIKE ANY (function_patterns)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', item);
        FOREACH owner_role IN ARRAY coalesce(owners, '{}') LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', item, owner_role);
        END LOOP;
    END LOOP;

    FOR item IN
        SELECT c.oid::regclass::text
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'pg_catalog'::regnamespace
           AND c.relkind = 'v'
           AND c.relname LIKE ANY (view_patterns)
    LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', item);
        FOREACH owner_role IN ARRAY coalesce(owners, '{}') LOOP
            EXECUTE format('GRANT SELECT ON %s TO %I', item, owner_role);
        END LOOP;
    END LOOP;
END
$$;

-- Single-use service credentials (`"once": true`): the first request records the credential's
-- jti here and any later one is refused. Rows outlive the credential by a minute of clock leeway;
-- internal-mcp purges them after that. Not readable by internal_mcp_reader.
CREATE TABLE internal_mcp_used_credentials (
    jti text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 200),
    used_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
COMMENT ON TABLE internal_mcp_used_credentials IS 'jti of single-use internal-mcp service credentials already presented, until they expire. Not readable by internal_mcp_reader.';
CREATE INDEX internal_mcp_used_credentials_by_expiry ON internal_mcp_used_credentials (expires_at);
ALTER TABLE internal_mcp_used_credentials ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON internal_mcp_used_credentials FROM PUBLIC;
