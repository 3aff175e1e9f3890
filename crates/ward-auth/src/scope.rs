//! SMART on FHIR scopes: v2 `context/Type.cruds` and v1 `.read/.write/.*` (SPEC AC-4).
//!
//! Scopes are parsed into permission bit sets so that granting is an intersection and
//! checking is a mask test. Anything that is not a clinical scope (`openid`, `launch`, ...)
//! is kept aside and never confers access to FHIR data.

use std::fmt;

/// Which launch context a clinical scope belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// The FHIR interaction classes SMART v2 scopes distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    Create,
    /// read, vread and instance history
    Read,
    Update,
    Delete,
    /// search and type/system history
    Search,
}

impl Interaction {
    fn bit(self) -> u8 {
        match self {
            Interaction::Create => C,
            Interaction::Read => R,
            Interaction::Update => U,
            Interaction::Delete => D,
            Interaction::Search => S,
        }
    }
}

const C: u8 = 1;
const R: u8 = 2;
const U: u8 = 4;
const D: u8 = 8;
const S: u8 = 16;
const LETTERS: [(u8, char); 5] = [(C, 'c'), (R, 'r'), (U, 'u'), (D, 'd'), (S, 's')];

/// One clinical scope: context, resource type (`None` = `*`) and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Scope {
    context: Context,
    resource: Option<String>,
    perms: u8,
}

/// Types a `*` scope does not reach: a scope must name them (`system/AuditEvent.rs`). The
/// audit trail is for auditors, not for every integration with `system/*.rs`.
pub const EXPLICIT_ONLY: [&str; 1] = ["AuditEvent"];

fn explicit_only(rtype: &str) -> bool {
    EXPLICIT_ONLY.contains(&rtype)
}

impl Scope {
    /// A scope naming `rtype`, or `*` for a type that a wildcard reaches.
    fn covers_type(&self, rtype: &str) -> bool {
        match self.resource.as_deref() {
            Some(r) => r == rtype,
            None => !explicit_only(rtype),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.",
            self.context.as_str(),
            self.resource.as_deref().unwrap_or("*")
        )?;
        for (bit, letter) in LETTERS {
            if self.perms & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// A parse failure; names the offending scope (scopes are not PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct ScopeError(pub String);

/// A set of granted or requested scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    clinical: Vec<Scope>,
    other: Vec<String>,
}

impl ScopeSet {
    /// Parses a space-separated scope string. Unknown clinical forms are errors, so a typo
    /// never silently grants or drops access.
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut set = ScopeSet::default();
        for token in s.split_whitespace() {
            match parse_clinical(token)? {
                Some(scope) => set.add(scope),
                None => {
                    if !set.other.iter().any(|o| o == token) {
                        set.other.push(token.to_owned());
                    }
                }
            }
        }
        Ok(set)
    }

    fn add(&mut self, scope: Scope) {
        if scope.perms == 0 {
            return;
        }
        if let Some(existing) = self
            .clinical
            .iter_mut()
            .find(|s| s.context == scope.context && s.resource == scope.resource)
        {
            existing.perms |= scope.perms;
        } else {
            self.clinical.push(scope);
        }
    }

    /// Whether the non-clinical scope `name` (`openid`, `offline_access`, ...) is present.
    pub fn has(&self, name: &str) -> bool {
        self.other.iter().any(|o| o == name)
    }

    /// Whether every scope of `self` is also in `wider` (with no more permissions): what a
    /// refresh may ask for.
    pub fn is_within(&self, wider: &ScopeSet) -> bool {
        self.intersect(wider) == *self
    }

    /// True when no scope at all is present.
    pub fn is_empty(&self) -> bool {
        self.clinical.is_empty() && self.other.is_empty()
    }

    /// The scopes both sets allow: for clinical scopes the permission bits common to a
    /// requested scope and an allowed scope of the same context covering its type. A type of
    /// [`EXPLICIT_ONLY`] is granted only when an allowed scope names it: a requested
    /// `system/AuditEvent.rs` meets `system/*.cruds` in nothing.
    pub fn intersect(&self, allowed: &ScopeSet) -> ScopeSet {
        let mut out = ScopeSet::default();
        for req in &self.clinical {
            for al in allowed.clinical.iter().filter(|a| a.context == req.context) {
                let resource = match (&req.resource, &al.resource) {
                    (Some(r), _) if !al.covers_type(r) => continue,
                    (Some(r), _) => Some(r.clone()),
                    (None, a) => a.clone(),
                };
                out.add(Scope {
                    context: req.context,
                    resource,
                    perms: req.perms & al.perms,
                });
            }
        }
        for o in &self.other {
            if allowed.other.contains(o) && !out.other.contains(o) {
                out.other.push(o.clone());
            }
        }
        out
    }

    /// Whether some scope of `context` allows one of `any_of` on a type not in `except` (`*`
    /// counts): whether such an interaction on such a type could be authorized at all.
    pub fn allows_any_type_except(&self, context: Context, except: &[&str], any_of: &[Interaction]) -> bool {
        let wanted = any_of.iter().fold(0, |m, i| m | i.bit());
        self.clinical.iter().any(|s| {
            s.context == context
                && s.perms & wanted != 0
                && s.resource.as_deref().is_none_or(|r| !except.contains(&r))
        })
    }

    /// Whether a scope of `context` allows `interaction` on `rtype` (for a type of
    /// [`EXPLICIT_ONLY`], a scope naming it).
    pub fn allows(&self, context: Context, rtype: &str, interaction: Interaction) -> bool {
        self.clinical
            .iter()
            .any(|s| s.context == context && s.covers_type(rtype) && s.perms & interaction.bit() != 0)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let r = if first { Ok(()) } else { f.write_str(" ") };
            first = false;
            r
        };
        for s in &self.clinical {
            sep(f)?;
            write!(f, "{s}")?;
        }
        for o in &self.other {
            sep(f)?;
            f.write_str(o)?;
        }
        Ok(())
    }
}

