//! Settings, layered: defaults, then an optional TOML file, then `ACTIOND_*`
//! environment variables. The file takes the same keys, with or without the
//! `ACTIOND_` prefix and in any case (`jwt_secret` or `ACTIOND_JWT_SECRET`).
//! Every value is read as text and parsed by the setting it sets, so a string
//! setting is taken verbatim however numeric it looks, and an error names the
//! setting, never its value (a database URL or a secret must not reach a log).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://actiond.db";
pub const JWT_SECRET_MIN_BYTES: usize = 32;

#[derive(Clone)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    pub jwt_secret: Option<String>,
    pub jwt_jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub encryption_key: Option<String>,
    pub whatsapp_graph_url: String,
    pub whatsapp_api_version: String,
    pub whatsapp_app_secret: Option<String>,
    pub whatsapp_verify_token: Option<String>,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub delivery_max_attempts: u32,
    pub delivery_backoff_ms: u64,
    /// How long a send with an unknown outcome waits for Meta's status before it is sent again.
    pub delivery_reconcile_ms: u64,
    /// How long a claimed job belongs to one replica without a heartbeat.
    pub delivery_lease_ms: u64,
    pub sender_mps: u32,
    /// PostgreSQL connections per replica.
    pub database_max_connections: u32,
    /// After SIGTERM, the most time given to requests and sends in flight.
    pub shutdown_grace_ms: u64,
    /// Open `?wait` requests one tenant may hold on one replica.
    pub max_waits_per_tenant: u32,
    /// Settled executions, and events to voice platforms delivered or given
    /// up on, older than this are deleted (Meta's event keys go after 8 days).
    pub retention_days: u32,
    /// Event endpoints may be `http://` and local; unset means no, but under `--dev`.
    pub events_allow_local: Option<bool>,
    /// Multiplies the event retry schedule.
    pub events_retry_scale: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: DEFAULT_DATABASE_URL.into(),
            jwt_secret: None,
            jwt_jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            encryption_key: None,
            whatsapp_graph_url: "https://graph.facebook.com".into(),
            whatsapp_api_version: "v23.0".into(),
            whatsapp_app_secret: None,
            whatsapp_verify_token: None,
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            delivery_max_attempts: 8,
            delivery_backoff_ms: 1000,
            delivery_reconcile_ms: 15_000,
            delivery_lease_ms: 15_000,
            sender_mps: 80,
            database_max_connections: 16,
            shutdown_grace_ms: 10_000,
            max_waits_per_tenant: 200,
            retention_days: 30,
            events_allow_local: None,
            events_retry_scale: 1.0,
        }
    }
}

/// The environment variable that sets a settings key, for error messages.
pub fn variable(key: &str) -> String {
    format!("ACTIOND_{}", key.to_ascii_uppercase())
}

impl fmt::Debug for Settings {
    /// Secrets show only whether they are set; a database URL, without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |value: &Option<String>| if value.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &crate::store::redacted(&self.database_url))
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("jwt_jwks_url", &self.jwt_jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("encryption_key", &secret(&self.encryption_key))
            .field("whatsapp_graph_url", &self.whatsapp_graph_url)
            .field("whatsapp_api_version", &self.whatsapp_api_version)
            .field("whatsapp_app_secret", &secret(&self.whatsapp_app_secret))
            .field("whatsapp_verify_token", &secret(&self.whatsapp_verify_token))
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("delivery_max_attempts", &self.delivery_max_attempts)
            .field("delivery_backoff_ms", &self.delivery_backoff_ms)
            .field("delivery_reconcile_ms", &self.delivery_reconcile_ms)
            .field("delivery_lease_ms", &self.delivery_lease_ms)
            .field("sender_mps", &self.sender_mps)
            .field("database_max_connections", &self.database_max_connections)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("max_waits_per_tenant", &self.max_waits_per_tenant)
            .field("retention_days", &self.retention_days)
            .field("events_allow_local", &self.events_allow_local)
            .field("events_retry_scale", &self.events_retry_scale)
            .finish()
    }
}

