-- internal-mcp's reader, take three.
--
-- 1. The model's query is checked and run inside the database, by one function of the reader's
--    own rights (SECURITY INVOKER: row-level security and the revokes apply as ever).
--    internal-mcp sends the model's text alone first (parsed, never planned, so it must be exactly
--    one statement), then wraps it and hands the wrapped statement to
--    internal_mcp_guarded_query(statement, max_cost, max_plan_bytes, run):
--    - the plan of the wrapped statement is refused when it is larger than max_plan_bytes, when
--      its root is not the wrapper's Limit (the text changed the statement around it), or when a
--      node writes or locks rows; the highest estimated total cost of any node under that Limit
--      is what the cost check reads (a Limit scales its own cost down by the fraction of rows it
--      expects to read, so the nodes below it tell a lazily-yielding huge join from a cheap
--      query);
--    - without run, it answers one row: that cost and the plan (explain_select);
--    - with run, a cost over max_cost is refused (SQLSTATE IM001, naming the plan's top
--      node); otherwise a first row carries the cost, and the statement's rows follow.
--    Whatever the planner or the executor produces (a plan that quotes a constant folded to 300 MB,
--    an error message quoting such a value) stays in the database: every error leaving the
--    function is cut to 1,000 characters, so internal-mcp's memory is bounded before anything is
--    buffered. A cancelled statement (timeout) is passed on untouched.
--    The function runs only at the top of a statement, as internal-mcp calls it: called from a
--    query (the model's SQL runs inside it) it would run SQL held in a string, out of sight of the
--    checks, for an organisation of the caller's choosing, so it refuses.
-- 2. More functions taken from PUBLIC, continuing 0003's list (internal-mcp's
--    `hardening::FUNCTIONS_KEPT_FROM_READER` holds both; a test checks they agree):
--    age(xid) and mxid_age(xid) read the cluster's transaction counter through xmin (what
--    revoking txid_current hid), and the server's start and configuration times and addresses
--    tell one tenant about the server all tenants share.

CREATE FUNCTION internal_mcp_guarded_query(
    organization_id uuid, statement text, max_cost double precision, max_plan_bytes integer,
    run boolean)
RETURNS TABLE (highest_cost double precision, plan jsonb, encoded bytea)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
-- No SET search_path: the statement's names must resolve as the caller's would. The body's own
-- functions and operators resolve in pg_catalog, which is searched first, and the reader cannot
-- move its search_path (SET is no query, set_config is revoked). The organisation is set with SET
-- LOCAL, run here by EXECUTE, for the same reason: the reader may not call set_config.
AS $function$
DECLARE
    stack text;
    explained text;
    writing text;
    costliest jsonb;
