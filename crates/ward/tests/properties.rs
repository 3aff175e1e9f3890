//! Properties over generated input (SEC-7), black-box over TLS on both backends:
//! - any Patient Ward accepts reads back identically (numbers digit for digit, any Unicode
//!   text) and re-validates; anything it refuses is a 4xx, never a 5xx;
//! - any search Ward answers returns only the resources that a naive matcher written here
//!   (independent of Ward's own) says match, and for exact criteria all of them.
//!
//! Values are drawn with proptest strategies from a fixed seed, so a failure reproduces; the
//! failing input is printed in the assertion message.

mod common;

use common::{Backend, TestServer};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

on_both_backends!(
    accepted_patients_read_back_identically,
    searches_return_exactly_the_matches
);

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// A real calendar day in `years`, as a FHIR date.
fn day(years: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = String> {
    (years, 1u32..=12, 1u32..=31).prop_filter_map("a real day", |(y, m, d)| {
        let last = match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (d <= last).then(|| format!("{y:04}-{m:02}-{d:02}"))
    })
}

/// A JSON number as text: decimals with many digits, trailing zeros, negative zero fractions.
fn decimal_text() -> impl Strategy<Value = String> {
    "-?(0|[1-9][0-9]{0,17})(\\.[0-9]{1,18})?"
}

fn number(text: &str) -> Value {
    serde_json::from_str(text).expect("a JSON number")
}

fn patient() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec("\\PC{1,16}", 1..3),
        prop::collection::vec("\\PC{1,12}", 0..3),
        prop_oneof!["male", "female", "other", "unknown"],
        prop::option::of(day(1..=9999)),
        prop::option::of(any::<bool>()),
        decimal_text(),
        any::<i32>(),
    )
        .prop_map(|(families, given, gender, birth, active, dec, int)| {
            let names: Vec<Value> = families
                .iter()
                .map(|f| match given.is_empty() {
                    true => json!({ "family": f }),
                    false => json!({ "family": f, "given": given }),
                })
                .collect();
            let mut p = json!({
                "resourceType": "Patient",
                "name": names,
                "gender": gender,
                "extension": [
                    { "url": "http://example.org/fhir/decimal", "valueDecimal": number(&dec) },
                    { "url": "http://example.org/fhir/integer", "valueInteger": int },
                ],
            });
            if let Some(b) = birth {
                p["birthDate"] = json!(b);
            }
            if let Some(a) = active {
                p["active"] = json!(a);
            }
            p
        })
}

/// The resource without what the server adds (`id`, `meta`).
fn content(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    v
}

async fn accepted_patients_read_back_identically(backend: Backend) {
    let s = TestServer::start(backend).await;
    let token = s.admin_token().await;
    let mut runner = runner();
    let strategy = patient();
    let validator = ward_fhir::validate::Validator::new();
    let mut accepted = 0;
    for _ in 0..48 {
        let sent = sample(&mut runner, &strategy);
        let resp = s.post_json("Patient", &token, &sent).send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 201 || (400..500).contains(&status),
            "{status} for {sent}"
        );
        if status != 201 {
            continue;
        }
        accepted += 1;
        let created: Value = resp.json().await.unwrap();
        let id = created["id"].as_str().unwrap();
        let read: Value = s
            .get(&format!("Patient/{id}"), &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Number text is kept: compare the serialized numbers too, not only their values.
        assert_eq!(
            serde_json::to_string(&content(read.clone())["extension"]).unwrap(),
            serde_json::to_string(&sent["extension"]).unwrap(),
            "numbers changed for {sent}"
        );
        assert_eq!(content(read.clone()), sent, "read back differs");
        validator
            .validate(&read, "Patient")
            .unwrap_or_else(|e| panic!("read back fails validation: {e:?} for {sent}"));
    }
    // The generator makes mostly valid Patients: a server refusing them all proves nothing.
    assert!(
        accepted >= 40,
        "only {accepted} of 48 generated Patients were accepted"
    );
    s.stop().await;
}

