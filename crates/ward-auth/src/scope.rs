//! SMART on FHIR scopes (SPEC AC-4, SMART App Launch 2.x): v2 `context/Type.cruds`, v1
//! `.read/.write/.*`, granular v2 scopes (`patient/Observation.rs?category=...`) and the
//! non-resource scopes `launch`, `launch/patient`, `launch/encounter`, `openid`, `fhirUser`,
//! `profile`, `offline_access`, `online_access`.
//!
//! Clinical scopes are parsed into permission bit sets so that granting is an intersection and
//! checking is a mask test. A granular scope keeps its search-parameter restrictions (sorted,
//! without repeats); they are conjunctive, as repeated FHIR search parameters are. Until the
//! policy issue enforces them, a restricted scope grants nothing in [`ScopeSet::allows`]: a
//! restriction Ward cannot enforce must never be read as "no restriction". [`ScopeSet::access`]
//! gives the restrictions to whoever enforces them.
//!
//! Unknown or malformed scopes are refused by [`ScopeSet::parse`] (the token endpoint answers
//! RFC 6749 `invalid_scope`), so a typo never silently grants or drops access. Scopes already
//! stored or carried by an external identity provider's token use [`ScopeSet::parse_lenient`],
//! which drops what it does not know (dropping only ever narrows).

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

/// The non-resource scopes SMART App Launch 2.x and OpenID Connect define. None of them
/// confers access to FHIR data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Special {
    /// EHR launch: the app passes back the `launch` value it was started with.
    Launch,
    /// Standalone launch: the app needs a patient chosen.
    LaunchPatient,
    /// Standalone launch: the app needs an encounter chosen.
    LaunchEncounter,
    OpenId,
    FhirUser,
    Profile,
    OfflineAccess,
    OnlineAccess,
}

impl Special {
    const ALL: [Special; 8] = [
        Special::Launch,
        Special::LaunchPatient,
        Special::LaunchEncounter,
        Special::OpenId,
        Special::FhirUser,
        Special::Profile,
        Special::OfflineAccess,
        Special::OnlineAccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Special::Launch => "launch",
            Special::LaunchPatient => "launch/patient",
            Special::LaunchEncounter => "launch/encounter",
            Special::OpenId => "openid",
            Special::FhirUser => "fhirUser",
            Special::Profile => "profile",
            Special::OfflineAccess => "offline_access",
            Special::OnlineAccess => "online_access",
        }
    }

    fn from_str(s: &str) -> Option<Special> {
        Special::ALL.into_iter().find(|sp| sp.as_str() == s)
    }

    fn describe(self) -> &'static str {
        match self {
            Special::Launch => "Receive the context the app was launched with from the health record system",
            Special::LaunchPatient => "Work with one patient, chosen when the app starts",
            Special::LaunchEncounter => "Work with one encounter, chosen when the app starts",
            Special::OpenId => "Confirm who you are to the app",
            Special::FhirUser => "Tell the app which Practitioner or Patient record is you",
            Special::Profile => "Share your name and profile with the app",
            Special::OfflineAccess => "Keep access when you are not using the app, until you revoke it",
            Special::OnlineAccess => "Keep access while you are signed in",
        }
    }
}

/// One search-parameter restriction of a granular scope: `category=system|code`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Restriction {
    pub param: String,
    pub value: String,
}

/// Most restrictions one scope may carry, and their sizes: scopes come from clients.
const MAX_RESTRICTIONS: usize = 8;
const MAX_PARAM_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 256;

/// One clinical scope: context, resource type (`None` = `*`), permission bits and
/// restrictions (empty = unrestricted; sorted, no repeats).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Scope {
    context: Context,
    resource: Option<String>,
    perms: u8,
    restrictions: Vec<Restriction>,
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

    /// Whether this scope reaches everything `other`'s resource names: `*` only by `*`.
    fn covers_resource_of(&self, other: &Scope) -> bool {
        match other.resource.as_deref() {
            Some(r) => self.covers_type(r),
            None => self.resource.is_none(),
        }
    }

    /// Whether this scope's restrictions are all among `other`'s (it is at most as narrow).
    fn restrictions_within(&self, other: &Scope) -> bool {
        self.restrictions.iter().all(|r| other.restrictions.contains(r))
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
        let mut sep = '?';
        for r in &self.restrictions {
            write!(f, "{sep}{}={}", r.param, r.value)?;
            sep = '&';
        }
        Ok(())
    }
}

