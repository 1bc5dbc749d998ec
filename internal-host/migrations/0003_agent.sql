-- What the agent loop needs beyond the first schema.
--
-- An approval remembers the model's call that asked for it and until when it can be confirmed
-- (internal-mcp says when its token expires). A tool without a server-side plan has no token: the
-- host itself makes the call once the user confirms, so the token column may be empty.
ALTER TABLE approvals
    ADD COLUMN call_id    text NOT NULL DEFAULT '',
    ADD COLUMN expires_at timestamptz NOT NULL DEFAULT now(),
    ALTER COLUMN confirmation_token DROP NOT NULL;
ALTER TABLE approvals
    ALTER COLUMN call_id DROP DEFAULT,
    ALTER COLUMN expires_at DROP DEFAULT;

-- The whole text of each tool result. The event log keeps what the model read (capped, so pages
-- stay light); this keeps the rest, so the model can page through it with host__read_result.
CREATE TABLE tool_results (
    turn_id    uuid NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    call_id    text NOT NULL,
    full_text  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, call_id)
);
