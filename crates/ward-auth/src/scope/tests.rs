use super::*;
use proptest::prelude::*;

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
    assert_eq!(
        set("patient/Observation.read").to_string(),
        "patient/Observation.rs"
    );
}

#[test]
fn malformed_and_unknown_scopes_are_refused() {
    for bad in [
        "system/Patient.rc",
        "system/Patient.xyz",
        "system/Patient.",
        "system/Patient",
        "system/patient.r",
        "system/Patient.rr",
        "system/Patient.sr",
        "system/Patient.cruds.",
        "system/Patient.R",
        "system/Pat-ient.r",
        "practitioner/Patient.r",
        "system/*.read?category=laboratory",
        "system/*.write?category=laboratory",
        "system/*.*?category=laboratory",
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?=laboratory",
        "patient/Observation.rs?category=lab&",
        "patient/Observation.rs?category=<script>",
        "patient/Observation.rs?category=a\"b",
        "patient/Observation.rs?1category=lab",
        "patient/Observation.rs?category=a=b",
        "launch/location",
        "launch/",
        "Launch",
        "offline-access",
        "openID",
        "email",
        "fhiruser",
    ] {
        assert!(ScopeSet::parse(bad).is_err(), "{bad}");
        assert!(ScopeSet::parse_lenient(bad).is_empty(), "{bad}");
    }
    let many = (0..=MAX_RESTRICTIONS)
        .map(|i| format!("code=c{i}"))
        .collect::<Vec<_>>()
        .join("&");
    assert!(ScopeSet::parse(&format!("patient/Observation.rs?{many}")).is_err());
    let long = "x".repeat(MAX_VALUE_LEN + 1);
    assert!(ScopeSet::parse(&format!("patient/Observation.rs?code={long}")).is_err());
    // The error quotes the scope, cut short.
    let err = ScopeSet::parse(&format!("system/{}", "A".repeat(5000))).unwrap_err();
    assert!(err.0.len() <= 100);
    // Lenient parsing keeps what it knows.
    assert_eq!(
        ScopeSet::parse_lenient("email system/Patient.rs api://x/read openid").to_string(),
        "system/Patient.rs openid"
    );
}

#[test]
fn non_resource_scopes_and_helpers() {
    let s =
        set("launch launch/patient launch/encounter openid fhirUser profile offline_access online_access");
    assert!(s.launch() && s.launch_patient() && s.launch_encounter());
    assert!(s.has_openid() && s.has_fhir_user() && s.has_profile());
    assert!(s.wants_offline() && s.wants_online());
    // None of them reaches data.
    assert!(!s.allows(Context::Patient, "Patient", Interaction::Read));
    assert!(!s.allows_any_type_except(Context::System, &[], &[Interaction::Read, Interaction::Create]));
    let none = set("patient/*.rs");
    assert!(!none.launch() && !none.launch_patient() && !none.has_openid() && !none.wants_offline());
    assert_eq!(set("openid openid").to_string(), "openid");
    assert!(s.has("offline_access") && s.has("launch/patient") && !none.has("openid"));
    assert!(!s.has("email") && !s.has("patient/*.rs"));
}

/// (scope as written, canonical form): the canonical form parses to the same set.
#[test]
fn canonical_forms() {
    for (written, canonical) in [
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
        ),
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        ),
        (
            "user/Condition.rs?code=http://snomed.info/sct|44054006&category=problem-list-item",
            "user/Condition.rs?category=problem-list-item&code=http://snomed.info/sct|44054006",
        ),
        (
            "patient/Observation.rs?category=a&category=a",
            "patient/Observation.rs?category=a",
        ),
        (
            "patient/Observation.r?category=a patient/Observation.s?category=a",
            "patient/Observation.rs?category=a",
        ),
        (
            "patient/Observation.r patient/Observation.s?category=a",
            "patient/Observation.r patient/Observation.s?category=a",
        ),
        ("patient/*.rs?_tag=x", "patient/*.rs?_tag=x"),
        ("launch/patient patient/*.read", "patient/*.rs launch/patient"),
    ] {
        let parsed = set(written);
        assert_eq!(parsed.to_string(), canonical, "{written}");
        assert_eq!(set(canonical), parsed, "{canonical}");
    }
}

