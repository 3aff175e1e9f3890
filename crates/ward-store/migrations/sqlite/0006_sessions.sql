-- Browser sessions of people signing in through /oauth2/authorize (SPEC AC-6).
-- The session id itself is never stored: only its HMAC under the index key. Times are Unix
-- seconds from the server's clock. `pending` holds the authorization request being served
-- (client, redirect URI, scopes, PKCE challenge, state: no PHI).
CREATE TABLE auth_session (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    auth_time  INTEGER,
    amr        TEXT    NOT NULL,
    acr        TEXT,
    pending    TEXT
);
CREATE INDEX auth_session_by_user ON auth_session (user_id);
CREATE INDEX auth_session_by_last_seen ON auth_session (last_seen);
