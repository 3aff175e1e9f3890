//! FHIR R4 rules beyond the JSON schema are enforced on write, over real TLS on both backends:
//! out-of-range or non-whole integers, impossible dates, narrative XSS (txt-1/txt-2), ext-1,
//! two types of one choice element, dom-3/dom-4, modifier extensions. Each is refused with a
//! 400 OperationOutcome naming the rule (never quoting the value), and nothing is stored.
//! Bodies are sent as raw text so that numbers such as `1e999` reach Ward verbatim.

mod common;

use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(invalid_fhir_is_refused_and_nothing_stored);

const DIV_START: &str = r#"<div xmlns=\"http://www.w3.org/1999/xhtml\">"#;

/// A Patient body with `extra` members added (raw JSON text).
fn patient_with(extra: &str) -> String {
    format!(r#"{{"resourceType":"Patient","name":[{{"family":"Rulebreaker","given":["Zed"]}}],{extra}}}"#)
}

fn bad_bodies() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "integer above 2^31-1",
            patient_with(r#""multipleBirthInteger":2147483648"#),
            "FHIR integer",
        ),
        (
            "integer exponent",
            patient_with(r#""multipleBirthInteger":1e999"#),
            "FHIR integer",
        ),
        (
            "integer with fraction",
            patient_with(r#""multipleBirthInteger":1.0"#),
            "FHIR integer",
        ),
        (
            "integer minus zero",
            patient_with(r#""multipleBirthInteger":-0"#),
            "FHIR integer",
        ),
        (
            "impossible date",
            patient_with(r#""birthDate":"2020-02-30""#),
            "no such day",
        ),
        (
            "impossible dateTime",
            patient_with(r#""deceasedDateTime":"2021-02-29T10:00:00Z""#),
            "no such day",
        ),
        (
            "script in narrative",
            patient_with(&format!(
                r#""text":{{"status":"generated","div":"{DIV_START}<script>alert(document.cookie)</script></div>"}}"#
            )),
            "txt-1",
        ),
        (
            "event handler in narrative",
            patient_with(&format!(
                r#""text":{{"status":"generated","div":"{DIV_START}<img src=\"x\" onerror=\"alert(1)\"/></div>"}}"#
            )),
            "txt-1",
        ),
        (
            "javascript URL in narrative",
            patient_with(&format!(
                r#""text":{{"status":"generated","div":"{DIV_START}<a href=\"javascript:alert(1)\">x</a></div>"}}"#
            )),
            "txt-1",
        ),
        (
            "narrative that is not XHTML",
            patient_with(r#""text":{"status":"generated","div":"<b>hello"}"#),
            "txt-1",
        ),
        (
            "extension without value",
            patient_with(r#""extension":[{"url":"urn:x"}]"#),
            "ext-1",
        ),
        (
            "two types of one choice element",
            patient_with(r#""deceasedBoolean":true,"deceasedDateTime":"2020-01-01""#),
            "choice element",
        ),
        (
            "contained resource without id",
            patient_with(r#""contained":[{"resourceType":"Organization","name":"Acme"}]"#),
            "dom-3",
        ),
        (
            "contained resource with versionId",
            patient_with(
                r##""contained":[{"resourceType":"Organization","id":"o","meta":{"versionId":"7"},"name":"Acme"}],"managingOrganization":{"reference":"#o"}"##,
            ),
            "dom-4",
        ),
        (
            "modifier extension",
            patient_with(r#""modifierExtension":[{"url":"urn:x","valueBoolean":true}]"#),
            "modifier extensions",
        ),
    ]
}

async fn send(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: String,
) -> (u16, Value) {
    let resp = s
        .client
        .request(method, format!("{}/{path}", s.fhir))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn assert_refused(label: &str, status: u16, outcome: &Value, needle: &str) {
    assert_eq!(status, 400, "{label}: {outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{label}");
    assert_eq!(outcome["issue"][0]["severity"], "error", "{label}");
    let text = outcome.to_string();
    assert!(text.contains(needle), "{label}: {text}");
    for secret in ["Rulebreaker", "alert", "1e999", "2020-02-30", "Acme"] {
        assert!(
            !text.contains(secret),
            "{label}: the outcome quotes input: {text}"
        );
    }
}

async fn invalid_fhir_is_refused_and_nothing_stored(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;

    for (label, body, needle) in bad_bodies() {
        let (status, oo) = send(&s, reqwest::Method::POST, "Patient", &t, body.clone()).await;
        assert_refused(label, status, &oo, needle);
        // Update-as-create takes the same path.
        let with_id = body.replacen(
            r#""resourceType":"Patient","#,
            r#""resourceType":"Patient","id":"rule-x","#,
            1,
        );
        let (status, oo) = send(&s, reqwest::Method::PUT, "Patient/rule-x", &t, with_id).await;
        assert_refused(label, status, &oo, needle);
    }

    // Inside a transaction, one bad entry refuses the whole Bundle.
    let good = patient_with(r#""birthDate":"2024-02-29""#);
    let bad = patient_with(r#""birthDate":"2023-02-29""#);
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[
            {{"fullUrl":"urn:uuid:0b3c1f7e-4a55-4d8e-9d2a-1a2b3c4d5e6f","resource":{good},"request":{{"method":"POST","url":"Patient"}}}},
            {{"fullUrl":"urn:uuid:6d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6","resource":{bad},"request":{{"method":"POST","url":"Patient"}}}}]}}"#
    );
    let resp = s
        .client
        .post(&s.fhir)
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .body(bundle)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let oo: Value = resp.json().await.unwrap();
    assert_refused("transaction", status, &oo, "no such day");
    assert!(
        oo.to_string().contains("Bundle.entry[1].resource.birthDate"),
        "{oo}"
    );

    // Nothing was stored: the type history of the fresh server is empty.
    let history: Value = s
        .get("Patient/_history?_count=1000", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = history["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(stored, 0, "stored: {history}");

    // Control: valid variants of the same rules are stored and read back as sent.
    let narrative = format!(
        r#"{DIV_START}<table><tr><td>Name</td><td>Zed <b>Rulebreaker</b> &amp; co</td></tr></table><p><a href=\"https://example.org/a\">link</a></p></div>"#
    );
    let good = patient_with(&format!(
        r##""text":{{"status":"generated","div":"{narrative}"}},"birthDate":"2024-02-29","multipleBirthInteger":2147483647,"contained":[{{"resourceType":"Organization","id":"o","name":"Acme"}}],"managingOrganization":{{"reference":"#o"}},"extension":[{{"url":"urn:x","valueDecimal":0.000000000000000000001}}]"##
    ));
    let (status, created) = send(&s, reqwest::Method::POST, "Patient", &t, good).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["multipleBirthInteger"], json!(2147483647));
    assert!(
        created["text"]["div"]
            .as_str()
            .unwrap()
            .contains("<b>Rulebreaker</b>")
    );
    let id = created["id"].as_str().unwrap();
    let resp = s.get(&format!("Patient/{id}"), &t).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("\"valueDecimal\":0.000000000000000000001"),
        "{text}"
    );

    s.stop().await;
}
