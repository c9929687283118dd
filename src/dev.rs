//! `serve --dev`: zero setup. Secrets are generated once into a data directory
//! and reused, the database lives there too, and the built-in sandbox plays
//! Meta's Graph API with a sender registered for the dev tenant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::App;
use crate::auth::mint;
use crate::crypto::Sealer;
use crate::domain::TenantId;
use crate::http::senders::save_sender;
use crate::settings::{DEFAULT_DATABASE_URL, Settings};
use crate::whatsapp::sandbox::{SANDBOX_ACCESS_TOKEN, SANDBOX_PHONE_NUMBER_ID, SANDBOX_WABA_ID, Sandbox};

pub const DEFAULT_DATA_DIR: &str = "actiond-dev";
pub const DEV_TENANT: &str = "dev";
/// Long enough that the printed token outlives a day of trying things out.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Fills what the settings leave unset from the data directory, generating
/// the signing secret and the encryption key on first use.
pub fn prepare(mut settings: Settings, data_dir: &Path) -> Result<Settings, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("--data-dir {}: {e}", data_dir.display()))?;
    if settings.jwt_secret.is_none() && settings.jwt_jwks_url.is_none() {
        settings.jwt_secret = Some(read_or_create(&data_dir.join("jwt_secret"), random_secret)?);
    }
    if settings.encryption_key.is_none() {
        settings.encryption_key = Some(read_or_create(&data_dir.join("encryption_key"), Sealer::generate_key)?);
    }
    // The sandbox signs its webhooks with the app secret, as Meta does.
    if settings.whatsapp_app_secret.is_none() {
        settings.whatsapp_app_secret = Some(read_or_create(&data_dir.join("whatsapp_app_secret"), random_secret)?);
    }
    if settings.whatsapp_verify_token.is_none() {
        settings.whatsapp_verify_token = Some(read_or_create(&data_dir.join("whatsapp_verify_token"), random_secret)?);
    }
    // A local receiver is how one tries events out.
    settings.events_allow_local.get_or_insert(true);
    if settings.database_url == DEFAULT_DATABASE_URL {
        settings.database_url = format!("sqlite://{}", data_dir.join("actiond.db").display());
    }
    Ok(settings)
}

fn random_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn read_or_create(path: &PathBuf, generate: impl FnOnce() -> String) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => Ok(existing.trim().to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let value = generate();
            write_private(path, &value).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(value)
        }
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(value.as_bytes())
}

/// Points the sandbox's webhooks at the app, signed with its app secret.
pub fn connect_sandbox(sandbox: &Sandbox, app: &App, settings: &Settings) {
    let secret = settings.whatsapp_app_secret.as_deref().unwrap_or_default();
    sandbox.set_webhook(&format!("http://{}/v2/_whatsapp/webhook", app.address()), secret);
}

/// Registers the sandbox sender for the dev tenant unless it already is.
/// Runs against the app's own sandbox, so it needs the app serving.
pub async fn register_sandbox_sender(app_state: &crate::http::AppState) -> Result<(), String> {
    let tenant = TenantId::new(DEV_TENANT).expect("the dev tenant is not empty");
    let known = app_state.store.get_sender(&tenant, SANDBOX_PHONE_NUMBER_ID).await.map_err(|e| e.to_string())?;
    if known.is_none() {
        save_sender(app_state, &tenant, SANDBOX_PHONE_NUMBER_ID, SANDBOX_WABA_ID, SANDBOX_ACCESS_TOKEN)
            .await
            .map_err(|e| format!("could not register the sandbox sender: {e:?}"))?;
    }
    Ok(())
}

/// What `serve --dev` prints once it is ready: a token and a curl line that works.
pub fn banner(app: &App, settings: &Settings, data_dir: &Path) -> String {
    // With JWKS keys and no secret set, only the keys' issuer can sign a
    // token this server takes: none is printed, and the curl line reads one.
    let (token_text, authorization) = match settings.jwt_secret.as_deref() {
        Some(secret) => {
            let token = mint(secret, DEV_TENANT, &[], DEV_TOKEN_TTL, settings.jwt_issuer.as_deref(), settings.jwt_audience.as_deref());
            (format!("Bearer token for tenant '{DEV_TENANT}' (valid 30 days):\n{token}"), format!("'Authorization: Bearer {token}'"))
        }
        None => (
            "No token printed: ACTIOND_JWT_JWKS_URL is set and ACTIOND_JWT_SECRET is not, so tokens come from the issuer of those \
             keys; export one as TOKEN"
                .to_owned(),
            "\"Authorization: Bearer $TOKEN\"".to_owned(),
        ),
    };
    let base = format!("http://{}", app.address());
    let body = format!(
        r#"{{"name":"My Whatsapp Action","description":"Send WhatsApp when user requests messaging","type":"SEND_WHATSAPP","is_active":true,"action_timing":"during","webhook":{{"to":"12817126508","from":"{SANDBOX_PHONE_NUMBER_ID}","template_name":"call_permission_request","body_params":["{{{{customer_name}}}}"],"language_code":"en","mandatory":true}}}}"#
    );
    format!(
        "actiond is running in dev mode at {base}\n\
         data directory: {dir} (SQLite database, signing secret, encryption key)\n\
         sandbox sender: {SANDBOX_PHONE_NUMBER_ID} (templates: {base}/v2/_whatsapp/templates)\n\
         API reference:  {base}/docs\n\n\
         {token_text}\n\n\
         Create an action:\n\
         curl -s -X POST {base}/v2/_actions -H {authorization} -H 'Content-Type: application/json' -d '{body}'\n",
        dir = data_dir.display(),
    )
}
