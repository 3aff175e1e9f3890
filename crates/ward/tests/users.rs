//! `ward user ...` and the admin user of `ward init`, through the real binary (SPEC AC-1,
//! AC-5): JSON output, validation, audit records, and no password, TOTP secret or recovery
//! code in the database files, the audit trail or the logs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Backend, store_dump_at};
use serde_json::Value;
use time::OffsetDateTime;
use ward_audit::{AuditQuery, AuditStore};
use ward_auth::users;
use ward_server::Config;

on_both_backends!(users_from_the_command_line);

struct Deploy {
    dir: PathBuf,
    /// stderr of every command run, for the log scan.
    logs: Vec<u8>,
}

impl Deploy {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
        cmd.args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("WARD_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        self.logs.extend_from_slice(&out.stderr);
        out
    }

    fn ok_json(&mut self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed on failure");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn config(&self) -> Config {
        Config::load(Some(&self.dir), None).unwrap()
    }

    fn list(&mut self) -> Vec<Value> {
        self.ok_json(&["user", "list", "--json"], None)
            .as_array()
            .unwrap()
            .clone()
    }
}

fn init(tmp: &Path, store_url: Option<&str>) -> (Deploy, Value) {
    let dir = tmp.join("deploy");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
    cmd.args(["init", "--json", "--dir"])
        .arg(&dir)
        .env("WARD_LOG", "debug");
    if let Some(url) = store_url {
        cmd.args(["--store-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deploy = Deploy {
        dir,
        logs: out.stderr,
    };
    (deploy, v)
}

const STDIN_PASSWORD: &str = "Plum-Heron-Quarry-42";

async fn users_from_the_command_line(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
    };
    let (mut d, out) = init(tmp.path(), url.as_deref());
    let now = OffsetDateTime::now_utc();

    // init: the admin user, its one-time password shown once.
    assert_eq!(out["admin_username"], "admin");
    let admin_password = out["admin_password"].as_str().unwrap().to_owned();
    assert_eq!(admin_password.len(), 20);
    let list = d.list();
    assert_eq!(list.len(), 1);
    let admin = &list[0];
    assert_eq!(
        (
            &admin["username"],
            &admin["role"],
            &admin["must_change_password"],
            &admin["mfa_enrolled"]
        ),
        (
            &Value::from("admin"),
            &Value::from("admin"),
            &Value::from(true),
            &Value::from(false)
        )
    );
    let admin_id = admin["user_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&admin_id).unwrap().get_version_num(), 4);

    let store = ward::clients::open_store(&d.config()).await.unwrap();
    let who = users::login_password(&store, "admin", &admin_password, now)
        .await
        .unwrap();
    assert!(who.must_change_password && who.mfa_required && !who.mfa_enrolled);
    assert_eq!(who.user_id, admin_id);

    // create with a generated one-time password
    let nora = d.ok_json(
        &[
            "user",
            "create",
            "--username",
            "Nora",
            "--role",
            "nurse",
            "--fhir-user",
            "Practitioner/n-1",
            "--json",
        ],
        None,
    );
    assert_eq!(nora["username"], "nora");
    assert_eq!(nora["role"], "nurse");
    assert_eq!(nora["fhir_user"], "Practitioner/n-1");
    assert_eq!(nora["must_change_password"], true);
    let nora_password = nora["one_time_password"].as_str().unwrap().to_owned();
    let nora_id = nora["user_id"].as_str().unwrap().to_owned();
    assert!(
        users::login_password(&store, "nora", &nora_password, now)
            .await
            .unwrap()
            .must_change_password
    );

    // create with --password-stdin: nothing secret printed, the password works
    let pat = d.ok_json(
        &[
            "user",
            "create",
            "--username",
            "pat",
            "--role",
            "patient",
            "--fhir-user",
            "Patient/p1",
            "--password-stdin",
            "--json",
        ],
        Some(&format!("{STDIN_PASSWORD}\n")),
    );
    assert!(pat.get("one_time_password").is_none());
    assert_eq!(pat["must_change_password"], false);
    let pat_id = pat["user_id"].as_str().unwrap().to_owned();
    let who = users::login_password(&store, "pat", STDIN_PASSWORD, now)
        .await
        .unwrap();
    assert_eq!(who.fhir_user.as_deref(), Some("Patient/p1"));

    // text output also shows the one-time password once
    let out = d.run(
        &["user", "create", "--username", "fd1", "--role", "front-desk"],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("one-time password: ") && text.contains("front-desk"),
        "{text}"
    );

    // validation: roles, links, passwords, duplicates; errors never echo the password
    let create = |name: &str, role: &str, link: Option<&str>| {
        let mut a = vec!["user", "create", "--username", name, "--role", role]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if let Some(l) = link {
            a.extend(["--fhir-user".to_owned(), l.to_owned()]);
        }
        a
    };
    let cases: &[(Vec<String>, &str)] = &[
        (create("x1", "doctor", None), "unknown role"),
        (create("x1", "Admin", None), "unknown role"),
        (
            create("x1", "clinician", Some("Organization/1")),
            "Practitioner/ID or Patient/ID",
        ),
        (
            create("x1", "clinician", Some("Practitioner/")),
            "Practitioner/ID or Patient/ID",
        ),
        (
            create("x1", "clinician", Some("Practitioner/a b")),
            "Practitioner/ID or Patient/ID",
        ),
        (create("x1", "clinician", Some("Patient/1")), "patient user"),
        (create("x1", "patient", None), "patient user"),
        (create("x1", "patient", Some("Practitioner/1")), "patient user"),
        (create("bad name", "nurse", None), "usernames are"),
        (create("NORA", "nurse", None), "exists"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = d.fails(&args, None);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    for (pw, want) in [
        ("short pw", "at least 12"),
        ("qwertyuiop123", "most common"),
        ("", "no password"),
    ] {
        let err = d.fails(
            &[
                "user",
                "create",
                "--username",
                "x2",
                "--role",
                "nurse",
                "--password-stdin",
            ],
            Some(&format!("{pw}\n")),
        );
        assert!(err.contains(want), "{pw}: {err}");
        assert!(
            pw.is_empty() || !err.contains(pw),
            "the error echoes the password"
        );
    }
    let names: Vec<String> = d
        .list()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "fd1", "nora", "pat"]);

    // reset-mfa: enroll nora's TOTP, then remove it
    let e = users::start_totp_enrollment(&store, &nora_id).await.unwrap();
    let secret = data_encoding::BASE32_NOPAD
        .decode(e.secret_base32.expose().as_bytes())
        .unwrap();
    let code = ward_auth::totp::code(&secret, ward_auth::totp::step_at(now)).unwrap();
    let recovery = users::finish_totp_enrollment(&store, &nora_id, code.expose(), now)
        .await
        .unwrap();
    let enrolled = |list: &[Value], name: &str| {
        list.iter().find(|u| u["username"] == name).unwrap()["mfa_enrolled"].clone()
    };
    assert_eq!(enrolled(&d.list(), "nora"), true);
    let r = d.ok_json(&["user", "reset-mfa", "NORA", "--json"], None);
    assert_eq!(r["user_id"], nora_id.as_str());
    assert_eq!(enrolled(&d.list(), "nora"), false);
    assert!(
        users::verify_second_factor(&store, &nora_id, recovery[0].expose(), now)
            .await
            .is_err()
    );
    assert!(
        d.fails(&["user", "reset-mfa", "nobody"], None)
            .contains("no such user")
    );

    // disable: listed as disabled, sign-in refused even with the right password
    let r = d.ok_json(&["user", "disable", "pat", "--json"], None);
    assert_eq!(
        (&r["user_id"], &r["disabled"]),
        (&Value::from(pat_id.as_str()), &Value::from(true))
    );
    let list = d.list();
    let p = list.iter().find(|u| u["username"] == "pat").unwrap();
    assert_eq!(p["disabled"], true);
    assert!(matches!(
        users::login_password(&store, "pat", STDIN_PASSWORD, now).await,
        Err(ward_auth::LoginError::Refused)
    ));
    assert!(users::get_user(&store, &pat_id).await.unwrap().is_none());
    assert!(
        d.fails(&["user", "disable", "nobody"], None)
            .contains("no such user")
    );
    // A user id is never reused: a new "pat" is someone else.
    let pat2 = d.ok_json(
        &[
            "user",
            "create",
            "--username",
            "pat2",
            "--role",
            "patient",
            "--fhir-user",
            "Patient/p1",
            "--json",
        ],
        None,
    );
    assert_ne!(pat2["user_id"], pat_id.as_str());

    // --config works like --dir
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["user", "list", "--json", "--config"])
        .arg(d.dir.join("ward.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // the admin audit trail names each change by user id
    let config = d.config();
    let audit = AuditStore::open(&config.audit_url()).await.unwrap();
    let records = ward_audit::search(
        &audit,
        &AuditQuery {
            count: 10_000,
            ..AuditQuery::default()
        },
    )
    .await
    .unwrap();
    let has = |action: &str, id: &str| {
        records.iter().any(|(r, _)| {
            r.action == action
                && r.resource_type.as_deref() == Some("User")
                && r.resource_id.as_deref() == Some(id)
        })
    };
    assert!(has("user-create", &admin_id), "init's admin user");
    assert!(has("user-create", &nora_id));
    assert!(has("user-create", &pat_id));
    assert!(has("user-reset-mfa", &nora_id));
    assert!(has("user-disable", &pat_id));
    let verify = d.run(&["audit", "verify"], None);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    store.close().await;

    // No password, TOTP secret or recovery code in plaintext: database, audit trail, logs.
    let (db, _) = store_dump_at(backend, &d.dir, &config).await;
    let export = d.run(&["audit", "export"], None).stdout;
    assert!(String::from_utf8_lossy(&db).contains("$argon2id$v=19$m=19456,t=2,p=1$"));
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("admin password", admin_password.clone().into_bytes()),
        ("one-time password", nora_password.clone().into_bytes()),
        ("stdin password", STDIN_PASSWORD.as_bytes().to_vec()),
        (
            "TOTP secret (base32)",
            e.secret_base32.expose().as_bytes().to_vec(),
        ),
        ("TOTP secret (bytes)", secret.clone()),
        ("TOTP secret (hex)", hex_of(&secret).into_bytes()),
        ("recovery code", recovery[0].expose().as_bytes().to_vec()),
        (
            "recovery code (bare)",
            recovery[0].expose().replace('-', "").into_bytes(),
        ),
    ];
    for (what, needle) in &secrets {
        for (place, hay) in [("database", &db), ("audit export", &export), ("logs", &d.logs)] {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in the {place}"
            );
        }
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
