-- People who sign in (SPEC AC-1, AC-5). Rows are never deleted (a user is disabled), so a
-- user id (UUID v4) is never reused. Passwords only as argon2id PHC strings (parameters in
-- each string); TOTP secrets only sealed with the store's data key (AAD bound to the user);
-- recovery codes only as keyed hashes (HMAC-SHA-256 under the index key).
CREATE TABLE ward_user (
    user_id              TEXT    NOT NULL PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    role                 TEXT    NOT NULL,
    fhir_user            TEXT,
    password_hash        TEXT    NOT NULL,
    must_change_password BIGINT  NOT NULL CHECK (must_change_password IN (0, 1)),
    totp_epoch           BIGINT,
    totp_secret          BYTEA,
    pending_epoch        BIGINT,
    pending_secret       BYTEA,
    totp_last_step       BIGINT,
    failed_logins        BIGINT  NOT NULL DEFAULT 0,
    locked_until_ms      BIGINT,
    disabled             BIGINT  NOT NULL CHECK (disabled IN (0, 1)),
    created_at           TEXT    NOT NULL
);

CREATE TABLE user_recovery_code (
    user_id   TEXT NOT NULL REFERENCES ward_user (user_id),
    code_hash BYTEA NOT NULL,
    used_at   TEXT,
    PRIMARY KEY (user_id, code_hash)
);
