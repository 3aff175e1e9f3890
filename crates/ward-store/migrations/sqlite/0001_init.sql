-- Ward store schema v1 (SQLite). Integers are INTEGER (64-bit), bytes BLOB, booleans 0/1.
-- No plaintext PHI: resource JSON only as AES-256-GCM ciphertext, index values only as HMACs
-- (plus the plaintext year of indexed dates).

CREATE TABLE resource_version (
    tenant          TEXT    NOT NULL,
    rtype           TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    last_updated    TEXT    NOT NULL,
    last_updated_ms INTEGER NOT NULL,
    deleted         INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    key_epoch       INTEGER,
    ciphertext      BLOB,
    content_hash    BLOB,
    PRIMARY KEY (tenant, rtype, id, version)
);
CREATE INDEX resource_version_by_time ON resource_version (tenant, last_updated_ms);
CREATE INDEX resource_version_by_type_time ON resource_version (tenant, rtype, last_updated_ms);

CREATE TABLE resource_current (
    tenant  TEXT    NOT NULL,
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    PRIMARY KEY (tenant, rtype, id),
    FOREIGN KEY (tenant, rtype, id, version) REFERENCES resource_version (tenant, rtype, id, version)
);

CREATE TABLE blind_index (
    tenant TEXT    NOT NULL,
    rtype  TEXT    NOT NULL,
    id     TEXT    NOT NULL,
    param  TEXT    NOT NULL,
    hash   BLOB    NOT NULL,
    year   INTEGER
);
CREATE INDEX blind_index_lookup ON blind_index (tenant, rtype, param, hash);
CREATE INDEX blind_index_owner ON blind_index (tenant, rtype, id);

CREATE TABLE wrapped_key (
    purpose    TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    wrapped    BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (purpose, epoch)
);

CREATE TABLE oauth_client (
    client_id   TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    disabled    INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at  TEXT    NOT NULL
);
