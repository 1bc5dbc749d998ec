-- internal-host's own data, in its own schema, owned by its own role.
--
-- These migrations run as the `internal_host` role with `search_path = internal_host`, in a schema
-- that role owns (an administrator creates both once, see `internal_host::database::BOOTSTRAP_SQL`).
-- The role has no privilege on the product's tables: the host reaches product data only through
-- MCP servers, and its start-up check refuses to run if that ever stops being true.

-- Signed-in browser sessions. The id in the cookie is random; only its SHA-256 digest is stored.
CREATE TABLE sessions (
    id_digest       bytea PRIMARY KEY,
    user_id         uuid NOT NULL,
    organization_id uuid NOT NULL,
    email           text NOT NULL,
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- A conversation belongs to one user of one organisation; every read names both.
CREATE TABLE conversations (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    title           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_owner ON conversations (organization_id, user_id, updated_at DESC);

-- One user question and the work done to answer it. `correlation_id` travels to internal-mcp on
-- every call of the turn, so a turn and internal-mcp's audit rows can be joined.
CREATE TABLE turns (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    correlation_id  uuid NOT NULL UNIQUE,
    question        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'waiting_for_approval', 'completed', 'stopped', 'failed')),
    model_calls     integer NOT NULL DEFAULT 0,
    tool_calls      integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX turns_of_conversation ON turns (conversation_id, created_at);

-- The durable event log: everything a page shows (text deltas, tool calls and results, approvals,
-- the end of a turn) is an event with a sequence number, so a reader resumes after the last one it
-- saw (SSE `Last-Event-ID`) and a reload loses nothing.
CREATE TABLE events (
    sequence        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    turn_id         uuid NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_of_conversation ON events (conversation_id, sequence);

-- A change the model proposed and a human must confirm. The confirmation token internal-mcp
-- issued is kept here and never shown to the model or the page.
CREATE TABLE approvals (
    id                 uuid PRIMARY KEY,
    turn_id            uuid NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    server             text NOT NULL,
    tool               text NOT NULL,
    arguments          jsonb NOT NULL,
    plan               jsonb NOT NULL,
    confirmation_token text NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'expired')),
    decided_by         uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz
);
CREATE INDEX approvals_of_turn ON approvals (turn_id);
