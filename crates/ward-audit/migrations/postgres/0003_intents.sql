-- Ward audit schema v3 (postgres): query aids for reconciling writes (AU-2).
--
-- audit_record.kind is the record's kind ('request', 'intent', 'admin') and intent_seq the seq
-- of the intent record a final record names, both copied from the canonical record by the
-- writer. Rows written before this migration leave them NULL; reconciliation reads those rows'
-- records instead. The chain hash covers the record, not these columns.

ALTER TABLE audit_record ADD COLUMN kind TEXT;
ALTER TABLE audit_record ADD COLUMN intent_seq BIGINT;
CREATE INDEX audit_record_intents ON audit_record (node, seq) WHERE kind = 'intent';
CREATE INDEX audit_record_by_intent ON audit_record (node, intent_seq) WHERE intent_seq IS NOT NULL;