/// `Ok(None)` for a token that is not a clinical scope at all (no `/`).
fn parse_clinical(token: &str) -> Result<Option<Scope>, ScopeError> {
    let Some((ctx, rest)) = token.split_once('/') else {
        return Ok(None);
    };
    let bad = || ScopeError(token.to_owned());
    let context = match ctx {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        // e.g. `launch/patient`: a launch request, not a data scope
        _ => return Ok(None),
    };
    // Granular v2 scopes (`?category=...`) are not supported yet: refuse rather than widen.
    let (resource, perms) = rest.split_once('.').ok_or_else(bad)?;
    let resource = match resource {
        "*" => None,
        r if ward_fhir_type_like(r) => Some(r.to_owned()),
        _ => return Err(bad()),
    };
    let perms = match perms {
        "read" => R | S,
        "write" => C | U | D,
        "*" => C | R | U | D | S,
        letters => parse_letters(letters).ok_or_else(bad)?,
    };
    Ok(Some(Scope {
        context,
        resource,
        perms,
    }))
}

/// v2 permission letters: a non-empty subsequence of `cruds`, in that order.
fn parse_letters(letters: &str) -> Option<u8> {
    let mut perms = 0u8;
    let mut rest = LETTERS.as_slice();
    for ch in letters.chars() {
        // Each letter must come after the previous one in `cruds` order.
        let pos = rest.iter().position(|&(_, l)| l == ch)?;
        let (bit, after) = rest.get(pos..)?.split_first()?;
        perms |= bit.0;
        rest = after;
    }
    (perms != 0).then_some(perms)
}

