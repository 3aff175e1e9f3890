-- OAuth for people (issue 10, wip-tokens): authorization codes, refresh-token families and
-- EHR launch contexts. Codes, refresh tokens and launch values are stored only as keyed
-- hashes (HMAC-SHA-256 under the index key); times are Unix seconds; `*_json` columns hold
-- the grant's context (client, user, scope, launch context, auth_time/amr/acr), no secret.

CREATE TABLE oauth_code (
    code_hash  BLOB    NOT NULL PRIMARY KEY,
    client_id  TEXT    NOT NULL,
    grant_json TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    -- the token family issued from the code: a replayed code revokes it
    family     TEXT
);
CREATE INDEX oauth_code_expiry ON oauth_code (expires_at);

-- One family per code exchange: its access tokens carry it as `fam`, its refresh tokens
-- point to it. Revoked as a whole on refresh-token reuse, code replay or revocation.
CREATE TABLE oauth_family (
    family       TEXT    NOT NULL PRIMARY KEY,
    client_id    TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    grant_json   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    -- absolute end of the family's refresh tokens
    expires_at   INTEGER NOT NULL,
    revoked      INTEGER NOT NULL CHECK (revoked IN (0, 1))
);
CREATE INDEX oauth_family_user ON oauth_family (user_id);
CREATE INDEX oauth_family_client ON oauth_family (client_id);

CREATE TABLE oauth_refresh_token (
    token_hash      BLOB    NOT NULL PRIMARY KEY,
    family          TEXT    NOT NULL REFERENCES oauth_family (family),
    scope           TEXT    NOT NULL,
    issued_at       INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    -- set when rotated: presenting it again is reuse
    used_at         INTEGER
);
CREATE INDEX oauth_refresh_token_family ON oauth_refresh_token (family);

CREATE TABLE oauth_launch (
    launch_hash  BLOB    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL,
    context_json TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
