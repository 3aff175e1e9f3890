-- Client registration extras (redirect URIs, public clients, JWKS), the private_key_jwt
-- replay cache and the revocation list every node polls.
ALTER TABLE oauth_client ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE oauth_client ADD COLUMN is_public INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1));
ALTER TABLE oauth_client ADD COLUMN jwks TEXT;
ALTER TABLE oauth_client ADD COLUMN jwks_url TEXT;

-- One row per client assertion accepted, kept until the assertion expires: a jti is never
-- accepted twice, across nodes and restarts.
CREATE TABLE client_assertion_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jti_expires ON client_assertion_jti (expires_at);

-- Revoked subjects, token families and token ids. `seq` only grows: nodes poll for rows past
-- the last one they saw. `revoked_at` (unix seconds) lets a subject's later tokens work;
-- `expires_at` (unix seconds) is when the row is no longer needed (NULL: never).
CREATE TABLE revocation (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('subject', 'family', 'jti')),
    value      TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX revocation_expires ON revocation (expires_at);
-- Clients disabled before this table existed stay refused.
INSERT INTO revocation (kind, value, revoked_at)
    SELECT 'subject', client_id, CAST(strftime('%s', 'now') AS INTEGER) FROM oauth_client WHERE disabled = 1;
