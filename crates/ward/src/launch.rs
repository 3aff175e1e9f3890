//! `ward launch create`: an EHR launch context (SMART App Launch, issue 10). The EHR (here the
//! operator) names the user and the patient (and encounter) in context and hands the printed
//! `launch` value to the app, which passes it to the authorize endpoint: single use, short-lived
//! (`ward_auth::codes::LAUNCH_LIFETIME`), stored only as a keyed hash, bound to the user.

use anyhow::{Context, bail};
use serde::Serialize;
use ward_auth::LaunchContext;
use ward_server::Config;

pub struct NewLaunch {
    /// The user id (or username) the launch is for.
    pub user: String,
    pub patient: String,
    pub encounter: Option<String>,
    /// The one client that may use it, if given.
    pub client_id: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedLaunch {
    pub launch: String,
    pub user_id: String,
    pub patient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    pub expires_in: u64,
}

pub async fn create(config: &Config, new: NewLaunch) -> anyhow::Result<CreatedLaunch> {
    if !ward_fhir::id::is_valid_id(&new.patient) {
        bail!("--patient must be a FHIR id");
    }
    if new
        .encounter
        .as_deref()
        .is_some_and(|e| !ward_fhir::id::is_valid_id(e))
    {
        bail!("--encounter must be a FHIR id");
    }
    let store = crate::clients::open_store(config).await?;
    let user_id = resolve_user(&store, &new.user).await?;
    let ctx = LaunchContext {
        user_id: user_id.clone(),
        patient: new.patient.clone(),
        encounter: new.encounter.clone(),
        client_id: new.client_id,
    };
    let launch = ward_auth::codes::create_launch(&store, &ctx, time::OffsetDateTime::now_utc())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("storing the launch")?;
    store.close().await;
    crate::audit_cli::record_admin(config, "launch-create", Some(("Patient", &new.patient))).await?;
    Ok(CreatedLaunch {
        launch,
        user_id,
        patient: new.patient,
        encounter: new.encounter,
        expires_in: ward_auth::codes::LAUNCH_LIFETIME.as_secs(),
    })
}

/// The id of an enabled user named by id or username.
async fn resolve_user(store: &ward_store::Store, user: &str) -> anyhow::Result<String> {
    let by_id = if uuid::Uuid::parse_str(user).is_ok() {
        store.get_user(user).await?
    } else {
        None
    };
    let record = match by_id {
        Some(r) => Some(r),
        None => match ward_auth::users::normalize_username(user) {
            Ok(name) => store.get_user_by_name(&name).await?,
            Err(_) => None,
        },
    };
    match record {
        Some(r) if !r.disabled => Ok(r.user_id),
        _ => bail!("no enabled user with that id or username"),
    }
}
