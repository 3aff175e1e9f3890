-- Ward store schema v7 (sqlite): which audit intent each stored version was written under (AU-2).
--
-- Every write transaction names the audit intent record committed before it (the node's chain
-- and the intent's seq) and adds one row per version it writes, in the same transaction: a
-- version is stored if and only if its row is. Reconciliation asks here whether an intent
-- without a final audit record was committed. Versions written before this migration have no
-- row.

CREATE TABLE write_intent (
    tenant     TEXT    NOT NULL,
    rtype      TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER  NOT NULL,
    node       TEXT    NOT NULL,
    intent_seq INTEGER  NOT NULL,
    PRIMARY KEY (tenant, rtype, id, version)
);
CREATE INDEX write_intent_by_intent ON write_intent (node, intent_seq);