BEGIN
    GET DIAGNOSTICS stack = PG_CONTEXT;
    IF strpos(stack, E'\n') > 0 THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = 'permission denied for function internal_mcp_guarded_query: it runs only the queries internal-mcp hands it, never from a query';
    END IF;
    IF current_setting('transaction_read_only') <> 'on' THEN
        RAISE EXCEPTION USING ERRCODE = '25000',
            MESSAGE = 'internal_mcp_guarded_query runs only in a read-only transaction';
    END IF;
    IF organization_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'internal_mcp_guarded_query needs the organisation whose rows the query may read';
    END IF;
    EXECUTE format('SET LOCAL app.organization_id = %L', organization_id);
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || statement INTO explained;
    IF octet_length(explained) > max_plan_bytes THEN
        RAISE EXCEPTION USING ERRCODE = '54000',
            MESSAGE = format('the plan takes %s bytes, over the limit of %s',
                             octet_length(explained), max_plan_bytes);
    END IF;
    plan := explained::jsonb;
    IF (plan #>> '{0,Plan,Node Type}') IS DISTINCT FROM 'Limit' THEN
        RAISE EXCEPTION USING ERRCODE = '42601', MESSAGE = 'the statement is not one query';
    END IF;
    SELECT node #>> '{}' INTO writing
      FROM jsonb_path_query(plan,
               'lax $.**."Node Type" ? (@ == "ModifyTable" || @ == "LockRows")') AS node
     LIMIT 1;
    IF writing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('the plan has a %s node: data-modifying statements and row locks are refused', writing);
    END IF;
    -- A node without a cost counts as infinitely expensive (fail closed).
    SELECT max(coalesce((node ->> 'Total Cost')::double precision, 'Infinity'))
      INTO highest_cost
      FROM jsonb_path_query(plan #> '{0,Plan,Plans}', 'lax $.** ? (exists (@."Node Type"))') AS node;
    highest_cost := coalesce(highest_cost, 'Infinity');
    IF NOT run THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF highest_cost > max_cost THEN
        -- The node under the wrapper (under its subquery scan, when the query was not flattened),
        -- so the message names the caller's own plan; never the cost itself (it moves with other
        -- organisations' statistics).
        costliest := plan #> '{0,Plan,Plans,0}';
        IF costliest ->> 'Node Type' = 'Subquery Scan' AND costliest ->> 'Alias' = 'q' THEN
            costliest := costliest #> '{Plans,0}';
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'IM001',
            MESSAGE = concat(costliest ->> 'Node Type', ' on ' || (costliest ->> 'Relation Name'));
    END IF;
    plan := NULL;
    encoded := NULL;
    RETURN NEXT;
    RETURN QUERY EXECUTE statement;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = left(SQLERRM, 1000);
END
$function$;

COMMENT ON FUNCTION internal_mcp_guarded_query(uuid, text, double precision, integer, boolean) IS
    'internal-mcp: a wrapped model query, checked (and run), bounded (see migration 0005)';
REVOKE ALL ON FUNCTION internal_mcp_guarded_query(uuid, text, double precision, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal_mcp_guarded_query(uuid, text, double precision, integer, boolean)
    TO internal_mcp_reader;

DO $$
DECLARE
    function_patterns text[] := ARRAY[
        -- The cluster's transaction counter, read through any row's xmin.
        'age(xid)',
        'mxid\_age(xid)',
        -- The shared server: when it started and reloaded, and its addresses.
        'pg\_postmaster\_start\_time()',
        'pg\_conf\_load\_time()',
        'inet\_server\_%'
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
    -- As in 0003: the roles that own this database and its tables keep what PUBLIC loses.
    SELECT array_agg(DISTINCT role.rolname) INTO owners
      FROM pg_roles role
     WHERE NOT role.rolsuper
       AND role.rolname <> 'internal_mcp_reader'
       AND role.oid IN (
           (SELECT datdba FROM pg_database WHERE datname = current_database()),
           (SELECT relowner FROM pg_class WHERE oid = 'public.organizations'::regclass));
    FOR item IN
        SELECT p.oid::regprocedure::text
          FROM pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace
           AND p.prokind IN ('f', 'w')
           AND (p.proname || '(' || oidvectortypes(p.proargtypes) || ')') LIKE ANY (function_patterns)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', item);
        FOREACH owner_role IN ARRAY coalesce(owners, '{}') LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', item, owner_role);
        END LOOP;
    END LOOP;
END
$$;

-- 3. internal-mcp keeps each acting user's role in memory instead of reading it on every request,
--    and forgets it when told the user changed: a change to a user's role or organisation, or the
--    user's deletion, notifies internal_mcp_user_changes with the user's id (`*` after a TRUNCATE),
--    at commit. NOTIFY the command, not pg_notify the function: whoever changes users needs no
--    privilege for it (0003 took pg_notify from PUBLIC).
CREATE FUNCTION internal_mcp_notify_user_change() RETURNS trigger
LANGUAGE plpgsql AS $function$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        NOTIFY internal_mcp_user_changes, '*';
    ELSE
        EXECUTE format('NOTIFY internal_mcp_user_changes, %L', OLD.id::text);
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION internal_mcp_notify_user_change() IS
    'internal-mcp: tells it a user''s role or membership changed (see migration 0005)';
REVOKE ALL ON FUNCTION internal_mcp_notify_user_change() FROM PUBLIC;

CREATE TRIGGER internal_mcp_user_changed
    AFTER UPDATE OF role, organization_id OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION internal_mcp_notify_user_change();
CREATE TRIGGER internal_mcp_users_truncated
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION internal_mcp_notify_user_change();