/// A parse failure; names the offending scope (scopes are not PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct ScopeError(pub String);

/// What the scopes allow for one interaction on one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    Denied,
    /// Some scope allows it without restriction.
    Unrestricted,
    /// Only granular scopes allow it: each entry is one scope's restrictions (all must hold),
    /// and any one scope suffices.
    Restricted(Vec<&'a [Restriction]>),
}

/// A set of granted or requested scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    clinical: Vec<Scope>,
    special: Vec<Special>,
}

impl ScopeSet {
    /// Parses a space-separated scope string. Unknown and malformed scopes are errors, so a
    /// typo never silently grants or drops access.
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut set = ScopeSet::default();
        for token in s.split_whitespace() {
            set.add_token(token)?;
        }
        Ok(set)
    }

    /// Like [`parse`](Self::parse), but drops unknown or malformed scopes: for scopes Ward
    /// did not just receive from a client (stored registrations, an external provider's token).
    pub fn parse_lenient(s: &str) -> ScopeSet {
        let mut set = ScopeSet::default();
        for token in s.split_whitespace() {
            let _ = set.add_token(token);
        }
        set
    }

    fn add_token(&mut self, token: &str) -> Result<(), ScopeError> {
        if let Some(special) = Special::from_str(token) {
            if !self.special.contains(&special) {
                self.special.push(special);
            }
            return Ok(());
        }
        let scope = parse_clinical(token).ok_or_else(|| ScopeError(bounded(token)))?;
        self.add(scope);
        Ok(())
    }

    fn add(&mut self, scope: Scope) {
        if scope.perms == 0 {
            return;
        }
        if let Some(existing) = self.clinical.iter_mut().find(|s| {
            s.context == scope.context && s.resource == scope.resource && s.restrictions == scope.restrictions
        }) {
            existing.perms |= scope.perms;
        } else {
            self.clinical.push(scope);
        }
    }

    /// True when no scope at all is present.
    pub fn is_empty(&self) -> bool {
        self.clinical.is_empty() && self.special.is_empty()
    }

    /// The scopes both sets allow: for clinical scopes the permission bits common to a
    /// requested scope and an allowed scope of the same context covering its type, under the
    /// restrictions of both. A type of [`EXPLICIT_ONLY`] is granted only when an allowed scope
    /// names it: a requested `system/AuditEvent.rs` meets `system/*.cruds` in nothing. A
    /// registered granular scope never grants the unrestricted request: it meets it in itself.
    pub fn intersect(&self, allowed: &ScopeSet) -> ScopeSet {
        let mut out = ScopeSet::default();
        for req in &self.clinical {
            for al in allowed.clinical.iter().filter(|a| a.context == req.context) {
                let resource = match (&req.resource, &al.resource) {
                    (Some(r), _) if !al.covers_type(r) => continue,
                    (Some(r), _) => Some(r.clone()),
                    (None, a) => a.clone(),
                };
                let mut restrictions: Vec<Restriction> =
                    req.restrictions.iter().chain(&al.restrictions).cloned().collect();
                restrictions.sort();
                restrictions.dedup();
                out.add(Scope {
                    context: req.context,
                    resource,
                    perms: req.perms & al.perms,
                    restrictions,
                });
            }
        }
        for s in &self.special {
            if allowed.special.contains(s) && !out.special.contains(s) {
                out.special.push(*s);
            }
        }
        out
    }

    /// Whether everything this set allows, `other` allows too (a refresh may narrow, never
    /// widen): each permission of each scope is held by a scope of `other` of the same context
    /// that reaches its resource with no restriction it lacks.
    pub fn is_within(&self, other: &ScopeSet) -> bool {
        let clinical = self.clinical.iter().all(|s| {
            LETTERS
                .iter()
                .filter(|(bit, _)| s.perms & bit != 0)
                .all(|(bit, _)| {
                    other.clinical.iter().any(|o| {
                        o.context == s.context
                            && o.perms & bit != 0
                            && o.covers_resource_of(s)
                            && o.restrictions_within(s)
                    })
                })
        });
        clinical && self.special.iter().all(|s| other.special.contains(s))
    }

    /// Whether some unrestricted scope of `context` allows one of `any_of` on a type not in
    /// `except` (`*` counts): whether such an interaction on such a type could be authorized.
    pub fn allows_any_type_except(&self, context: Context, except: &[&str], any_of: &[Interaction]) -> bool {
        let wanted = any_of.iter().fold(0, |m, i| m | i.bit());
        self.clinical.iter().any(|s| {
            s.context == context
                && s.restrictions.is_empty()
                && s.perms & wanted != 0
                && s.resource.as_deref().is_none_or(|r| !except.contains(&r))
        })
    }

    /// Whether an unrestricted scope of `context` allows `interaction` on `rtype` (for a type
    /// of [`EXPLICIT_ONLY`], a scope naming it). Granular scopes do not count here: nothing
    /// enforces their restrictions yet, and they must not act as their unrestricted form.
    pub fn allows(&self, context: Context, rtype: &str, interaction: Interaction) -> bool {
        self.access(context, rtype, interaction) == Access::Unrestricted
    }

    /// What the scopes of `context` allow for `interaction` on `rtype`, restrictions included:
    /// for the enforcement of granular scopes.
    pub fn access(&self, context: Context, rtype: &str, interaction: Interaction) -> Access<'_> {
        let mut restricted = Vec::new();
        for s in self
            .clinical
            .iter()
            .filter(|s| s.context == context && s.covers_type(rtype) && s.perms & interaction.bit() != 0)
        {
            if s.restrictions.is_empty() {
                return Access::Unrestricted;
            }
            restricted.push(s.restrictions.as_slice());
        }
        if restricted.is_empty() {
            Access::Denied
        } else {
            Access::Restricted(restricted)
        }
    }

    /// Whether the non-resource scope `name` (`openid`, `offline_access`, ...) is present.
    pub fn has(&self, name: &str) -> bool {
        Special::from_str(name).is_some_and(|s| self.special.contains(&s))
    }

    fn has_special(&self, special: Special) -> bool {
        self.special.contains(&special)
    }

    /// `openid`: the client wants an id_token.
    pub fn has_openid(&self) -> bool {
        self.has_special(Special::OpenId)
    }

    /// `fhirUser`: the id_token (and token response) name the user's FHIR resource.
    pub fn has_fhir_user(&self) -> bool {
        self.has_special(Special::FhirUser)
    }

    /// `profile`: OIDC profile claims.
    pub fn has_profile(&self) -> bool {
        self.has_special(Special::Profile)
    }

    /// `offline_access`: a refresh token that outlives the session.
    pub fn wants_offline(&self) -> bool {
        self.has_special(Special::OfflineAccess)
    }

    /// `online_access`: a refresh token bound to the session.
    pub fn wants_online(&self) -> bool {
        self.has_special(Special::OnlineAccess)
    }

    /// `launch`: an EHR launch (the request carries a `launch` value).
    pub fn launch(&self) -> bool {
        self.has_special(Special::Launch)
    }

    /// `launch/patient`: a standalone launch that needs a patient chosen.
    pub fn launch_patient(&self) -> bool {
        self.has_special(Special::LaunchPatient)
    }

    /// `launch/encounter`: a standalone launch that needs an encounter chosen.
    pub fn launch_encounter(&self) -> bool {
        self.has_special(Special::LaunchEncounter)
    }

    /// The scopes in plain words, one line each, for a consent page. Restriction values come
    /// from the client: they are limited to URL-safe characters, and a page still escapes them.
    pub fn describe(&self) -> Vec<String> {
        let clinical = self.clinical.iter().map(describe_scope);
        let special = self.special.iter().map(|s| s.describe().to_owned());
        clinical.chain(special).collect()
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
        for s in &self.special {
            sep(f)?;
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// A scope quoted in an error, cut short: it comes from a client.
fn bounded(token: &str) -> String {
    token.chars().take(100).collect()
}

/// A clinical scope, or `None` when `token` is not one.
fn parse_clinical(token: &str) -> Option<Scope> {
    let (ctx, rest) = token.split_once('/')?;
    let context = match ctx {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return None,
    };
    let (resource, rest) = rest.split_once('.')?;
    let resource = match resource {
        "*" => None,
        r if fhir_type_like(r) => Some(r.to_owned()),
        _ => return None,
    };
    let (perms, query) = match rest.split_once('?') {
        Some((perms, query)) => (perms, Some(query)),
        None => (rest, None),
    };
    let perms = match (perms, query) {
        // v1 forms have no granular variant.
        ("read", None) => R | S,
        ("write", None) => C | U | D,
        ("*", None) => C | R | U | D | S,
        (letters, _) => parse_letters(letters)?,
    };
    let restrictions = match query {
        None => Vec::new(),
        Some(q) => parse_restrictions(q)?,
    };
    Some(Scope {
        context,
        resource,
        perms,
        restrictions,
    })
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

/// `name=value(&name=value)*`: search-parameter names (`category`, `code`, `_tag`,
/// `code:below`) and URL-safe values (`http://loinc.org|1234-5`, comma-separated
/// alternatives). Sorted and without repeats, so equal restrictions compare equal.
fn parse_restrictions(query: &str) -> Option<Vec<Restriction>> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        let (param, value) = pair.split_once('=')?;
        let param_ok = (1..=MAX_PARAM_LEN).contains(&param.len())
            && param.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && param
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
        let value_ok = (1..=MAX_VALUE_LEN).contains(&value.len())
            && value.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '-' | '.' | '_' | '~' | ':' | '/' | '|' | ',' | '%' | '+' | '@')
            });
        if !param_ok || !value_ok || out.len() >= MAX_RESTRICTIONS {
            return None;
        }
        out.push(Restriction {
            param: param.to_owned(),
            value: value.to_owned(),
        });
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A resource type name is an ASCII identifier starting with an upper-case letter. Whether
/// it names a real R4 type is the server's concern (an unknown type simply never matches).
fn fhir_type_like(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn describe_scope(s: &Scope) -> String {
    let verbs: Vec<&str> = LETTERS
        .iter()
        .filter(|(bit, _)| s.perms & bit != 0)
        .map(|(bit, _)| match *bit {
            C => "create",
            R => "read",
            U => "update",
            D => "delete",
            _ => "search",
        })
        .collect();
    let verbs = match verbs.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, init)) => format!("{} and {last}", init.join(", ")),
        None => String::new(),
    };
    let mut verbs = verbs.chars();
    let verbs: String = verbs
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(verbs)
        .collect();
    let what = match s.resource.as_deref() {
        Some(t) => plural(t),
        None => "records".to_owned(),
    };
    let whose = match (s.context, s.resource.is_some()) {
        (Context::Patient, true) => format!("your {what}"),
        (Context::Patient, false) => "all your records".to_owned(),
        (Context::User, _) => format!("the {what} you are allowed to see"),
        (Context::System, true) => format!("all {what}"),
        (Context::System, false) => "all records (every patient)".to_owned(),
    };
    let mut line = format!("{verbs} {whose}");
    if !s.restrictions.is_empty() {
        let parts: Vec<String> = s
            .restrictions
            .iter()
            .map(|r| {
                // `system|code`: the code says it; several codes are alternatives.
                let codes: Vec<&str> = r
                    .value
                    .split(',')
                    .map(|v| v.rsplit('|').next().unwrap_or(v))
                    .collect();
                let codes = codes.join(" or ");
                if r.param == "category" {
                    codes
                } else {
                    format!("{} {codes}", r.param)
                }
            })
            .collect();
        line.push_str(&format!(" ({})", parts.join("; ")));
    }
    line
}

/// "Observation" → "Observations", "Library" → "Libraries", "Basic" → "Basic records".
fn plural(t: &str) -> String {
    if let Some(stem) = t.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        format!("{stem}ies")
    } else if t.ends_with(['s', 'x', 'c']) {
        format!("{t} records")
    } else {
        format!("{t}s")
    }
}

#[cfg(test)]
mod tests;
