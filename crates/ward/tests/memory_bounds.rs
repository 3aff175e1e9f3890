//! Memory per request stays bounded (SPEC P-4, issue 15 item 4): large resources, each within
//! `server.max_body_bytes`, asked for all at once, against `ward serve` in its own process so
//! its resident memory can be read from `/proc`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, Proc};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use ward_bench::procfs::status_kib;

on_both_backends!(
    large_resources_page_by_bytes_within_memory_bounds,
    bundle_reads_and_representations_within_memory_bounds
);

/// Resources stored, each about [`RESOURCE_BYTES`] of JSON.
const RESOURCES: usize = 40;
const RESOURCE_BYTES: usize = 1_100_000;
/// SPEC P-4: resident memory under load.
const MAX_RSS_KIB: u64 = 300 * 1024;
/// The test server's `server.response_stall_secs`.
const STALL_SECS: u64 = 3;
/// HTTP/2 connections that never open their flow-control window, and streams on each
/// (`server.http2_max_concurrent_streams`, the default).
const BLOCKED_CONNECTIONS: usize = 3;
const BLOCKED_STREAMS: usize = 32;

/// A valid Patient of about `RESOURCE_BYTES`, made of many small, unindexed elements (what
/// costs the most once parsed): extensions with a value each.
fn large_patient(tag: usize) -> Value {
    let one = json!({ "url": "urn:x:1", "valueBoolean": true });
    let n = RESOURCE_BYTES / one.to_string().len();
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:x:large", "value": format!("L{tag}") }],
        "extension": vec![one; n],
    })
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    status_kib(pid, field).unwrap_or(0) as f64 / 1024.0
}

