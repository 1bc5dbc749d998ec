-- The monitoring product's schema. Every tenant table carries `organization_id`, and every foreign
-- key between tenant tables includes it, so a row can never point at another organisation's row.

CREATE TYPE user_role AS ENUM ('viewer', 'responder', 'admin');
CREATE TYPE service_tier AS ENUM ('tier_1', 'tier_2', 'tier_3');
CREATE TYPE severity AS ENUM ('critical', 'high', 'medium', 'low');
CREATE TYPE alert_state AS ENUM ('firing', 'resolved');
CREATE TYPE incident_status AS ENUM ('open', 'acknowledged', 'resolved');
CREATE TYPE deployment_status AS ENUM ('in_progress', 'succeeded', 'failed', 'rolled_back');
CREATE TYPE comparison AS ENUM ('above', 'below');

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Incidents are numbered per organisation (INC-1, INC-2, ...); taking a number locks this row.
    next_incident_number integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE organizations IS 'Tenants. Every other table belongs to exactly one organisation.';

CREATE TABLE users (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    email text NOT NULL CHECK (position('@' IN email) > 1),
    name text NOT NULL,
    role user_role NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, email),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE users IS 'People of an organisation. role: viewer reads, responder also acts on incidents, admin also manages.';

CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    name text NOT NULL,
    -- SHA-256 of the token; the token itself is shown once at creation and never stored.
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- The first characters of the token, so a person can tell their tokens apart.
    token_prefix text NOT NULL,
    scopes text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']),
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE api_tokens IS 'REST API tokens of users. Only a SHA-256 hash is stored. scopes: read, write, admin.';

CREATE TABLE services (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    team text NOT NULL,
    tier service_tier NOT NULL,
    description text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    -- [{"title": "Runbook", "url": "https://..."}]
    links jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(links) = 'array'),
    owner_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name),
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, owner_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE services IS 'The service catalog: what an organisation runs, which team owns it and how critical it is (tier_1 is most critical).';

CREATE TABLE metric_series (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL,
    service_id uuid NOT NULL,
    -- latency_p50_ms, latency_p95_ms, error_rate, request_rate, cpu_utilization
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    unit text NOT NULL,
    description text NOT NULL DEFAULT '',
    UNIQUE (service_id, name),
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, service_id) REFERENCES services (organization_id, id)
);
COMMENT ON TABLE metric_series IS 'One time series per service and metric name; unit says how to read metric_samples.value (ms, ratio 0..1, requests per second, ratio of one CPU).';

CREATE TABLE metric_samples (
    organization_id uuid NOT NULL,
    series_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision NOT NULL,
    -- Named, because the seed drops and re-creates both around its bulk load (see seed/copy.rs).
    CONSTRAINT metric_samples_pkey PRIMARY KEY (series_id, ts),
    CONSTRAINT metric_samples_series_fkey FOREIGN KEY (organization_id, series_id)
        REFERENCES metric_series (organization_id, id)
);
COMMENT ON TABLE metric_samples IS 'Raw per-minute samples of a metric series. The largest table: always filter by series_id and a ts range.';

CREATE TABLE monitors (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    service_id uuid NOT NULL,
    name text NOT NULL,
    metric text NOT NULL,
    comparison comparison NOT NULL,
    threshold double precision NOT NULL,
    -- The condition must hold this many consecutive minutes before an alert fires.
    for_minutes integer NOT NULL CHECK (for_minutes BETWEEN 1 AND 1440),
    severity severity NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    -- While set and in the future, the monitor raises no alerts.
    silenced_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, service_id) REFERENCES services (organization_id, id)
);
COMMENT ON TABLE monitors IS 'Alert rules: a threshold on one metric of one service (metric = metric_series.name).';

