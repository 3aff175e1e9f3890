//! What one search may cost (issue 15 item 3, issue 9 item 4), on SQLite and PostgreSQL: a
//! search at the configurable ceilings of parameters and values runs; `total` is counted up to
//! a cap and omitted beyond; a post-filtered page decrypts a bounded number of candidates.

use serde_json::json;
use ward_crypto::Kek;
use ward_fhir::search::query::ParseOptions;
use ward_fhir::search::{SearchQuery, TotalMode};
use ward_store::Store;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ward.db").display());
    (Store::open(&url, &Kek::generate().unwrap()).await.unwrap(), dir)
}

async fn postgres() -> Store {
    let url = ward_store::testing::fresh_postgres_url().await;
    Store::open(&url, &Kek::generate().unwrap()).await.unwrap()
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (s, _dir) = super::sqlite().await;
                super::$name(&s).await;
                s.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let s = super::postgres().await;
                super::$name(&s).await;
                s.close().await;
            }
        })*
    };
}

both!(
    searches_at_the_ceilings_run,
    total_is_counted_up_to_the_cap,
    post_filtered_pages_have_a_budget
);

fn parse(rtype: &str, pairs: &[(String, String)], opts: &ParseOptions) -> SearchQuery {
    SearchQuery::parse(rtype, pairs, opts).unwrap()
}

/// The heaviest values (quantities with system and code: four bound values each, one `EXISTS`
/// per parameter) at the highest configurable bounds, with the most sort keys and a cursor.
async fn searches_at_the_ceilings_run(s: &Store) {
    let obs = s
        .create(
            "Observation",
            json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
                "effectiveDateTime": "2020-01-01T10:00:00Z",
                "valueQuantity": { "value": 72, "system": "http://unitsofmeasure.org", "code": "/min" }
            }),
        )
        .await
        .unwrap();
    let opts = ParseOptions {
        max_params: ParseOptions::CEILING_PARAMS,
        max_values: ParseOptions::CEILING_VALUES,
        ..ParseOptions::default()
    };
    let per_param = ParseOptions::CEILING_VALUES / ParseOptions::CEILING_PARAMS;
    let value = (0..per_param)
        .map(|i| format!("ge{}|http://unitsofmeasure.org|/min", 60 + i))
        .collect::<Vec<_>>()
        .join(",");
    let pairs: Vec<(String, String)> = (0..ParseOptions::CEILING_PARAMS)
        .map(|_| ("value-quantity".to_owned(), value.clone()))
        .collect();
    let q = parse("Observation", &pairs, &opts);
    assert_eq!(
        q.criteria.iter().map(|c| c.values.len()).sum::<usize>(),
        ParseOptions::CEILING_VALUES
    );
    let t0 = std::time::Instant::now();
    let page = s
        .search(&q, usize::MAX)
        .await
        .expect("a search at the ceilings runs");
    assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());
    assert_eq!(page.matches.len(), 1);
    assert_eq!(page.total, Some(1));

    // One comma list of every value the ceiling allows, on one parameter.
    let long = (0..ParseOptions::CEILING_VALUES)
        .map(|i| format!("http://loinc.org|code-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let q = parse("Observation", &[("code".into(), long)], &opts);
    let t0 = std::time::Instant::now();
    assert!(s.search(&q, usize::MAX).await.unwrap().matches.is_empty());
    assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());

    // The most sort keys, through a cursor (the keyset grows with their square).
    for _ in 0..2 {
        s.create(
            "Observation",
            json!({"resourceType": "Observation", "status": "final",
            "code": { "text": "x" }, "effectiveDateTime": "2020-01-01T10:00:00Z"}),
        )
        .await
        .unwrap();
    }
    let sort = "date,-date,_lastUpdated,-_lastUpdated,date,-date,_lastUpdated,_id";
    let pairs = vec![
        ("_sort".to_owned(), sort.to_owned()),
        ("_count".into(), "1".into()),
    ];
    let mut q = parse("Observation", &pairs, &opts);
    let first = s.search(&q, usize::MAX).await.unwrap();
    q.cursor = first.next.clone();
    assert!(q.cursor.is_some());
    assert_eq!(s.search(&q, usize::MAX).await.unwrap().matches.len(), 1);
    let _ = obs;
}

async fn total_is_counted_up_to_the_cap(s: &Store) {
    for day in 1..=5 {
        s.create(
            "Patient",
            json!({"resourceType": "Patient", "gender": "female", "birthDate": format!("1980-03-0{day}")}),
        )
        .await
        .unwrap();
    }
    let with_cap = |cap: usize, pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let q = parse(
            "Patient",
            &pairs,
            &ParseOptions {
                max_total: cap,
                ..ParseOptions::default()
            },
        );
        assert_eq!(q.total, TotalMode::Accurate, "accurate is the default");
        q
    };
    // Counted in SQL: up to the cap.
    assert_eq!(
        s.search(&with_cap(5, &[("gender", "female")]), usize::MAX)
            .await
            .unwrap()
            .total,
        Some(5)
    );
    assert_eq!(
        s.search(&with_cap(4, &[("gender", "female")]), usize::MAX)
            .await
            .unwrap()
            .total,
        None
    );
    // Confirmed on decrypted candidates (birth dates are indexed by year only).
    let by_date = [("birthdate", "le1980-03-02")];
    assert_eq!(
        s.search(&with_cap(5, &by_date), usize::MAX).await.unwrap().total,
        Some(2)
    );
    let capped = s.search(&with_cap(4, &by_date), usize::MAX).await.unwrap();
    assert_eq!(capped.total, None, "5 candidates: more than the cap of 4");
    assert_eq!(capped.matches.len(), 2, "the page itself is complete");
    // `_summary=count` (count 0) likewise.
    let mut q = with_cap(4, &[("gender", "female")]);
    q.count = 0;
    let page = s.search(&q, usize::MAX).await.unwrap();
    assert_eq!((page.total, page.matches.len()), (None, 0));
}

/// Six candidates of the year, one match: with a budget of two candidates per page, the match
/// is found by following the cursors of pages that stop early (three pages at least), never by
/// decrypting every candidate in one request.
async fn post_filtered_pages_have_a_budget(s: &Store) {
    let wanted = s
        .create(
            "Patient",
            json!({"resourceType": "Patient", "birthDate": "1990-12-31"}),
        )
        .await
        .unwrap()
        .id;
    for day in 1..=5 {
        s.create(
            "Patient",
            json!({"resourceType": "Patient", "birthDate": format!("1990-01-0{day}")}),
        )
        .await
        .unwrap();
    }
    let pairs = vec![
        ("birthdate".to_owned(), "1990-12-31".to_owned()),
        ("_count".to_owned(), "1".to_owned()),
    ];
    let mut q = parse(
        "Patient",
        &pairs,
        &ParseOptions {
            max_total: 2,
            ..ParseOptions::default()
        },
    );
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.search(&q, usize::MAX).await.unwrap();
        pages += 1;
        assert!(page.total.is_none(), "six candidates exceed the cap of two");
        found.extend(page.matches.into_iter().map(|m| m.id));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(found, vec![wanted]);
    assert!(
        pages >= 3,
        "each page examined at most two candidates ({pages} pages)"
    );
}
