-- Ward audit schema v1 (PostgreSQL). Shares the database with the resources but has its own
-- tables and migrations table (ward_audit_migrations). Append-only (AU-4): row triggers refuse
-- UPDATE and DELETE, statement triggers refuse TRUNCATE. See the ward-audit crate documentation
-- for the recommended role set-up (Ward connects as a role with only SELECT and INSERT here).
--
-- audit_record.record holds the canonical bytes of the record (the hashed input);
-- prev_hash/hash are the chain links. The other columns are query aids derived from the record
-- by the writer; searches re-check every match against the parsed canonical record.

CREATE TABLE audit_record (
    node          TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    action        TEXT   NOT NULL,
    status        BIGINT NOT NULL,
    client_id     TEXT,
    user_id       TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    record        TEXT   NOT NULL,
    prev_hash     BYTEA  NOT NULL,
    hash          BYTEA  NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_record_by_time ON audit_record (at_ms);

CREATE TABLE audit_patient (
    node       TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    patient_id TEXT   NOT NULL,
    PRIMARY KEY (patient_id, node, seq)
);

CREATE TABLE audit_checkpoint (
    node      TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    hash      BYTEA  NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BYTEA  NOT NULL,
    at        TEXT   NOT NULL,
    PRIMARY KEY (node, seq)
);

CREATE FUNCTION ward_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit tables are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record
    FOR EACH ROW EXECUTE FUNCTION ward_audit_append_only();
CREATE TRIGGER audit_record_no_truncate BEFORE TRUNCATE ON audit_record
    FOR EACH STATEMENT EXECUTE FUNCTION ward_audit_append_only();
CREATE TRIGGER audit_patient_append_only BEFORE UPDATE OR DELETE ON audit_patient
    FOR EACH ROW EXECUTE FUNCTION ward_audit_append_only();
CREATE TRIGGER audit_patient_no_truncate BEFORE TRUNCATE ON audit_patient
    FOR EACH STATEMENT EXECUTE FUNCTION ward_audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION ward_audit_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION ward_audit_append_only();