CREATE TABLE incidents (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    number integer NOT NULL,
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    summary text NOT NULL DEFAULT '',
    severity severity NOT NULL,
    status incident_status NOT NULL DEFAULT 'open',
    commander_id uuid,
    created_by uuid NOT NULL,
    opened_at timestamptz NOT NULL,
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    UNIQUE (organization_id, number),
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, commander_id) REFERENCES users (organization_id, id),
    FOREIGN KEY (organization_id, created_by) REFERENCES users (organization_id, id),
    -- The lifecycle open -> acknowledged -> resolved leaves these timestamps behind.
    CHECK (status = 'open' OR acknowledged_at IS NOT NULL OR status = 'resolved'),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
COMMENT ON TABLE incidents IS 'Incidents: status moves open -> acknowledged -> resolved (open -> resolved is allowed too). number is per organisation.';

CREATE TABLE incident_services (
    organization_id uuid NOT NULL,
    incident_id uuid NOT NULL,
    service_id uuid NOT NULL,
    PRIMARY KEY (incident_id, service_id),
    FOREIGN KEY (organization_id, incident_id) REFERENCES incidents (organization_id, id),
    FOREIGN KEY (organization_id, service_id) REFERENCES services (organization_id, id)
);
COMMENT ON TABLE incident_services IS 'Services affected by an incident.';

CREATE TABLE alerts (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    monitor_id uuid NOT NULL,
    service_id uuid NOT NULL,
    state alert_state NOT NULL,
    severity severity NOT NULL,
    summary text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    started_at timestamptz NOT NULL,
    resolved_at timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by uuid,
    incident_id uuid,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, monitor_id) REFERENCES monitors (organization_id, id),
    FOREIGN KEY (organization_id, service_id) REFERENCES services (organization_id, id),
    FOREIGN KEY (organization_id, acknowledged_by) REFERENCES users (organization_id, id),
    FOREIGN KEY (organization_id, incident_id) REFERENCES incidents (organization_id, id),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (resolved_at IS NULL OR resolved_at >= started_at)
);
COMMENT ON TABLE alerts IS 'Alerts raised by monitors: firing until resolved; may be acknowledged and linked to an incident.';

CREATE TABLE incident_events (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    incident_id uuid NOT NULL,
    at timestamptz NOT NULL,
    -- opened, acknowledged, resolved, note, alert_linked
    kind text NOT NULL CHECK (kind IN ('opened', 'acknowledged', 'resolved', 'note', 'alert_linked')),
    author_id uuid,
    body text NOT NULL DEFAULT '',
    FOREIGN KEY (organization_id, incident_id) REFERENCES incidents (organization_id, id),
    FOREIGN KEY (organization_id, author_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE incident_events IS 'The timeline of an incident: lifecycle changes, notes and linked alerts, in order of at.';

CREATE TABLE deployments (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    service_id uuid NOT NULL,
    version text NOT NULL,
    commit_sha text NOT NULL DEFAULT '',
    deployed_by text NOT NULL,
    status deployment_status NOT NULL,
    description text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, service_id) REFERENCES services (organization_id, id)
);
COMMENT ON TABLE deployments IS 'Releases of a service: which version, by whom, when, and whether it succeeded or was rolled back.';

CREATE TABLE idempotency_keys (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- What was asked (method, path and a digest of the body), so a key reused for another request is refused.
    request_fingerprint bytea NOT NULL,
    resource_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id, key),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE idempotency_keys IS 'Idempotency-Key headers of creating requests (kept 24 hours), so a retried request returns the first result instead of creating a duplicate.';

-- Indexes for the API's filters, newest first.
CREATE INDEX alerts_by_time ON alerts (organization_id, started_at DESC, id DESC);
CREATE INDEX alerts_by_service ON alerts (service_id, started_at DESC);
CREATE INDEX alerts_by_incident ON alerts (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX incidents_by_time ON incidents (organization_id, opened_at DESC, id DESC);
CREATE INDEX incident_services_by_service ON incident_services (service_id);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, at, id);
CREATE INDEX deployments_by_service ON deployments (service_id, started_at DESC);
CREATE INDEX deployments_by_time ON deployments (organization_id, started_at DESC, id DESC);
CREATE INDEX monitors_by_service ON monitors (service_id);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