/// A resource type name is an ASCII identifier starting with an upper-case letter. Whether
/// it names a real R4 type is the server's concern (an unknown type simply never matches).
fn ward_fhir_type_like(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn v2_letters_and_v1_forms() {
        let s = set("system/Patient.rs system/Observation.cruds user/*.read openid");
        assert!(s.allows(Context::System, "Patient", Interaction::Read));
        assert!(s.allows(Context::System, "Patient", Interaction::Search));
        assert!(!s.allows(Context::System, "Patient", Interaction::Create));
        assert!(s.allows(Context::System, "Observation", Interaction::Delete));
        assert!(!s.allows(Context::System, "Condition", Interaction::Read));
        assert!(s.allows(Context::User, "Condition", Interaction::Search));
        assert!(!s.allows(Context::User, "Condition", Interaction::Update));
        assert!(!s.allows(Context::Patient, "Condition", Interaction::Read));
        // A wildcard never reaches the audit trail; a scope naming it does.
        assert!(!s.allows(Context::User, "AuditEvent", Interaction::Search));
        let audit = set("system/*.cruds system/AuditEvent.rs");
        assert!(audit.allows(Context::System, "AuditEvent", Interaction::Search));
        assert!(!audit.allows(Context::System, "AuditEvent", Interaction::Create));
        assert!(audit.allows(Context::System, "*", Interaction::Search));
        let any = [Interaction::Read, Interaction::Search];
        assert!(audit.allows_any_type_except(Context::System, &["AuditEvent"], &any));
        let auditor = set("system/AuditEvent.rs patient/*.cruds openid");
        assert!(!auditor.allows_any_type_except(Context::System, &["AuditEvent"], &any));
        assert!(auditor.allows_any_type_except(Context::Patient, &["AuditEvent"], &any));
        // Only the permissions asked about count: a search-only scope can do no write or read.
        let searcher = set("system/*.s");
        assert!(searcher.allows_any_type_except(Context::System, &[], &any));
        assert!(!searcher.allows_any_type_except(
            Context::System,
            &[],
            &[Interaction::Read, Interaction::Create]
        ));
        assert_eq!(set("system/*.write").to_string(), "system/*.cud");
        assert_eq!(set("system/*.*").to_string(), "system/*.cruds");
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in [
            "system/Patient.rc",
            "system/Patient.xyz",
            "system/Patient.",
            "system/Patient",
            "system/patient.r",
            "system/Patient.rr",
            "system/Patient.r?category=x",
        ] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn intersection_narrows_to_what_is_allowed() {
        let allowed = set("system/Patient.rs system/Observation.cruds");
        assert_eq!(
            set("system/Patient.cruds").intersect(&allowed).to_string(),
            "system/Patient.rs"
        );
        assert_eq!(
            set("system/*.r").intersect(&allowed).to_string(),
            "system/Patient.r system/Observation.r"
        );
        assert!(set("system/Condition.r").intersect(&allowed).is_empty());
        assert!(set("user/Patient.r").intersect(&allowed).is_empty());
        assert!(set("openid").intersect(&allowed).is_empty());
        let wide = set("system/*.rs");
        assert_eq!(
            set("system/Patient.cruds").intersect(&wide).to_string(),
            "system/Patient.rs"
        );
    }

    /// AuditEvent is granted only when the client's registered scopes name it, whatever the
    /// request asks for: (requested, registered, granted).
    #[test]
    fn intersection_never_turns_a_wildcard_into_the_audit_trail() {
        for (requested, registered, granted) in [
            ("system/AuditEvent.rs", "system/*.cruds", ""),
            ("system/AuditEvent.cruds", "system/*.*", ""),
            ("system/AuditEvent.read", "system/*.read", ""),
            (
                "system/AuditEvent.rs system/Patient.r",
                "system/*.cruds",
                "system/Patient.r",
            ),
            ("system/*.rs", "system/*.cruds", "system/*.rs"),
            (
                "system/AuditEvent.rs",
                "system/AuditEvent.rs",
                "system/AuditEvent.rs",
            ),
            (
                "system/AuditEvent.cruds",
                "system/*.cruds system/AuditEvent.rs",
                "system/AuditEvent.rs",
            ),
            (
                "system/AuditEvent.s",
                "system/AuditEvent.rs",
                "system/AuditEvent.s",
            ),
            ("system/*.rs", "system/AuditEvent.rs", "system/AuditEvent.rs"),
            ("user/AuditEvent.rs", "system/AuditEvent.rs", ""),
            ("system/AuditEvent.rs", "user/*.cruds user/AuditEvent.rs", ""),
        ] {
            let got = set(requested).intersect(&set(registered));
            assert_eq!(got.to_string(), granted, "{requested} ∩ {registered}");
            if granted.is_empty() || !granted.contains("AuditEvent") {
                assert!(
                    !got.allows(Context::System, "AuditEvent", Interaction::Read)
                        && !got.allows(Context::System, "AuditEvent", Interaction::Search),
                    "{requested} ∩ {registered} opens the trail"
                );
            }
        }
    }
}
