//! `ward`: the single binary (SPEC §1).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ward::{audit_cli, clients, demo, init, keys_cli, launch, users};

mod malloc;
use ward_server::Config;

#[derive(Parser)]
#[command(
    name = "ward",
    version,
    about = "FHIR R4 server with HIPAA technical safeguards built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Location {
    /// Deployment directory (holds ward.toml)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Configuration file (default DIR/ward.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

impl Location {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.dir.as_deref(), self.config.as_deref())?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a deployment directory: config, local CA and certificate, keys, store, admin
    /// client and admin user
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// HOST:PORT to listen on; also sets the public URL
        #[arg(long)]
        listen: Option<String>,
        /// Store URL (default: SQLite file in DIR); postgres://... for PostgreSQL
        #[arg(long)]
        store_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve HTTPS
    Serve(Location),
    /// Init ./ward-demo if absent, load synthetic patients, serve
    Demo {
        #[arg(long, default_value = "ward-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        patients: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Manage OAuth clients
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage users (people who sign in)
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Verify, export and review the audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// EHR launch contexts for SMART apps
    Launch {
        #[command(subcommand)]
        command: LaunchCommand,
    },
    /// Manage token-signing keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum LaunchCommand {
    /// Create a single-use launch value for a user and patient (prints it once)
    Create {
        #[command(flatten)]
        at: Location,
        /// User id or username
        #[arg(long)]
        user: String,
        /// Patient id in context
        #[arg(long)]
        patient: String,
        /// Encounter id in context
        #[arg(long)]
        encounter: Option<String>,
        /// Only this client may use the launch
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new ES256 access-token signing key: new tokens use it after a restart, tokens
    /// signed with the older keys verify until they expire, the JWKS lists all
    RotateSigning {
        #[command(flatten)]
        at: Location,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk every chain and checkpoint; exit 1 and name the first bad record on damage
    Verify {
        #[command(flatten)]
        at: Location,
        /// Verify an export file offline instead of the live trail
        #[arg(long, requires = "pubkey")]
        file: Option<PathBuf>,
        /// The public key file written by `ward audit export --out`
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Write the trail as FHIR AuditEvent NDJSON with checkpoints and the public key
    Export {
        #[command(flatten)]
        at: Location,
        #[arg(long, default_value = "ndjson", value_parser = ["ndjson"])]
        format: String,
        /// Output file (default stdout); the public key is written to FILE.pub
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Accounting of disclosures: every access to one patient's data
    Disclosures {
        #[command(flatten)]
        at: Location,
        #[arg(long)]
        patient: String,
        /// Only accesses at or after this date (YYYY-MM-DD) or instant
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; prints its secret once
    Create {
        #[command(flatten)]
        at: Location,
        #[arg(long)]
        name: String,
        /// Space-separated SMART scopes, e.g. "system/Patient.rs system/Observation.cruds"
        #[arg(long)]
        scopes: String,
        /// Redirect URI for the authorization-code flow (repeatable; https, or http to loopback)
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// JWK Set file with the client's public keys (private_key_jwt; no secret is made)
        #[arg(long, conflicts_with = "jwks_url")]
        jwks: Option<PathBuf>,
        /// https URL of the client's JWK Set (private_key_jwt; no secret is made)
        #[arg(long)]
        jwks_url: Option<String>,
        /// A public client: no secret, PKCE required
        #[arg(long)]
        public: bool,
    },
    /// List clients (never their secrets)
    List {
        #[command(flatten)]
        at: Location,
    },
    /// Disable a client: its token requests and tokens stop working
    Disable {
        #[command(flatten)]
        at: Location,
        client_id: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; without --password-stdin prints a one-time password, to be changed at
    /// first sign-in
    Create {
        #[command(flatten)]
        at: Location,
        #[arg(long)]
        username: String,
        /// admin, clinician, nurse, front-desk, billing, researcher, auditor, patient, service
        #[arg(long)]
        role: String,
        /// The user's FHIR resource: Practitioner/ID, or Patient/ID for a patient
        #[arg(long)]
        fhir_user: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (never their passwords or factors)
    List {
        #[command(flatten)]
        at: Location,
    },
    /// Disable a user: sign-in and the user's sessions and tokens stop working
    Disable {
        #[command(flatten)]
        at: Location,
        username: String,
    },
    /// Remove a user's TOTP and recovery codes (lost device); the next sign-in enrolls again
    ResetMfa {
        #[command(flatten)]
        at: Location,
        username: String,
    },
}

fn main() -> ExitCode {
    init_logging();
    // No core dumps while keys and ePHI are in memory (EN-5).
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    // Panic payloads can hold data: report only where it happened.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = at, "panic");
    }));
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        malloc::reexec_tuned();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("WARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rustls warns on every handshake of a client that sends an IP address as its server name
    // (curl, OpenSSL and others do when connecting by IP): client behaviour, not news.
    if let Ok(quiet) = "rustls::msgs::handshake=error".parse() {
        filter = filter.add_directive(quiet);
    }
    // Colour codes only for a terminal: log files and collectors get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            dir,
            listen,
            store_url,
            json,
        } => {
            let out = init::init(&init::InitOptions {
                dir,
                listen,
                store_url,
            })
            .await?;
            if json {
                print_json(&out)?;
            } else {
                println!(
                    "Initialized {}\nFHIR base:           {}\nCA certificate:      {}\nadmin client_id:     {}\nadmin client_secret: {}\nadmin username:      {}\nadmin password:      {}\n\nThe secret and the password are shown only now; store them safely.\nThe admin password is for one sign-in: it must then be changed, and TOTP enrolled.",
                    out.dir,
                    out.fhir_base,
                    out.ca_cert,
                    out.admin_client_id,
                    out.admin_client_secret.as_str(),
                    out.admin_username,
                    out.admin_password.expose()
                );
            }
        }
        Command::Serve(at) => serve(at.load()?, None).await?,
        Command::Demo { dir, patients, seed } => {
            let (config, client) = demo::prepare(&demo::DemoOptions {
                dir: dir.clone(),
                patients,
                seed,
            })
            .await?;
            let text = demo::instructions(&config, &client, &dir);
            serve(config, Some(text)).await?;
        }
        Command::Keys {
            command: KeysCommand::RotateSigning { at },
        } => {
            let kid = keys_cli::rotate_signing(&at.load()?).await?;
            if at.json {
                print_json(&serde_json::json!({ "kid": kid }))?;
            } else {
                println!("new signing key kid: {kid}\nRestart the servers to sign with it.");
            }
        }
        Command::Client { command } => match command {
            ClientCommand::Create {
                at,
                name,
                scopes,
                redirect_uris,
                jwks,
                jwks_url,
                public,
            } => {
                let new = clients::NewClient {
                    name,
                    scopes,
                    redirect_uris,
                    jwks_file: jwks,
                    jwks_url,
                    public,
                };
                let created = clients::create(&at.load()?, new).await?;
                if at.json {
                    print_json(&created)?;
                } else if !created.client_secret.is_empty() {
                    let secret = &created.client_secret;
                    println!(
                        "client_id:     {}\nclient_secret: {}\nscopes:        {}\n\nThe secret is shown only now; store it safely.",
                        created.client_id,
                        secret.as_str(),
                        created.scopes
                    );
                } else {
                    println!(
                        "client_id:     {}\nauth method:   {}\nscopes:        {}",
                        created.client_id, created.token_endpoint_auth_method, created.scopes
                    );
                }
            }
            ClientCommand::List { at } => {
                let list = clients::list(&at.load()?).await?;
                if at.json {
                    print_json(&list)?;
                } else {
                    for c in list {
                        let state = if c.disabled { "disabled" } else { "active" };
                        println!(
                            "{}  {:8}  {}  {}  ({})",
                            c.client_id, state, c.name, c.scopes, c.created_at
                        );
                    }
                }
            }
            ClientCommand::Disable { at, client_id } => {
                clients::disable(&at.load()?, &client_id).await?;
                if at.json {
                    print_json(&serde_json::json!({ "client_id": client_id, "disabled": true }))?;
                } else {
                    println!("client {client_id} disabled");
                }
            }
        },
        Command::User { command } => user(command).await?,
        Command::Audit { command } => audit(command).await?,
        Command::Launch {
            command:
                LaunchCommand::Create {
                    at,
                    user,
                    patient,
                    encounter,
                    client,
                },
        } => {
            let created = launch::create(
                &at.load()?,
                launch::NewLaunch {
                    user,
                    patient,
                    encounter,
                    client_id: client,
                },
            )
            .await?;
            if at.json {
                print_json(&created)?;
            } else {
                println!(
                    "launch:     {}\nexpires in: {} s (single use)",
                    created.launch, created.expires_in
                );
            }
        }
    }
    Ok(())
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            at,
            username,
            role,
            fhir_user,
            password_stdin,
        } => {
            let config = at.load()?;
            let password = if password_stdin {
                Some(users::read_password_stdin()?)
            } else {
                None
            };
            let created = users::create(
                &config,
                users::CreateOptions {
                    username,
                    role,
                    fhir_user,
                    password,
                },
            )
            .await?;
            if at.json {
                print_json(&created)?;
            } else {
                println!(
                    "user_id:  {}\nusername: {}\nrole:     {}",
                    created.user_id, created.username, created.role
                );
                if let Some(f) = &created.fhir_user {
                    println!("fhirUser: {f}");
                }
                if let Some(p) = &created.one_time_password {
                    println!(
                        "one-time password: {}\n\nThe password is shown only now; it must be changed at first sign-in.",
                        p.expose()
                    );
                }
            }
        }
        UserCommand::List { at } => {
            let list = users::list(&at.load()?).await?;
            if at.json {
                print_json(&list)?;
            } else {
                for u in list {
                    let state = if u.disabled { "disabled" } else { "active" };
                    let mfa = if u.mfa_enrolled { "totp" } else { "no-mfa" };
                    println!(
                        "{}  {:8}  {}  {}  {}  {}  ({})",
                        u.user_id,
                        state,
                        u.username,
                        u.role,
                        u.fhir_user.as_deref().unwrap_or("-"),
                        mfa,
                        u.created_at
                    );
                }
            }
        }
        UserCommand::Disable { at, username } => {
            let user_id = users::disable(&at.load()?, &username).await?;
            if at.json {
                print_json(&serde_json::json!({ "user_id": user_id, "disabled": true }))?;
            } else {
                println!("user {user_id} disabled");
            }
        }
        UserCommand::ResetMfa { at, username } => {
            let user_id = users::reset_mfa(&at.load()?, &username).await?;
            if at.json {
                print_json(&serde_json::json!({ "user_id": user_id, "mfa_reset": true }))?;
            } else {
                println!("user {user_id}: TOTP and recovery codes removed");
            }
        }
    }
    Ok(())
}

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { at, file, pubkey } => {
            let report = match (file, pubkey) {
                (Some(f), Some(k)) => audit_cli::verify_file(&f, &k)?,
                _ => audit_cli::verify(&at.load()?).await?,
            };
            if at.json {
                print_json(&report)?;
            } else if let Some(bad) = &report.first_bad {
                println!(
                    "DAMAGED: first bad record: node {} seq {} ({})",
                    bad.node, bad.seq, bad.kind
                );
            } else {
                println!(
                    "intact: {} records in {} chain(s); {} not yet sealed by a signed checkpoint",
                    report.records,
                    report.chains.len(),
                    report.unsealed
                );
            }
            if !at.json {
                for c in report.chains.iter().filter(|c| c.unresolved_intents.count > 0) {
                    let seqs: Vec<String> = c.unresolved_intents.first.iter().map(i64::to_string).collect();
                    println!(
                        "unresolved: node {} has {} intent record(s) without a final record (seq {}{}); \
                         that node resolves them when it starts",
                        c.node,
                        c.unresolved_intents.count,
                        seqs.join(", "),
                        if c.unresolved_intents.count > seqs.len() as u64 {
                            ", ..."
                        } else {
                            ""
                        }
                    );
                }
            }
            if !report.ok {
                anyhow::bail!("the audit trail failed verification");
            }
        }
        AuditCommand::Export { at, format: _, out } => {
            let config = at.load()?;
            let n = match &out {
                Some(path) => audit_cli::export_to_file(&config, path).await?,
                None => audit_cli::export(&config, &mut std::io::stdout()).await?,
            };
            audit_cli::record_admin(&config, "audit-export", None).await?;
            eprintln!("exported {n} records");
        }
        AuditCommand::Disclosures { at, patient, since } => {
            let config = at.load()?;
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let records = audit_cli::disclosures(&config, &patient, since).await?;
            audit_cli::record_admin(&config, "audit-disclosures", Some(("Patient", &patient))).await?;
            if at.json {
                print_json(&records)?;
            } else {
                for r in records {
                    let who = r
                        .actor
                        .user_id
                        .or(r.actor.client_id)
                        .unwrap_or_else(|| "-".into());
                    let what = format!(
                        "{} {}/{}",
                        r.action,
                        r.resource_type.unwrap_or_default(),
                        r.resource_id.unwrap_or_default()
                    );
                    let why = r.purpose_of_use.unwrap_or_else(|| "-".into());
                    println!(
                        "{}  {who}  {what}  status {}  purpose {why}",
                        r.at, r.outcome.status
                    );
                }
            }
        }
    }
    Ok(())
}

fn parse_since(s: &str) -> anyhow::Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .context("--since must be YYYY-MM-DD or an RFC 3339 instant")?;
    Ok(d.midnight().assume_utc())
}

async fn serve(config: Config, banner: Option<String>) -> anyhow::Result<()> {
    let server = ward_server::start(config, None).await.context("cannot start")?;
    if let Some(text) = banner {
        println!("{text}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
