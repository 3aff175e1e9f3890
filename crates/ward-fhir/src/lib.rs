//! ward-fhir: FHIR R4 knowledge for Ward, pure and I/O-free.
//!
//! - [`types`]: the R4 resource type names.
//! - [`bundle`]: transaction and batch Bundles parsed into entry requests.
//! - [`id`]: FHIR logical id syntax.
//! - [`outcome`]: `OperationOutcome` builder and issue codes.
//! - [`json`]: strict request-body parsing (duplicate keys, depth and size limits).
//! - [`validate`]: validation against the embedded R4 JSON schema plus rules the schema lacks.
//! - [`rules`]: the FHIR rules beyond the schema (primitive formats, narrative XHTML in
//!   `xhtml`, ele-1, ext-1, choice elements, modifier extensions, dom-3..5, per-type invariants).
//! - [`index`]: the case- and accent-insensitive normal form of string search values.
//! - [`fhirpath`]: the FHIRPath subset the R4 search parameters use.
//! - [`search`]: search-parameter table, index values, patient compartment, query parsing.
//! - [`synthetic`]: deterministic synthetic test data.
//!
//! The R4 JSON schema, the search parameters (trimmed) and the patient CompartmentDefinition are
//! vendored under `fhir-r4/` (HL7, CC0; see `fhir-r4/NOTICE.md` and `fhir-r4/README.md`).

// Request bodies and queries are parsed here: no panic and no overflow on client input
// (issue 15). Tests may unwrap.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod bundle;
pub mod fhirpath;
pub mod id;
pub mod index;
pub mod json;
pub mod outcome;
pub mod rules;
mod schema;
pub mod search;
pub mod synthetic;
pub mod types;
pub mod validate;
mod xhtml;