/// A text setting's value, taken as written. From TOML only a string: a bare
/// `1_000` reads as the number 1000, not as the text written.
fn text(key: &str, value: &str, quoted: bool) -> Result<String, String> {
    if quoted { Ok(value.to_owned()) } else { Err(format!("{}: is text; in --config, write it as a quoted string", variable(key))) }
}

/// An optional setting: empty (`ACTIOND_JWT_SECRET=`) means "not set".
fn optional(value: &str) -> Option<String> {
    Some(value.to_owned()).filter(|value| !value.trim().is_empty())
}

fn number<T: Whole>(key: &str, value: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| format!("{}: must be a whole number from {} to {}", variable(key), T::MIN, T::MAX))
}

/// The unsigned types numeric settings are read into, with their bounds.
trait Whole: FromStr + std::fmt::Display {
    const MIN: Self;
    const MAX: Self;
}

macro_rules! whole {
    ($($kind:ty),*) => {$(
        impl Whole for $kind {
            const MIN: Self = <$kind>::MIN;
            const MAX: Self = <$kind>::MAX;
        }
    )*};
}

whole!(u16, u32, u64, usize);

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{}: must be true or false", variable(key))),
    }
}

fn positive(key: &str, value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("{}: must be a number above 0", variable(key)))
}

impl Settings {
    pub fn load(config_file: Option<&Path>) -> Result<Self, String> {
        let mut settings = Settings::default();
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                // Only the parser's message and the line: its full text quotes
                // the line, which may hold a secret.
                let line = e.span().map(|span| text.bytes().take(span.start).filter(|&byte| byte == b'\n').count() + 1).unwrap_or(1);
                format!("--config {}: line {line}: {}", path.display(), e.message().trim_end())
            })?;
            for (key, value) in table {
                let key = key.to_ascii_lowercase();
                let key = key.strip_prefix("actiond_").unwrap_or(&key);
                let (value, quoted) = match value {
                    toml::Value::String(text) => (text, true),
                    toml::Value::Integer(number) => (number.to_string(), false),
                    toml::Value::Float(number) => (number.to_string(), false),
                    toml::Value::Boolean(flag) => (flag.to_string(), false),
                    _ => return Err(format!("--config {}: {} must be a string, a number or a boolean", path.display(), variable(key))),
                };
                settings.set(key, &value, quoted)?;
            }
        }
        for (name, value) in std::env::vars_os() {
            let Some(key) = name.to_str().and_then(|name| name.strip_prefix("ACTIOND_")) else { continue };
            let value = value.into_string().map_err(|_| format!("ACTIOND_{key}: is not valid UTF-8"))?;
            settings.set(&key.to_ascii_lowercase(), &value, true)?;
        }
        Ok(settings)
    }

    /// Sets one setting from its text, `quoted` when it was given as text (an
    /// environment variable, a TOML string) rather than a TOML number or
    /// boolean. Keys that name no setting are left alone: other tools share
    /// the prefix (`ACTIOND_LOG`).
    fn set(&mut self, key: &str, value: &str, quoted: bool) -> Result<(), String> {
        match key {
            "listen" => self.listen = text(key, value, quoted)?,
            "database_url" => self.database_url = text(key, value, quoted)?,
            "whatsapp_graph_url" => self.whatsapp_graph_url = text(key, value, quoted)?,
            "whatsapp_api_version" => self.whatsapp_api_version = text(key, value, quoted)?,
            "jwt_secret" => self.jwt_secret = optional(&text(key, value, quoted)?),
            "jwt_jwks_url" => self.jwt_jwks_url = optional(&text(key, value, quoted)?),
            "jwt_issuer" => self.jwt_issuer = optional(&text(key, value, quoted)?),
            "jwt_audience" => self.jwt_audience = optional(&text(key, value, quoted)?),
            "encryption_key" => self.encryption_key = optional(&text(key, value, quoted)?),
            "whatsapp_app_secret" => self.whatsapp_app_secret = optional(&text(key, value, quoted)?),
            "whatsapp_verify_token" => self.whatsapp_verify_token = optional(&text(key, value, quoted)?),
            "rate_limit_per_second" => self.rate_limit_per_second = number(key, value)?,
            "rate_limit_burst" => self.rate_limit_burst = number(key, value)?,
            "delivery_max_attempts" => self.delivery_max_attempts = number(key, value)?,
            "delivery_backoff_ms" => self.delivery_backoff_ms = number(key, value)?,
            "delivery_reconcile_ms" => self.delivery_reconcile_ms = number(key, value)?,
            "delivery_lease_ms" => self.delivery_lease_ms = number(key, value)?,
            "sender_mps" => self.sender_mps = number(key, value)?,
            "database_max_connections" => self.database_max_connections = number(key, value)?,
            "shutdown_grace_ms" => self.shutdown_grace_ms = number(key, value)?,
            "max_waits_per_tenant" => self.max_waits_per_tenant = number(key, value)?,
            "retention_days" => self.retention_days = number(key, value)?,
            "events_allow_local" => self.events_allow_local = Some(boolean(key, value)?),
            "events_retry_scale" => self.events_retry_scale = positive(key, value)?,
            _ => {}
        }
        Ok(())
    }

    /// Every problem that keeps `serve` from starting, each naming its setting.
    pub fn check_for_serve(&self) -> Result<SocketAddr, String> {
        let mut problems = Vec::new();
        let listen = self.listen.parse::<SocketAddr>();
        if listen.is_err() {
            problems.push("ACTIOND_LISTEN: is not an address such as 127.0.0.1:8080".into());
        }
        match (&self.jwt_secret, &self.jwt_jwks_url) {
            (None, None) => problems
                .push("ACTIOND_JWT_SECRET (at least 32 bytes) or ACTIOND_JWT_JWKS_URL is missing: no token could be verified".into()),
            (Some(secret), _) if secret.len() < JWT_SECRET_MIN_BYTES => {
                problems.push(format!("ACTIOND_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes, it is {}", secret.len()))
            }
            _ => {}
        }
        if self.jwt_jwks_url.as_deref().is_some_and(|url| reqwest::Url::parse(url).is_err()) {
            problems.push("ACTIOND_JWT_JWKS_URL: is not a URL".into());
        }
        match &self.encryption_key {
            None => problems.push(
                "ACTIOND_ENCRYPTION_KEY is missing: a base64 32-byte key seals WhatsApp access tokens (openssl rand -base64 32)".into(),
            ),
            Some(key) => {
                if let Err(problem) = crate::crypto::Sealer::from_base64(key) {
                    problems.push(problem);
                }
            }
        }
        if reqwest::Url::parse(&self.whatsapp_graph_url).is_err() {
            problems.push("ACTIOND_WHATSAPP_GRAPH_URL: is not a URL".into());
        }
        if self.delivery_max_attempts == 0 {
            problems.push("ACTIOND_DELIVERY_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.delivery_lease_ms < 300 {
            problems.push("ACTIOND_DELIVERY_LEASE_MS must be at least 300: a heartbeat renews it every third".into());
        }
        if self.database_max_connections == 0 {
            problems.push("ACTIOND_DATABASE_MAX_CONNECTIONS must be at least 1".into());
        }
        if self.max_waits_per_tenant == 0 {
            problems.push("ACTIOND_MAX_WAITS_PER_TENANT must be at least 1".into());
        }
        if !(1..=36_500).contains(&self.retention_days) {
            problems.push("ACTIOND_RETENTION_DAYS must be from 1 to 36500".into());
        }
        if self.sender_mps == 0 {
            problems.push("ACTIOND_SENDER_MPS must be at least 1".into());
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            problems.push("ACTIOND_RATE_LIMIT_BURST must be at least 1 while ACTIOND_RATE_LIMIT_PER_SECOND is set".into());
        }
        match listen {
            Ok(address) if problems.is_empty() => Ok(address),
            _ => Err(problems.join("\n")),
        }
    }
}