/// Granular scopes: kept with their restrictions, never honoured as their unrestricted form
/// by the check in use today.
#[test]
fn restricted_scopes_grant_nothing_until_enforced() {
    let s = set("system/Observation.rs?category=laboratory");
    assert!(!s.allows(Context::System, "Observation", Interaction::Read));
    assert!(!s.allows(Context::System, "Observation", Interaction::Search));
    assert!(!s.allows_any_type_except(Context::System, &[], &[Interaction::Read]));
    match s.access(Context::System, "Observation", Interaction::Search) {
        Access::Restricted(r) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0][0].param, "category");
            assert_eq!(r[0][0].value, "laboratory");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.access(Context::System, "Observation", Interaction::Create),
        Access::Denied
    );
    assert_eq!(
        s.access(Context::System, "Condition", Interaction::Read),
        Access::Denied
    );
    // An unrestricted scope beside it decides.
    let both = set("system/Observation.rs?category=laboratory system/Observation.r");
    assert_eq!(
        both.access(Context::System, "Observation", Interaction::Read),
        Access::Unrestricted
    );
    assert!(matches!(
        both.access(Context::System, "Observation", Interaction::Search),
        Access::Restricted(_)
    ));
    // A restricted wildcard does not reach the audit trail either.
    let w = set("system/*.rs?category=x");
    assert_eq!(
        w.access(Context::System, "AuditEvent", Interaction::Read),
        Access::Denied
    );
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
    assert_eq!(
        set("openid fhirUser launch/patient offline_access")
            .intersect(&set("openid launch/patient patient/*.rs"))
            .to_string(),
        "openid launch/patient"
    );
}

/// (requested, registered, granted) with granular scopes.
#[test]
fn intersection_with_restrictions() {
    for (requested, registered, granted) in [
        // A registered granular scope never grants the unrestricted request.
        (
            "patient/Observation.rs",
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
        ),
        (
            "patient/*.cruds",
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
        ),
        // A granular request of an unrestricted registration stays granular.
        (
            "patient/Observation.rs?category=laboratory",
            "patient/*.cruds",
            "patient/Observation.rs?category=laboratory",
        ),
        // Both restricted: both hold.
        (
            "patient/Observation.rs?code=x",
            "patient/Observation.r?category=laboratory",
            "patient/Observation.r?category=laboratory&code=x",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "user/Observation.rs",
            "",
        ),
        ("system/AuditEvent.rs", "system/*.rs?category=x", ""),
        (
            "system/*.rs?category=x",
            "system/AuditEvent.rs",
            "system/AuditEvent.rs?category=x",
        ),
    ] {
        let got = set(requested).intersect(&set(registered));
        assert_eq!(got.to_string(), granted, "{requested} ∩ {registered}");
        assert!(got.is_within(&as_requested(&set(requested))) && got.is_within(&set(registered)));
    }
    let granted = set("patient/Observation.rs").intersect(&set("patient/Observation.rs?category=laboratory"));
    assert!(!set("patient/Observation.rs").is_within(&granted));
}

