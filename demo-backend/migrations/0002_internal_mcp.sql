-- internal-mcp, the product-internal MCP server, reads this database directly. Some of its SQL is
-- written by a language model, so its safety rests on the database itself (see internal-mcp/README.md):
--
-- - that SQL runs as the role `internal_mcp_reader`, which may only SELECT the product's tenant
--   tables (never API tokens, idempotency keys, internal-mcp's own tables or the migrations table);
-- - row-level security lets that role see only the rows of the organisation named by the setting
--   `app.organization_id`, which internal-mcp sets per transaction; unset means no rows at all;
-- - functions that would let it change that setting, see other sessions' SQL, signal other
--   backends, read server files, run SQL hidden inside a string, or exhaust the lock table are
--   taken away from PUBLIC (this needs a superuser; internal-mcp refuses to start without it).
--
-- The table owner (demo-backend's role) bypasses row-level security, so the product is unaffected.

-- The reader role. Roles are cluster-wide and several databases may share one server, so it is
-- created only when missing, and a concurrent creation by another database's migration is fine.
-- It cannot log in until an operator (or a test) grants LOGIN and a password.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'internal_mcp_reader') THEN
        BEGIN
            CREATE ROLE internal_mcp_reader
                NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database on this server created it at the same moment
        END;
    END IF;
END
$$;

-- What the reader may read: the product's data, nothing about credentials or internal-mcp itself.
GRANT USAGE ON SCHEMA public TO internal_mcp_reader;
GRANT SELECT ON organizations, users, services, metric_series, metric_samples, monitors, incidents,
    incident_services, alerts, incident_events, deployments TO internal_mcp_reader;

-- Row-level security on every tenant table. Enabling it without a policy for a role means that role
-- sees no rows: api_tokens and idempotency_keys get no reader policy at all, as a second wall behind
-- the missing GRANT. The reader's policies compare with the organisation internal-mcp set for the
-- transaction; `nullif(..., '')` turns "never set" and "reset" into NULL, which matches nothing.
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE services ENABLE ROW LEVEL SECURITY;
ALTER TABLE metric_series ENABLE ROW LEVEL SECURITY;
ALTER TABLE metric_samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE monitors ENABLE ROW LEVEL SECURITY;
ALTER TABLE incidents ENABLE ROW LEVEL SECURITY;
ALTER TABLE incident_services ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE incident_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;

CREATE POLICY internal_mcp_reader_own_organization ON organizations FOR SELECT TO internal_mcp_reader
    USING (id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON users FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON services FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON metric_series FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON metric_samples FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON monitors FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON incidents FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON incident_services FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON alerts FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON incident_events FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);
CREATE POLICY internal_mcp_reader_own_organization ON deployments FOR SELECT TO internal_mcp_reader
    USING (organization_id = nullif(current_setting('app.organization_id', true), '')::uuid);

-- Every call to internal-mcp, as the audit trail admins read through its `audit_log` tool. No foreign
-- keys: the trail outlives the users and organisations it names.
CREATE TABLE internal_mcp_audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- The role the call was served with: the lower of the credential's and the user's.
    role user_role NOT NULL,
    -- The `jti` of the service credential, to tie calls to the credential that made them.
    credential_id text NOT NULL,
    -- Which endpoint served it: `all` (/mcp) or a component (`sql`, `metrics`, `incidents`).
    endpoint text NOT NULL,
    -- The tool name, or `resources/read` for resource reads.
    tool text NOT NULL,
    -- The arguments as received; confirmation tokens are replaced by "[redacted]".
    arguments jsonb NOT NULL,
    -- The SQL the call ran on the reader connection, if any.
    sql_text text,
    rows_returned bigint,
    duration_ms double precision NOT NULL CHECK (duration_ms >= 0),
    outcome text NOT NULL CHECK (outcome IN ('ok', 'error')),
    -- What the caller was told when the outcome is `error`.
    message text
);
COMMENT ON TABLE internal_mcp_audit_log IS 'internal-mcp''s audit trail: one row per tool call or resource read (who, which tool, arguments, SQL, rows, duration, outcome). Not readable by internal_mcp_reader.';
CREATE INDEX internal_mcp_audit_log_by_time ON internal_mcp_audit_log (organization_id, at DESC, id DESC);