async fn large_resources_page_by_bytes_within_memory_bounds(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
    };
    let mut w = Proc::init_with(tmp.path(), url.as_deref());
    let toml = w.dir.join("ward.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text.replacen(
        "[server]\n",
        &format!("[server]\nresponse_stall_secs = {STALL_SECS}\n"),
        1,
    );
    std::fs::write(&toml, text).unwrap();
    w.start().await;
    let pid = w.pid().unwrap();
    let t = w.token().await;
    let mut figures = vec![("fresh", rss_mib(pid, "VmRSS"))];

    let mut created = BTreeSet::new();
    for i in 0..RESOURCES {
        let body = large_patient(i).to_string();
        assert!(body.len() < 4 * 1024 * 1024, "within the default max_body_bytes");
        let resp = w.post_fhir("Patient", &t).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        let stored: Value = resp.json().await.unwrap();
        created.insert(stored["id"].as_str().unwrap().to_owned());
    }
    figures.push(("after the creates", rss_mib(pid, "VmRSS")));

    // Searches ask for everything at once; history too. Both page by bytes and say so with
    // `next`, and paging returns every resource exactly once.
    let mut largest_page = 0;
    for (round, path) in [
        ("first search", "Patient?_count=1000"),
        ("second search", "Patient?_count=1000"),
        ("history", "Patient/_history?_count=1000"),
    ] {
        let (seen, largest) = page_through(&w, &t, path).await;
        largest_page = largest_page.max(largest);
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{round}: no resource twice");
        assert_eq!(unique, created, "{round}: every resource once");
        figures.push((round, rss_mib(pid, "VmRSS")));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    figures.push(("5 s later", rss_mib(pid, "VmRSS")));

    // HTTP/2 clients that take nothing: every large page they ask for must either wait within
    // the shared budget for pending responses or be refused, and be freed after the stall
    // timeout.
    let mut held = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..BLOCKED_CONNECTIONS {
        let (sender, responses) = blocked_h2_searches(&w, &t).await;
        for r in &responses {
            match r.status().as_u16() {
                200 => served += 1,
                503 => refused += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        held.push((sender, responses));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    figures.push(("HTTP/2 streams blocked", rss_mib(pid, "VmRSS")));
    // Responses that nobody takes spend the shared budget: later ones are refused.
    assert!(served > 0 && refused > 0, "{served} served, {refused} refused");
    tokio::time::sleep(Duration::from_secs(STALL_SECS + 2)).await;
    assert_eq!(
        large_search_status(&w, &t).await,
        200,
        "stalled responses are abandoned and their bytes freed"
    );
    figures.push(("after the stall timeout", rss_mib(pid, "VmRSS")));
    drop(held);
    let peak = status_kib(pid, "VmHWM").unwrap();
    figures.push(("peak (VmHWM)", peak as f64 / 1024.0));
    eprintln!(
        "{backend:?} resident MiB: {figures:?}; largest page: {largest_page} entries; \
         blocked HTTP/2 searches: {served} served, {refused} refused"
    );
    assert!(
        largest_page < RESOURCES,
        "a page is capped by bytes, not only by _count ({largest_page} entries)"
    );
    assert!(
        peak < MAX_RSS_KIB,
        "peak resident memory {} MiB exceeds P-4's 300 MiB",
        peak / 1024
    );
    w.terminate();
}

/// Follows `next` links from `path`: the ids of every entry's resource, and the most entries
/// one page had.
async fn page_through(w: &Proc, t: &str, path: &str) -> (Vec<String>, usize) {
    let mut next = Some(format!("{}/fhir/{path}", w.url));
    let (mut seen, mut largest, mut pages) = (Vec::new(), 0, 0);
    while let Some(url) = next.take() {
        let resp = w.client.get(&url).bearer_auth(t).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let bundle: Value = resp.json().await.unwrap();
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        assert!(!entries.is_empty(), "every page makes progress");
        largest = largest.max(entries.len());
        for e in &entries {
            assert!(e["resource"]["extension"].as_array().unwrap().len() > 1000);
            seen.push(e["resource"]["id"].as_str().unwrap().to_owned());
        }
        next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        pages += 1;
        assert!(pages <= RESOURCES, "paging ends");
    }
    (seen, largest)
}

/// The status of one large search over a fresh connection, its body read in full.
async fn large_search_status(w: &Proc, t: &str) -> u16 {
    let resp = w
        .client
        .get(format!("{}/fhir/Patient?_count=1000", w.url))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await.unwrap();
    status
}

/// An HTTP/2 connection with a zero stream flow-control window, and the response heads of
/// `BLOCKED_STREAMS` large searches on it (the bodies cannot move).
async fn blocked_h2_searches(
    w: &Proc,
    t: &str,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    Vec<hyper::Response<hyper::body::Incoming>>,
) {
    let (sender, responses, _conn) = blocked_h2(w, t, "Patient?_count=1000").await;
    (sender, responses)
}

/// An HTTP/2 connection with a zero stream flow-control window, the response heads of
/// `BLOCKED_STREAMS` GETs of `path` on it (the bodies cannot move), and the connection's task
/// (finished once the server closed it). The client answers the server's pings.
async fn blocked_h2(
    w: &Proc,
    t: &str,
    path: &str,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    Vec<hyper::Response<hyper::body::Incoming>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tls = ward_bench::client::tls_config(&w.dir.join("tls/ca.pem")).unwrap();
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let authority = w.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut pending = Vec::new();
    for _ in 0..BLOCKED_STREAMS {
        let req = hyper::Request::get(format!("{}/fhir/{path}", w.url))
            .header("authorization", format!("Bearer {t}"))
            .body(String::new())
            .unwrap();
        sender.ready().await.unwrap();
        pending.push(sender.send_request(req));
    }
    let mut responses = Vec::new();
    for p in pending {
        responses.push(p.await.unwrap());
    }
    (sender, responses, conn)
}

/// Review finding 2: a response of one chunk or less (no stall timer, no budget) on an
/// HTTP/2 stream whose window stays zero. Many such streams must not hold their bodies, or
/// their connections, past the stall timeout (the request itself finished at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_responses_blocked_by_a_zero_window_are_dropped_with_their_connection() {
    const CONNECTIONS: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Proc::init(tmp.path());
    let toml = w.dir.join("ward.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text.replacen(
        "[server]\n",
        "[server]\nresponse_stall_secs = 2\nidle_timeout_secs = 2\nfirst_request_timeout_secs = 2\n\
         http2_keep_alive_secs = 2\n",
        1,
    );
    std::fs::write(&toml, text).unwrap();
    w.start().await;
    let pid = w.pid().unwrap();
    let t = w.token().await;
    // About 60 KB: under the 64 KiB chunk size, so the body is handed to hyper whole.
    let one = json!({ "url": "urn:x:1", "valueBoolean": true });
    let p =
        json!({"resourceType": "Patient", "extension": vec![one.clone(); 60_000 / one.to_string().len()]});
    let resp = w
        .post_fhir("Patient", &t)
        .body(p.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Twice: freed bodies are reused by the second round (the allocator need not give them
    // back to the system), held ones add up.
    let before = rss_mib(pid, "VmRSS");
    let mut figures = Vec::new();
    for round in 0..2 {
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            let (sender, responses, conn) = blocked_h2(&w, &t, &format!("Patient/{id}")).await;
            assert!(responses.iter().all(|r| r.status() == 200));
            held.push((sender, responses, conn));
        }
        let during = rss_mib(pid, "VmRSS");
        // stall (2 s) + the close grace (5 s) + slack
        tokio::time::sleep(Duration::from_secs(9)).await;
        let open = held.iter().filter(|(_, _, conn)| !conn.is_finished()).count();
        figures.push((during, rss_mib(pid, "VmRSS")));
        assert_eq!(
            open, 0,
            "round {round}: connections with stalled responses are closed"
        );
    }
    eprintln!(
        "resident MiB before {before:.0}; with {CONNECTIONS}x{BLOCKED_STREAMS} blocked small \
         responses, then 9 s later, per round: {figures:?}"
    );
    let [(first, _), (second, _)] = figures[..] else {
        unreachable!()
    };
    assert!(
        second - before < (first - before) * 1.5,
        "the blocked bodies are freed: before {before:.0} MiB, rounds {figures:?}"
    );
    w.terminate();
}

/// The most bytes a batch or transaction response may take: `server.max_page_bytes` (the
/// default) of resources plus the entries' own fields.
const MAX_BUNDLE_RESPONSE_BYTES: usize = 4 * 1024 * 1024 + 256 * 1024;

/// Review finding: a batch of 100 reads of one 1.1 MB Patient (an 8 KB request) built every
/// read as a parsed tree and the whole response before any cap (peak RSS 1.7 GiB, then 503);
/// transactions with reads and `Prefer: return=representation` went the same way. Now both
/// carry resources up to `server.max_page_bytes` as their stored bytes, and answer every
/// other entry without its resource: reads with a 413 entry, writes (still made) as minimal.
async fn bundle_reads_and_representations_within_memory_bounds(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
    };
    let mut w = Proc::init_with(tmp.path(), url.as_deref());
    w.start().await;
    let pid = w.pid().unwrap();
    let t = w.token().await;
    let resp = w
        .post_fhir("Patient", &t)
        .body(large_patient(0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let stored: Value = resp.json().await.unwrap();
    let id = stored["id"].as_str().unwrap().to_owned();
    let read = || json!({"request": {"method": "GET", "url": format!("Patient/{id}")}});
    let post = |i: usize| json!({"request": {"method": "POST", "url": "Patient"}, "resource": large_patient(100 + i)});
    let send = |kind: &str, entries: Vec<Value>| {
        let body = json!({"resourceType": "Bundle", "type": kind, "entry": entries}).to_string();
        assert!(body.len() < 4 * 1024 * 1024, "within the default max_body_bytes");
        w.client
            .post(format!("{}/fhir", w.url))
            .bearer_auth(&t)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=representation")
            .body(body)
            .send()
    };
    let mut figures = vec![("after the create", rss_mib(pid, "VmRSS"))];

    // A batch of 100 reads, then a transaction of 60 reads and 3 large creates asking for
    // their representations (after the reads, so the budget is spent when they come).
    for (kind, entries) in [
        ("batch", (0..100).map(|_| read()).collect::<Vec<_>>()),
        (
            "transaction",
            (0..60).map(|_| read()).chain((0..3).map(post)).collect(),
        ),
    ] {
        let count = entries.len();
        let resp = send(kind, entries).await.unwrap();
        assert_eq!(resp.status(), 200, "{kind}");
        let body = resp.bytes().await.unwrap();
        assert!(
            body.len() <= MAX_BUNDLE_RESPONSE_BYTES,
            "{kind} response of {} bytes",
            body.len()
        );
        let bundle: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(bundle["type"], format!("{kind}-response"));
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), count, "{kind}: every entry is answered");
        let (mut carried, mut withheld) = (0, 0);
        for e in entries {
            let status = e["response"]["status"].as_str().unwrap();
            match status {
                "200 OK" => {
                    assert_eq!(e["resource"]["id"], id.as_str());
                    carried += 1;
                }
                "201 Created" => {
                    // The write is made; its representation did not fit.
                    assert!(e["response"]["location"].is_string());
                    assert!(e.get("resource").is_none());
                    assert_eq!(e["response"]["outcome"]["issue"][0]["code"], "too-costly");
                }
                s => {
                    assert!(s.starts_with("413"), "{kind}: {s}");
                    assert!(e.get("resource").is_none());
                    assert_eq!(e["response"]["outcome"]["issue"][0]["code"], "too-costly");
                    withheld += 1;
                }
            }
        }
        assert!(
            carried >= 1 && withheld >= 1,
            "{kind}: {carried} carried, {withheld} withheld"
        );
        figures.push((kind, rss_mib(pid, "VmRSS")));
    }
    // The creates were made.
    let found: Value = w
        .get_fhir("Patient?identifier=urn:x:large|L101&_summary=count", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);

    let peak_kib = status_kib(pid, "VmHWM").unwrap_or(0);
    eprintln!("{backend:?}: RSS {figures:?} MiB, peak {} MiB", peak_kib / 1024);
    w.terminate();
    assert!(
        peak_kib < MAX_RSS_KIB,
        "peak RSS {} MiB (SPEC P-4: under 300 MiB)",
        peak_kib / 1024
    );
}
