-- The product as its own OAuth 2.1 authorization server (see ARCHITECTURE.md, "Who issues what"):
-- users' passwords, dynamically registered clients, authorization requests in progress, grants,
-- authorization codes, access tokens and refresh tokens.
--
-- Every secret here (password, code, token, client secret) is stored only as a hash: passwords as
-- Argon2id PHC strings, the random ones as SHA-256 digests, like API tokens. None of these tables
-- is granted to internal_mcp_reader, and each has row-level security with no policy for it, so a
-- model's SQL can never read them (the same two walls as api_tokens).

-- One password per user, apart from `users` because internal_mcp_reader may read `users`.
CREATE TABLE user_passwords (
    organization_id uuid NOT NULL,
    user_id uuid PRIMARY KEY,
    -- An Argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash); never a plain password.
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE user_passwords IS 'Users'' sign-in passwords as Argon2id hashes. Not readable by internal_mcp_reader.';

-- Clients registered through Dynamic Client Registration (RFC 7591). Pre-registered confidential
-- clients come from the server's configuration, and metadata-document clients are fetched.
CREATE TABLE oauth_clients (
    client_id text PRIMARY KEY,
    client_name text NOT NULL CHECK (length(client_name) BETWEEN 1 AND 200),
    redirect_uris text[] NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
    -- none (a public client using PKCE only), client_secret_basic or client_secret_post.
    token_endpoint_auth_method text NOT NULL
        CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'client_secret_post')),
    -- SHA-256 of the client secret; NULL exactly for public clients.
    client_secret_hash bytea CHECK (length(client_secret_hash) = 32),
    registered_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((token_endpoint_auth_method = 'none') = (client_secret_hash IS NULL))
);
COMMENT ON TABLE oauth_clients IS 'OAuth clients registered dynamically (RFC 7591). Secrets are stored as SHA-256 digests.';

-- An authorization request between /oauth/authorize and the redirect back: validated parameters,
-- the browser it belongs to (a cookie's digest) and the form's anti-CSRF token (its digest).
CREATE TABLE oauth_authorization_requests (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    state text NOT NULL,
    code_challenge text NOT NULL,
    resource text NOT NULL,
    scopes text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write']),
    browser_binding_hash bytea NOT NULL CHECK (length(browser_binding_hash) = 32),
    csrf_token_hash bytea NOT NULL CHECK (length(csrf_token_hash) = 32),
    -- Set once the user signed in; consent is only possible after that.
    organization_id uuid,
    user_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the user allowed or denied: the request cannot be answered twice.
    completed_at timestamptz,
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE oauth_authorization_requests IS 'OAuth authorization requests waiting for sign-in and consent.';

-- What a user allowed a client: one grant per consent. Its access and refresh tokens (and the
-- tokens exchanged from them) form one family: revoking the grant revokes all of them.
CREATE TABLE oauth_grants (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- The resource (RFC 8707) the grant's tokens are for: external-mcp's URL, or the API's.
    resource text NOT NULL,
    scopes text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    -- Why: revoked by the client or user, refresh token reused, authorization code replayed.
    revoked_reason text,
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE oauth_grants IS 'Consents given to OAuth clients; a revoked grant revokes every token of its family.';

CREATE TABLE oauth_authorization_codes (
    -- SHA-256 of the code.
    code_hash bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    code_challenge text NOT NULL,
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    resource text NOT NULL,
    scopes text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write']),
    expires_at timestamptz NOT NULL,
    -- Set on first use, with the grant it created: a second use revokes that grant.
    redeemed_at timestamptz,
    grant_id uuid REFERENCES oauth_grants (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
COMMENT ON TABLE oauth_authorization_codes IS 'One-time OAuth authorization codes (hashed), valid for a few minutes.';

CREATE TABLE oauth_access_tokens (
    id uuid PRIMARY KEY,
    -- SHA-256 of the token.
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    grant_id uuid NOT NULL REFERENCES oauth_grants (id),
    -- The access token it was exchanged from (RFC 8693), if any; revoking that one revokes this.
    exchanged_from uuid REFERENCES oauth_access_tokens (id),
    -- The client holding the token (for an exchanged token: the resource server that exchanged it).
    client_id text NOT NULL,
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- The one resource (audience) that may accept the token.
    resource text NOT NULL,
    scopes text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write']),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id)
);
CREATE INDEX oauth_access_tokens_grant ON oauth_access_tokens (grant_id);
COMMENT ON TABLE oauth_access_tokens IS 'Short-lived OAuth access tokens (hashed), each bound to one resource.';

CREATE TABLE oauth_refresh_tokens (
    id uuid PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    grant_id uuid NOT NULL REFERENCES oauth_grants (id),
    expires_at timestamptz NOT NULL,
    -- Set when it was exchanged for its successor (rotation); presenting it again revokes the grant.
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens (grant_id);
COMMENT ON TABLE oauth_refresh_tokens IS 'OAuth refresh tokens (hashed); each is used once and replaced (rotation).';

-- The second wall behind the missing GRANTs: row-level security with no policy for the reader.
ALTER TABLE user_passwords ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_authorization_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_authorization_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_access_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_refresh_tokens ENABLE ROW LEVEL SECURITY;
