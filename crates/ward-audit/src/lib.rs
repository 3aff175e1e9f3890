//! ward-audit: the tamper-evident audit trail of Ward (SPEC AU-1..AU-5, AU-7). No HTTP here.
//!
//! * [`AuditRecord`]: the record model (AU-1), with a fixed canonical encoding.
//! * [`start_writer`] / [`AuditHandle`]: one writer task per node owns the node's chain and
//!   group-commits: callers send a record with a oneshot acknowledgement; the writer takes what
//!   is waiting (up to `batch_max`, waiting up to `batch_wait` for more), assigns seqs, hashes
//!   them in order, inserts them in ONE transaction, commits, then acknowledges all. So
//!   [`AuditHandle::record`] returns only once the record is durable (AU-2). When a commit fails
//!   every caller of that batch gets [`AuditError::Unavailable`], [`AuditHandle::healthy`] turns
//!   false, and the next batch is attempted as usual, so service resumes by itself. Before it,
//!   the writer compares the database head of its chain with its own: when it is neither its
//!   own nor the one the failed batch would have made, someone else wrote to the chain, and the
//!   writer stops for good (every record fails closed) rather than adopt and later sign it.
//! * Every record carries a MAC under the audit MAC key `DIR/keys/audit-mac.key`, and signed
//!   checkpoints (AU-3) every `checkpoint_every` records or `checkpoint_interval`, and at
//!   shutdown, use the Ed25519 audit key `DIR/keys/audit-ed25519.p8` ([`AuditSigner`] holds
//!   both). A new chain is registered by a signed genesis checkpoint.
//! * [`verify`], [`export`], [`verify_export`]: chain and checkpoint verification, online and
//!   offline.
//! * [`to_audit_event`], [`search`], [`disclosures`]: review as FHIR R4 `AuditEvent` (AU-5);
//!   [`patient_sources`], [`records_via`]: the records naming patients through a resource
//!   version (a large Group), for disclosures to resolve.
//!
//! # Canonical encoding (version 2)
//!
//! The canonical bytes of a record are its compact JSON serialization (serde_json, UTF-8, no
//! whitespace) with:
//! * the fields of [`AuditRecord`] in declaration order: `at, node, seq, request_id, actor,
//!   source, action, kind, resource_type, resource_id, resource_version, patients,
//!   purpose_of_use, break_glass, outcome, returned, query_hashes, intent_seq,
//!   server_request_id, patients_via` (version 1 had neither of the last two); nested objects
//!   likewise in declaration order: `actor = {client_id, user_id, roles_or_scopes}`,
//!   `source = {ip, port, user_agent}`, `outcome = {status, code}`;
//! * every field always present; absent optional values are `null`; `kind` is one of
//!   `"request"`, `"intent"`, `"admin"`;
//! * integers in plain decimal; booleans `true`/`false`;
//! * strings escaped as serde_json does: `"` → `\"`, `\` → `\\`, U+0008/0009/000A/000C/000D →
//!   `\b \t \n \f \r`, other control characters below U+0020 → `\u00XX` (lower-case hex);
//!   everything else (including `/` and non-ASCII) verbatim as UTF-8;
//! * `at` is always `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds) and `node` matches
//!   `[A-Za-z0-9.-]{1,48}`, so every record starts `{"at":"…","node":"…","seq":N,`.
//!
//! The chain of a node: `hash(n) = SHA-256(hash(n-1) || canonical_bytes(n))` with
//! `hash(0)` = 32 zero bytes. The store keeps, per record, the canonical bytes (`record`), the
//! previous hash and the hash; verification recomputes over the stored bytes. The chain hash is
//! unkeyed so that an export can be checked offline against signed checkpoints.
//!
//! Each record is also authenticated: `mac = HMAC-SHA-256(mac_key, hash(n) || be64(cp_seq))`,
//! where `cp_seq` (stored beside it) is the seq of the chain's last signed checkpoint when the
//! record was written. Without the MAC key (which never leaves `DIR/keys`) no one can add a
//! record that verifies: not at the head, not in a fabricated chain. And since `cp_seq` is under
//! the MAC, removing a checkpoint that any later record names is detected.
//!
//! A checkpoint `(node, seq, hash, key_id, signature, at, prev_seq, chains)` signs (Ed25519)
//! the UTF-8 message `ward-audit-checkpoint-v2|{node}|{seq}|{hex(hash)}|{at}|{prev_seq}|{chains}`;
//! `key_id` is the first 16 characters of base64url(SHA-256(raw 32-byte public key)),
//! `prev_seq` the seq of the chain's previous checkpoint and `chains` the comma-separated,
//! sorted chains registered when it was signed. The first checkpoint of every chain is its
//! genesis: seq 0, hash all zeros, `prev_seq` -1, written when a writer first opens the chain.
//! So verification knows which chains must exist: a chain without a signed genesis (fabricated,
//! or with every checkpoint removed) fails, a checkpoint whose predecessor is gone fails, and a
//! chain that a later checkpoint of any chain lists but that is gone entirely fails
//! (`MissingChain`). Deleting every chain at once leaves nothing in the database to compare
//! with: only an export kept elsewhere shows it.
//!
//! # Append-only (AU-4)
//!
//! On both backends triggers refuse UPDATE and DELETE on `audit_record`, `audit_patient`,
//! `audit_patient_via` and `audit_checkpoint` (PostgreSQL also refuses TRUNCATE). On PostgreSQL also use grants, so that
//! a compromised Ward cannot drop the triggers:
//!
//! ```sql
//! -- once, as a superuser
//! CREATE ROLE ward_owner NOLOGIN;              -- owns the schema, runs the migrations
//! CREATE ROLE ward LOGIN PASSWORD '...';       -- what `ward serve` connects as
//! GRANT CONNECT ON DATABASE ward TO ward;
//! -- after the migrations ran as ward_owner (e.g. `SET ROLE ward_owner` in a migration step):
//! REVOKE ALL ON audit_record, audit_patient, audit_patient_via, audit_checkpoint FROM PUBLIC;
//! GRANT SELECT, INSERT ON audit_record, audit_patient, audit_patient_via, audit_checkpoint TO ward;
//! GRANT SELECT ON ward_audit_migrations TO ward;
//! -- resource tables: GRANT SELECT, INSERT, UPDATE, DELETE ... TO ward as needed.
//! ```
//!
//! Ward then can neither UPDATE/DELETE audit rows nor ALTER/DROP the tables or triggers; only
//! the owner (or a superuser) can, and `ward audit verify` detects what they change. The `ward`
//! role can still INSERT (it must, to write the trail), so a stolen credential can add rows; it
//! cannot make them verify (that takes the MAC key and the signing key, both only in
//! `DIR/keys`), and a row added at a running writer's chain position stops that writer (its
//! requests fail closed with 503) until an operator has run `ward audit verify` and restarted.
//! That is detection, not prevention: keep the credential as secret as the keys. Run the
//! migrations (e.g. `0002_keyed.sql`) as `ward_owner` before upgrading Ward.
//!
//! # Retention (AU-7)
//!
//! Nothing here deletes records. Pruning (after six years by default) must be done by the
//! owner role after a signed checkpoint and an [`export`] covering the pruned range.

mod error;
mod export;
mod fhir;
mod intents;
mod lease;
mod record;
mod store;
mod verify;
mod via;
mod writer;

pub use error::AuditError;
pub use export::{EXPORT_FORMAT, export, verify_export};
pub use fhir::{AuditQuery, disclosures, search, to_audit_event};
pub use intents::UnresolvedIntents;
pub use lease::NodeLease;
pub use record::{Actor, AuditRecord, Outcome, RecordKind, Source, format_instant, valid_node_id};
pub use store::{AuditStore, Backend, Checkpoint, MIGRATIONS_TABLE, StoreOptions};
pub use verify::{BadRecord, ChainReport, Damage, VerifyReport, verify};
pub use via::{patient_sources, records_via};
pub use writer::{
    AuditConfig, AuditHandle, AuditSigner, bulk_append, chain_hash, start_leased_writer, start_writer,
};