#[test]
fn narrower_and_wider() {
    let granted = set("patient/*.rs patient/Observation.cruds openid offline_access");
    for narrower in [
        "patient/Patient.r",
        "patient/*.s",
        "patient/Observation.cud",
        "patient/Observation.rs?category=laboratory",
        "openid",
        "",
    ] {
        assert!(set(narrower).is_within(&granted), "{narrower}");
    }
    for wider in [
        "patient/*.c",
        "patient/AuditEvent.r",
        "user/Patient.r",
        "fhirUser",
        "patient/*.rs launch",
    ] {
        assert!(!set(wider).is_within(&granted), "{wider}");
    }
    // A restricted grant does not cover its unrestricted form.
    assert!(!set("patient/Observation.rs").is_within(&set("patient/Observation.rs?category=x")));
    assert!(
        set("patient/Observation.rs?category=x&code=y").is_within(&set("patient/Observation.rs?category=x"))
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

#[test]
fn plain_words_for_consent() {
    assert_eq!(
        set("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory")
            .describe(),
        ["Read and search your Observations (laboratory)"]
    );
    assert_eq!(
        set("user/*.cruds system/Library.r patient/*.read user/Condition.rs?code=a|1,a|2&category=x")
            .describe(),
        [
            "Create, read, update, delete and search the records you are allowed to see",
            "Read all Libraries",
            "Read and search all your records",
            "Read and search the Conditions you are allowed to see (x; code 1 or 2)",
        ]
    );
    let words = set("openid fhirUser launch/patient offline_access").describe();
    assert_eq!(words.len(), 4);
    assert!(words.iter().all(|w| !w.is_empty() && !w.contains('/')));
}

/// What a request asks for: a requested `*` asks for whatever the registration allows, the
/// types of [`EXPLICIT_ONLY`] included when the registration names them (the registration
/// decides those, see `intersection_never_turns_a_wildcard_into_the_audit_trail`).
fn as_requested(req: &ScopeSet) -> ScopeSet {
    let mut out = req.clone();
    for s in req.clinical.iter().filter(|s| s.resource.is_none()) {
        for t in EXPLICIT_ONLY {
            out.add(Scope {
                resource: Some(t.to_owned()),
                ..s.clone()
            });
        }
    }
    out
}

fn scope_strategy() -> impl Strategy<Value = String> {
    let clinical = (
        prop::sample::select(vec!["patient", "user", "system"]),
        prop::sample::select(vec!["*", "Patient", "Observation", "AuditEvent", "Condition"]),
        1u8..32,
        prop::collection::vec(
            (
                prop::sample::select(vec!["category", "code", "_tag"]),
                prop::sample::select(vec!["a", "b", "http://x|c"]),
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(ctx, rtype, perms, restrictions, v1)| {
            if v1 && restrictions.is_empty() {
                let word = ["read", "write", "*"][usize::from(perms % 3)];
                return format!("{ctx}/{rtype}.{word}");
            }
            let letters: String = LETTERS
                .iter()
                .filter(|(b, _)| perms & b != 0)
                .map(|(_, l)| *l)
                .collect();
            let query: Vec<String> = restrictions.iter().map(|(p, v)| format!("{p}={v}")).collect();
            if query.is_empty() {
                format!("{ctx}/{rtype}.{letters}")
            } else {
                format!("{ctx}/{rtype}.{letters}?{}", query.join("&"))
            }
        });
    let special = prop::sample::select(
        Special::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect::<Vec<_>>(),
    );
    prop_oneof![4 => clinical, 1 => special]
}

fn set_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(scope_strategy(), 0..6).prop_map(|v| v.join(" "))
}

const PROBE_TYPES: [&str; 4] = ["Patient", "Observation", "AuditEvent", "Encounter"];
const INTERACTIONS: [Interaction; 5] = [
    Interaction::Create,
    Interaction::Read,
    Interaction::Update,
    Interaction::Delete,
    Interaction::Search,
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5741_5244),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// parse → display → parse is the identity, and display is a fixed point.
    #[test]
    fn display_round_trips(s in set_strategy()) {
        let parsed = set(&s);
        let shown = parsed.to_string();
        prop_assert_eq!(&set(&shown), &parsed);
        prop_assert_eq!(set(&shown).to_string(), shown);
    }

    /// The intersection is within both sides and allows nothing either side does not.
    #[test]
    fn intersection_never_widens(requested in set_strategy(), registered in set_strategy()) {
        let (req, reg) = (set(&requested), set(&registered));
        let got = req.intersect(&reg);
        prop_assert!(got.is_within(&as_requested(&req)), "{} not within requested {}", got, req);
        prop_assert!(got.is_within(&reg), "{} not within registered {}", got, reg);
        for ctx in [Context::Patient, Context::User, Context::System] {
            for t in PROBE_TYPES {
                for i in INTERACTIONS {
                    let req = as_requested(&req);
                    if got.allows(ctx, t, i) {
                        prop_assert!(req.allows(ctx, t, i) && reg.allows(ctx, t, i), "{:?} {} {:?}", ctx, t, i);
                    }
                    if got.access(ctx, t, i) != Access::Denied {
                        prop_assert!(req.access(ctx, t, i) != Access::Denied);
                        prop_assert!(reg.access(ctx, t, i) != Access::Denied);
                    }
                }
            }
        }
    }
}
