-- Ward store schema v2 (postgres): typed search index and the patient compartment (SPEC F-2, F-3, EN-4).
-- Replaces blind_index; Store::open re-indexes existing resources (search_index_state).
-- Plaintext here: parameter names, clinical (non-identifying) date ranges, quantities and their
-- units, reference targets (type + server-assigned id), years of identifying dates. Every string,
-- token and uri value is only a keyed HMAC.

CREATE TABLE search_blind (
    tenant TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    id     TEXT NOT NULL,
    param  TEXT NOT NULL,
    hash   BYTEA NOT NULL
);
CREATE INDEX search_blind_lookup ON search_blind (tenant, rtype, param, hash);
CREATE INDEX search_blind_owner ON search_blind (tenant, rtype, id);

CREATE TABLE search_date (
    tenant TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    id     TEXT NOT NULL,
    param  TEXT NOT NULL,
    lo_ms  BIGINT,
    hi_ms  BIGINT,
    year   BIGINT,
    hash   BYTEA
);
CREATE INDEX search_date_lookup ON search_date (tenant, rtype, param, lo_ms, hi_ms);
CREATE INDEX search_date_year ON search_date (tenant, rtype, param, year);
CREATE INDEX search_date_owner ON search_date (tenant, rtype, id);

CREATE TABLE search_reference (
    tenant      TEXT NOT NULL,
    rtype       TEXT NOT NULL,
    id          TEXT NOT NULL,
    param       TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL
);
CREATE INDEX search_reference_lookup ON search_reference (tenant, rtype, param, target_id, target_type);
CREATE INDEX search_reference_owner ON search_reference (tenant, rtype, id);

CREATE TABLE search_quantity (
    tenant TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    id     TEXT NOT NULL,
    param  TEXT NOT NULL,
    lo     DOUBLE PRECISION,
    hi     DOUBLE PRECISION,
    system TEXT,
    code   TEXT,
    unit   TEXT
);
CREATE INDEX search_quantity_lookup ON search_quantity (tenant, rtype, param, lo);
CREATE INDEX search_quantity_owner ON search_quantity (tenant, rtype, id);

CREATE TABLE compartment (
    tenant     TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    rtype      TEXT NOT NULL,
    id         TEXT NOT NULL,
    PRIMARY KEY (tenant, patient_id, rtype, id)
);
CREATE INDEX compartment_owner ON compartment (tenant, rtype, id);

CREATE TABLE search_index_state (
    tenant  TEXT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
);

DROP TABLE blind_index;
