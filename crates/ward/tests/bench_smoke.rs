//! The load benchmark in smoke mode (SPEC §4, issue 3): a tiny run of `ward-bench` against
//! this build's `ward` binary that checks every response. It asserts correctness, never
//! speed.

#[test]
fn benchmark_smoke_run_gets_correct_responses() {
    let opts = ward_bench::Options::smoke(env!("CARGO_BIN_EXE_ward").into());
    let report = ward_bench::run(&opts).expect("the benchmark runs");
    println!("{}", report.table());
    assert!(
        report.failures.is_empty(),
        "wrong responses: {:#?}",
        report.failures
    );
    for s in report.scenarios.iter().filter(|s| s.available) {
        assert!(s.requests > 0, "{}: no requests", s.name);
        assert_eq!(s.wrong, 0, "{}", s.name);
        assert!(s.checked > 0, "{}: nothing checked", s.name);
    }
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "baseline+audit",
            "ward read",
            "ward token secret",
            "ward token private_key_jwt",
            "ward search",
            "ward create"
        ]
    );
    assert!(report.ward.rss_idle_mib > 0.0);
    assert!(report.ward.patient_read_bytes > 0);
}
