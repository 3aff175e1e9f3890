-- Ward audit schema v2 (SQLite): keyed records and linked, chain-listing checkpoints (AU-3).
--
-- audit_record.mac = HMAC-SHA-256(audit MAC key, hash || big-endian i64 cp_seq), cp_seq being the
-- seq of the last signed checkpoint of the chain when the record was written. Rows written
-- before this migration get an empty mac and cp_seq -1: they never verify.
-- audit_checkpoint.prev_seq is the seq of the chain's previous checkpoint (-1 for the genesis
-- checkpoint at seq 0) and chains the comma-separated chains known when it was signed; both
-- are part of the signed message.

ALTER TABLE audit_record ADD COLUMN cp_seq INTEGER NOT NULL DEFAULT -1;
ALTER TABLE audit_record ADD COLUMN mac BLOB NOT NULL DEFAULT x'';
ALTER TABLE audit_checkpoint ADD COLUMN prev_seq INTEGER NOT NULL DEFAULT -1;
ALTER TABLE audit_checkpoint ADD COLUMN chains TEXT NOT NULL DEFAULT '';

-- The resource versions a record names instead of listing their (too many) patients
-- (AuditRecord.patients_via); disclosures resolve them. Append-only like the rest.
CREATE TABLE audit_patient_via (
    node      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    reference TEXT    NOT NULL,
    PRIMARY KEY (reference, node, seq)
);
CREATE TRIGGER audit_patient_via_no_update BEFORE UPDATE ON audit_patient_via
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
CREATE TRIGGER audit_patient_via_no_delete BEFORE DELETE ON audit_patient_via
BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END;
