-- What the web pages need beyond the first schema: the signed-in user's current role and the
-- means to re-read it, the short-lived state of a sign-in in progress, and the rule that a
-- conversation runs one turn at a time.

-- The role is re-read from the product (GET /api/v1/me) when a turn starts and on page loads
-- once `role_checked_at` is older than a few minutes, so a demoted user loses power. The refresh
-- token is what lets the host ask again without the user; it is bound to the host's confidential
-- client, so it is useless without the client secret, which never enters this database. Access
-- tokens (bearer tokens, usable alone) are kept only in memory.
ALTER TABLE sessions
    ADD COLUMN role              text NOT NULL DEFAULT 'viewer'
                                 CHECK (role IN ('viewer', 'responder', 'admin')),
    ADD COLUMN user_name         text NOT NULL DEFAULT '',
    ADD COLUMN organization_name text NOT NULL DEFAULT '',
    ADD COLUMN refresh_token     text,
    ADD COLUMN role_checked_at   timestamptz NOT NULL DEFAULT now();

-- A sign-in between the redirect to the authorization server and its callback. The browser holds
-- a random secret in a short-lived cookie; only its SHA-256 digest is stored, with the `state`
-- and the PKCE verifier it is bound to. Each row is used once.
CREATE TABLE pending_sign_ins (
    id_digest     bytea PRIMARY KEY,
    state         text NOT NULL,
    code_verifier text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX pending_sign_ins_expiry ON pending_sign_ins (expires_at);

-- One turn at a time per conversation: a second question waits until the first one has ended
-- (completed, stopped or failed). Enforced here so two quick posts cannot both start.
CREATE UNIQUE INDEX turns_one_active_per_conversation
    ON turns (conversation_id) WHERE status IN ('running', 'waiting_for_approval');
