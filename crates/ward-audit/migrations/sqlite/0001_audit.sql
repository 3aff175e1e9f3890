-- Ward audit schema v1 (SQLite). Lives in its own database file (DIR/audit.db) so audit commits
-- never wait behind resource writes. Append-only (AU-4): triggers refuse UPDATE and DELETE.
--
-- audit_record.record holds the canonical bytes of the record (the hashed input);
-- prev_hash/hash are the chain links. The other columns are query aids derived from the record
-- by the writer; searches re-check every match against the parsed canonical record.

CREATE TABLE audit_record (
    node          TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    action        TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    client_id     TEXT,
    user_id       TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    record        TEXT    NOT NULL,
    prev_hash     BLOB    NOT NULL,
    hash          BLOB    NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_record_by_time ON audit_record (at_ms);

CREATE TABLE audit_patient (
    node       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    patient_id TEXT    NOT NULL,
    PRIMARY KEY (patient_id, node, seq)
);

CREATE TABLE audit_checkpoint (
    node      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL,
    at        TEXT    NOT NULL,
    PRIMARY KEY (node, seq)
);

CREATE TRIGGER audit_record_no_update BEFORE UPDATE ON audit_record
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_record_no_delete BEFORE DELETE ON audit_record
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_patient_no_update BEFORE UPDATE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