-- Pending two-step confirmations of internal-mcp's privileged operations. The first call stores a
-- plan and hands out a random token; the second call must come from the same user and organisation,
-- for the same tool and arguments, before `expires_at`, and consumes the row (once).
CREATE TABLE internal_mcp_confirmations (
    -- SHA-256 of the token; the token itself is returned once and never stored.
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    tool text NOT NULL,
    -- SHA-256 of the tool's arguments (without the token), so changed arguments are refused.
    arguments_digest bytea NOT NULL CHECK (length(arguments_digest) = 32),
    -- What the first call said would change.
    plan jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    CHECK (expires_at > created_at),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE internal_mcp_confirmations IS 'Two-step confirmations of internal-mcp''s privileged operations: a plan, the hash of its one-time token, who may confirm it and until when. Not readable by internal_mcp_reader.';
CREATE INDEX internal_mcp_confirmations_by_expiry ON internal_mcp_confirmations (expires_at);

ALTER TABLE internal_mcp_audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE internal_mcp_confirmations ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON internal_mcp_audit_log, internal_mcp_confirmations FROM PUBLIC;

-- Hardening that only a superuser can apply: it changes what PUBLIC may do with built-in functions
-- of this database (pg_proc is per database, so other databases on the server are unaffected).
-- The roles that own this database and its tables get back what they lose, so the product, its
-- migrations (which take an advisory lock) and pg_dump keep working.
DO $$
DECLARE
    -- PUBLIC loses these; the owners keep them.
    restricted text[] := ARRAY[
        -- Changes settings, including app.organization_id, on which row-level security rests.
        'pg_catalog.set_config(text,text,boolean)',
        -- Signal other backends of the same role: one tenant's query could cancel another's.
        'pg_catalog.pg_terminate_backend(integer,bigint)',
        'pg_catalog.pg_terminate_backend(integer)',
        'pg_catalog.pg_cancel_backend(integer)',
        -- Other sessions of the same role: their SQL text, i.e. other tenants' questions.
        'pg_catalog.pg_stat_get_activity(integer)',
        'pg_catalog.pg_stat_get_backend_activity(integer)',
        -- Statements prepared on a pooled connection, which may hold other tenants' SQL.
        'pg_catalog.pg_prepared_statement()',
        -- Session-level locks outlive the read-only transaction, and enough of them exhaust the
        -- server's lock table for everyone.
        'pg_catalog.pg_advisory_lock(bigint)',
        'pg_catalog.pg_advisory_lock(integer,integer)',
        'pg_catalog.pg_advisory_lock_shared(bigint)',
        'pg_catalog.pg_advisory_lock_shared(integer,integer)',
        'pg_catalog.pg_try_advisory_lock(bigint)',
        'pg_catalog.pg_try_advisory_lock(integer,integer)',
        'pg_catalog.pg_try_advisory_lock_shared(bigint)',
        'pg_catalog.pg_try_advisory_lock_shared(integer,integer)',
        'pg_catalog.pg_advisory_xact_lock(bigint)',
        'pg_catalog.pg_advisory_xact_lock(integer,integer)',
        'pg_catalog.pg_advisory_xact_lock_shared(bigint)',
        'pg_catalog.pg_advisory_xact_lock_shared(integer,integer)',
        'pg_catalog.pg_try_advisory_xact_lock(bigint)',
        'pg_catalog.pg_try_advisory_xact_lock(integer,integer)',
        'pg_catalog.pg_try_advisory_xact_lock_shared(bigint)',
        'pg_catalog.pg_try_advisory_xact_lock_shared(integer,integer)',
        -- Run SQL passed as a string, out of sight of the cost check done with EXPLAIN.
        'pg_catalog.query_to_xml(text,boolean,boolean,text)',
        'pg_catalog.query_to_xmlschema(text,boolean,boolean,text)',
        'pg_catalog.query_to_xml_and_xmlschema(text,boolean,boolean,text)',
        'pg_catalog.cursor_to_xml(refcursor,integer,boolean,boolean,text)',
        'pg_catalog.cursor_to_xmlschema(refcursor,boolean,boolean,text)',
        'pg_catalog.table_to_xml(regclass,boolean,boolean,text)',
        'pg_catalog.table_to_xmlschema(regclass,boolean,boolean,text)',
        'pg_catalog.table_to_xml_and_xmlschema(regclass,boolean,boolean,text)',
        'pg_catalog.schema_to_xml(name,boolean,boolean,text)',
        'pg_catalog.schema_to_xmlschema(name,boolean,boolean,text)',
        'pg_catalog.schema_to_xml_and_xmlschema(name,boolean,boolean,text)',
        'pg_catalog.database_to_xml(boolean,boolean,text)',
        'pg_catalog.database_to_xmlschema(boolean,boolean,text)',
        'pg_catalog.database_to_xml_and_xmlschema(boolean,boolean,text)',
        'pg_catalog.ts_stat(text)',
        'pg_catalog.ts_stat(text,text)',
        -- Large objects: the product stores none; reading or creating them is never needed.
        'pg_catalog.lo_open(oid,integer)',
        'pg_catalog.lo_get(oid)',
        'pg_catalog.lo_get(oid,bigint,integer)',
        'pg_catalog.lo_create(oid)',
        'pg_catalog.lo_creat(integer)',
        'pg_catalog.lo_from_bytea(oid,bytea)',
        'pg_catalog.lo_put(oid,bigint,bytea)',
        'pg_catalog.lo_unlink(oid)',
        'pg_catalog.lowrite(integer,bytea)',
        'pg_catalog.loread(integer,integer)',
        -- Server files; PostgreSQL already keeps these from PUBLIC, this only makes sure.
        'pg_catalog.lo_import(text)',
        'pg_catalog.lo_import(text,oid)',
        'pg_catalog.lo_export(oid,text)',
        'pg_catalog.pg_read_file(text)',
        'pg_catalog.pg_read_file(text,boolean)',
        'pg_catalog.pg_read_file(text,bigint,bigint)',
        'pg_catalog.pg_read_file(text,bigint,bigint,boolean)',
        'pg_catalog.pg_read_binary_file(text)',
        'pg_catalog.pg_read_binary_file(text,boolean)',
        'pg_catalog.pg_read_binary_file(text,bigint,bigint)',
        'pg_catalog.pg_read_binary_file(text,bigint,bigint,boolean)',
        'pg_catalog.pg_ls_dir(text)',
        'pg_catalog.pg_ls_dir(text,boolean,boolean)',
        'pg_catalog.pg_stat_file(text)',
        'pg_catalog.pg_stat_file(text,boolean)'
    ];
    -- PUBLIC loses SELECT on these views; the owners keep it.
    restricted_views text[] := ARRAY['pg_catalog.pg_stat_activity', 'pg_catalog.pg_prepared_statements'];
    owners name[];
    item text;
    owner_role name;
BEGIN
    IF current_setting('is_superuser') <> 'on' THEN
        RAISE WARNING 'internal-mcp hardening skipped: this migration did not run as a superuser. '
            'internal-mcp refuses to start until a superuser applies the REVOKE statements listed '
            'in internal-mcp/README.md to this database.';
        RETURN;
    END IF;

    SELECT array_agg(DISTINCT role.rolname) INTO owners
      FROM pg_catalog.pg_roles role
     WHERE NOT role.rolsuper
       AND role.rolname <> 'internal_mcp_reader'
       AND role.oid IN (
           (SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()),
           (SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'public.organizations'::regclass));

    FOREACH item IN ARRAY restricted LOOP
        CONTINUE WHEN to_regprocedure(item) IS NULL; -- not in this PostgreSQL version
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', item);
        FOREACH owner_role IN ARRAY coalesce(owners, '{}') LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', item, owner_role);
        END LOOP;
    END LOOP;
    FOREACH item IN ARRAY restricted_views LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', item);
        FOREACH owner_role IN ARRAY coalesce(owners, '{}') LOOP
            EXECUTE format('GRANT SELECT ON %s TO %I', item, owner_role);
        END LOOP;
    END LOOP;

    -- Backstops should internal-mcp's own per-transaction limits ever be missing. Role settings are
    -- cluster-wide: another database's migration may be writing them at the same moment, which
    -- PostgreSQL reports as an error; they are a second line, so that is only worth a warning.
    BEGIN
        ALTER ROLE internal_mcp_reader SET statement_timeout = '60s';
        ALTER ROLE internal_mcp_reader SET idle_in_transaction_session_timeout = '60s';
        ALTER ROLE internal_mcp_reader SET temp_file_limit = '1GB';
        ALTER ROLE internal_mcp_reader SET default_transaction_read_only = on;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'internal-mcp: could not set the reader role''s backstop settings: %', SQLERRM;
    END;
END
$$;

-- Column comments for what a model writing SQL cannot guess from names and types.
COMMENT ON COLUMN organizations.next_incident_number IS 'The number the next incident of this organisation gets (INC-<number>).';
COMMENT ON COLUMN users.role IS 'viewer reads; responder also acknowledges, resolves and annotates incidents and acts on alerts; admin also manages tokens and monitors.';
COMMENT ON COLUMN services.tier IS 'How critical the service is: tier_1 (customer facing, paged first), tier_2, tier_3.';
COMMENT ON COLUMN services.links IS 'JSON array of {"title", "url"} objects: runbook, dashboard, repository.';
COMMENT ON COLUMN services.owner_id IS 'users.id of the person who owns the service, if any.';
COMMENT ON COLUMN services.tags IS 'Free-form labels, e.g. customer-facing, pci, kotlin.';
COMMENT ON COLUMN metric_series.name IS 'One of latency_p50_ms, latency_p95_ms, error_rate, request_rate, cpu_utilization; monitors.metric refers to it.';
COMMENT ON COLUMN metric_series.unit IS 'How to read metric_samples.value: ms, ratio (0..1), rps (requests per second).';
COMMENT ON COLUMN metric_samples.ts IS 'The minute the sample covers (UTC, whole minutes). Filter on (series_id, ts): that is the primary key.';
COMMENT ON COLUMN metric_samples.value IS 'The value for that minute, in metric_series.unit. error_rate is a ratio of requests (weight it by request_rate when combining services or minutes).';
COMMENT ON COLUMN monitors.metric IS 'The metric_series.name the rule watches on its service.';
COMMENT ON COLUMN monitors.comparison IS 'above: the value must exceed threshold to breach; below: it must fall under it.';
COMMENT ON COLUMN monitors.for_minutes IS 'How many consecutive minutes the condition must hold before an alert fires.';
COMMENT ON COLUMN monitors.silenced_until IS 'While in the future, the monitor raises no alerts.';
COMMENT ON COLUMN incidents.number IS 'Per-organisation number; people call the incident INC-<number>.';
COMMENT ON COLUMN incidents.status IS 'open -> acknowledged -> resolved (open -> resolved is allowed too).';
COMMENT ON COLUMN incidents.commander_id IS 'users.id of the person leading the response, if any.';
COMMENT ON COLUMN incidents.opened_at IS 'When the incident was opened (usually a few minutes after the first alert fired).';
COMMENT ON COLUMN alerts.state IS 'firing while the monitor''s condition holds; resolved once it stops (then resolved_at is set).';
COMMENT ON COLUMN alerts.labels IS 'JSON object of labels, e.g. {"service": "checkout-api", "metric": "error_rate", "team": "checkout"}; query with labels->>''team''.';
COMMENT ON COLUMN alerts.incident_id IS 'The incident this alert is linked to, if any.';
COMMENT ON COLUMN alerts.acknowledged_by IS 'users.id of who acknowledged the alert.';
COMMENT ON COLUMN incident_events.kind IS 'opened, acknowledged, resolved, note or alert_linked.';
COMMENT ON COLUMN incident_events.author_id IS 'users.id of who made the change or wrote the note.';
COMMENT ON COLUMN deployments.status IS 'in_progress, succeeded, failed (aborted, never fully out) or rolled_back (was out, then replaced by a rollback deployment).';
COMMENT ON COLUMN deployments.deployed_by IS 'Who started it: a user''s e-mail address or a CI account such as ci-bot.';
COMMENT ON COLUMN deployments.started_at IS 'When the rollout started; a bad change usually shows in metrics minutes later.';
