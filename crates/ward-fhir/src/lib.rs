//! ward-fhir: FHIR R4 knowledge for Ward, pure and I/O-free.
//!
//! - [`types`]: the R4 resource type names.
//! - [`id`]: FHIR logical id syntax.
//! - [`outcome`]: `OperationOutcome` builder and issue codes.
//! - [`json`]: strict request-body parsing (duplicate keys, depth and size limits).
//! - [`validate`]: validation against the embedded R4 JSON schema plus rules the schema lacks.
//! - [`index`]: identifying search-parameter values for blind indexes (EN-4).
//! - [`synthetic`]: deterministic synthetic test data.
//!
//! The R4 JSON schema is vendored under `fhir-r4/` (HL7, CC0; see `fhir-r4/NOTICE.md`).

pub mod id;
pub mod index;
pub mod json;
pub mod outcome;
mod schema;
pub mod synthetic;
pub mod types;
pub mod validate;