/// A small population whose values collide often, so searches have several matches.
fn population_member() -> impl Strategy<Value = (String, String, String)> {
    ("[AB][ab]{0,3}", prop_oneof!["male", "female"], day(1990..=1991))
}

/// A naive matcher for one search.
type Matcher = Box<dyn Fn(&Value) -> bool>;

fn birth_date(p: &Value) -> &str {
    p["birthDate"].as_str().unwrap_or("")
}

fn search_case(
    kind: u8,
    family: String,
    gender: &'static str,
    prefix: &'static str,
    date: String,
) -> (Vec<(String, String)>, Matcher) {
    match kind % 4 {
        0 => {
            let v = family.to_lowercase();
            let m: Matcher = Box::new(move |p: &Value| {
                p["name"].as_array().into_iter().flatten().any(|n| {
                    n["family"]
                        .as_str()
                        .is_some_and(|f| f.to_lowercase().starts_with(&v))
                })
            });
            (vec![("family".into(), family)], m)
        }
        1 => {
            let m: Matcher = Box::new(move |p: &Value| p["gender"] == gender);
            (vec![("gender".into(), gender.into())], m)
        }
        2 => {
            let d = date.clone();
            let m: Matcher = Box::new(move |p: &Value| {
                let b = birth_date(p);
                match prefix {
                    "eq" => b == d,
                    "ne" => b != d,
                    "lt" => b < d.as_str(),
                    "gt" => b > d.as_str(),
                    "le" => b <= d.as_str(),
                    _ => b >= d.as_str(),
                }
            });
            (vec![("birthdate".into(), format!("{prefix}{date}"))], m)
        }
        _ => {
            let d = date.clone();
            let m: Matcher = Box::new(move |p: &Value| p["gender"] == gender && birth_date(p) >= d.as_str());
            (
                vec![
                    ("gender".into(), gender.into()),
                    ("birthdate".into(), format!("ge{date}")),
                ],
                m,
            )
        }
    }
}

async fn searches_return_exactly_the_matches(backend: Backend) {
    let s = TestServer::start(backend).await;
    let token = s.admin_token().await;
    let mut runner = runner();
    let member = population_member();
    let mut created: Vec<Value> = Vec::new();
    for _ in 0..40 {
        let (family, gender, birth) = sample(&mut runner, &member);
        let p = json!({
            "resourceType": "Patient",
            "name": [{ "family": family }],
            "gender": gender,
            "birthDate": birth,
        });
        created.push(s.create(&token, &p).await);
    }
    let case = (
        any::<u8>(),
        "[AB][ab]{0,2}",
        prop_oneof![Just("male"), Just("female")],
        prop_oneof![
            Just("eq"),
            Just("ne"),
            Just("lt"),
            Just("gt"),
            Just("le"),
            Just("ge")
        ],
        day(1990..=1991),
    );
    for _ in 0..40 {
        let (kind, family, gender, prefix, date) = sample(&mut runner, &case);
        let (mut form, matches) = search_case(kind, family, gender, prefix, date);
        form.push(("_count".into(), "1000".into()));
        let resp = s
            .client
            .post(format!("{}/Patient/_search", s.fhir))
            .bearer_auth(&token)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "search {form:?}");
        let bundle: Value = resp.json().await.unwrap();
        assert!(
            bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["relation"] != "next"),
            "40 resources fit one page"
        );
        let mut got: Vec<String> = Vec::new();
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            assert!(matches(r), "search {form:?} returned a non-match: {r}");
            got.push(r["id"].as_str().unwrap().to_owned());
        }
        let mut want: Vec<String> = created
            .iter()
            .filter(|p| matches(p))
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "search {form:?} missed matches");
        if let Some(total) = bundle["total"].as_u64() {
            assert_eq!(total as usize, got.len(), "total of {form:?}");
        }
    }
    s.stop().await;
}
