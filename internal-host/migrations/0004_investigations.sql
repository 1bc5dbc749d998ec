-- AgenticOps: the investigations the host runs by itself for every new incident, as a job system.
--
-- One row per incident (UNIQUE incident_id), however many host replicas discover it. A worker
-- claims a row with `FOR UPDATE SKIP LOCKED` and holds it by a lease it renews (heartbeat); a
-- row whose lease expired is taken over by another worker. Failed attempts are retried with a
-- backoff (`not_before`) up to `max_attempts`, then the row is `failed` with its reason. Rows held
-- back by a rate limit stay `queued` with the reason in `status_reason`; rows over a budget are
-- `skipped`, with the reason too. Nothing here is a product table: incidents are known by the ids
-- internal-mcp returned.

CREATE TABLE investigations (
    id                 uuid PRIMARY KEY,
    organization_id    uuid NOT NULL,
    incident_id        uuid NOT NULL UNIQUE,
    -- As internal-mcp showed them at discovery: INC-<number>, opening time and services.
    incident_reference text NOT NULL,
    incident_opened_at timestamptz NOT NULL,
    services           text[] NOT NULL DEFAULT '{}',
    -- Travels to internal-mcp as the credentials' jti prefix and X-Correlation-Id.
    correlation_id     uuid NOT NULL UNIQUE,
    status             text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'skipped')),
    -- Why a row waits (rate limit, retry backoff) or was skipped (budget), for people to read.
    status_reason      text,
    attempts           integer NOT NULL DEFAULT 0,
    max_attempts       integer NOT NULL CHECK (max_attempts >= 1),
    -- Not claimed before this time: retry backoff and rate-limit deferral.
    not_before         timestamptz NOT NULL DEFAULT now(),
    lease_owner        text,
    lease_expires_at   timestamptz,
    heartbeat_at       timestamptz,
    -- The timeline note: 'none' yet, 'planned' (about to be written: check the timeline before
    -- writing again), 'posted' (written by this row), 'found' (a previous attempt had written it),
    -- 'disabled' (the policy does not let the worker confirm annotations by itself).
    note_status        text NOT NULL DEFAULT 'none' CHECK (note_status IN ('none', 'planned', 'posted', 'found', 'disabled')),
    note_event_id      uuid,
    report             jsonb,
    -- The last failed attempt's error (kept after a later attempt completes, for the record).
    error              text,
    mcp_calls          integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    CHECK ((status = 'running') = (lease_owner IS NOT NULL))
);
CREATE INDEX investigations_claimable ON investigations (not_before) WHERE status IN ('queued', 'running');
CREATE INDEX investigations_of_organization ON investigations (organization_id, created_at DESC);

-- Every MCP call of an investigation, with a summary of its result: the evidence a report's
-- claims cite by `id`. Confirmation tokens are never stored here.
CREATE TABLE investigation_steps (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    investigation_id uuid NOT NULL REFERENCES investigations (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    name             text NOT NULL,
    tool             text NOT NULL,
    arguments        jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('ok', 'tool_error', 'transport_error')),
    summary          text NOT NULL,
    result           jsonb,
    duration_ms      integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX investigation_steps_of_investigation ON investigation_steps (investigation_id, id);

-- How many investigations each organisation started per UTC day: the daily budget's counter,
-- also the row that serialises the budget and rate-limit decisions of one organisation.
CREATE TABLE investigation_budgets (
    organization_id uuid NOT NULL,
    day             date NOT NULL,
    started         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, day)
);

-- Where discovery of new incidents resumes, per organisation (polls overlap it a little, since
-- an incident's opened_at is its transaction's start, which may commit late).
CREATE TABLE discovery_cursors (
    organization_id uuid PRIMARY KEY,
    since           timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
