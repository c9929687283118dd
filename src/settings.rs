//! Settings, layered: defaults, then an optional TOML file, then `ACTIOND_*`
//! environment variables. The file takes the same keys, with or without the
//! `ACTIOND_` prefix and in any case (`jwt_secret` or `ACTIOND_JWT_SECRET`).

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://actiond.db";
pub const JWT_SECRET_MIN_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
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
        }
    }
}

/// The environment variable that sets a settings key, for error messages.
pub fn variable(key: &str) -> String {
    format!("ACTIOND_{}", key.to_ascii_uppercase())
}

impl Settings {
    pub fn load(config_file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
            let table: toml::Table = text.parse().map_err(|e| format!("--config {}: {e}", path.display()))?;
            let normalized: toml::Table = table
                .into_iter()
                .map(|(key, value)| {
                    let key = key.to_ascii_lowercase();
                    (key.strip_prefix("actiond_").unwrap_or(&key).to_owned(), value)
                })
                .collect();
            figment = figment.merge(Serialized::defaults(normalized));
        }
        figment
            .merge(Env::prefixed("ACTIOND_").filter(|key| !key.as_str().is_empty()))
            .extract::<Settings>()
            .map(Settings::without_empty_values)
            .map_err(|error| {
                let key = error.path.last().cloned().unwrap_or_default();
                format!("{}: {}", variable(&key), error.kind)
            })
    }

    /// An empty value (`ACTIOND_JWT_SECRET=`) means "not set".
    fn without_empty_values(mut self) -> Self {
        for value in [
            &mut self.jwt_secret,
            &mut self.jwt_jwks_url,
            &mut self.jwt_issuer,
            &mut self.jwt_audience,
            &mut self.encryption_key,
            &mut self.whatsapp_app_secret,
            &mut self.whatsapp_verify_token,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        self
    }

    /// Every problem that keeps `serve` from starting, each naming its setting.
    pub fn check_for_serve(&self) -> Result<SocketAddr, String> {
        let mut problems = Vec::new();
        let listen = self.listen.parse::<SocketAddr>();
        if listen.is_err() {
            problems.push(format!("ACTIOND_LISTEN: '{}' is not an address such as 127.0.0.1:8080", self.listen));
        }
        match (&self.jwt_secret, &self.jwt_jwks_url) {
            (None, None) => problems
                .push("ACTIOND_JWT_SECRET (at least 32 bytes) or ACTIOND_JWT_JWKS_URL is missing: no token could be verified".into()),
            (Some(secret), _) if secret.len() < JWT_SECRET_MIN_BYTES => {
                problems.push(format!("ACTIOND_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes, it is {}", secret.len()))
            }
            _ => {}
        }
        if let Some(url) = &self.jwt_jwks_url
            && reqwest::Url::parse(url).is_err()
        {
            problems.push(format!("ACTIOND_JWT_JWKS_URL: '{url}' is not a URL"));
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
            problems.push(format!("ACTIOND_WHATSAPP_GRAPH_URL: '{}' is not a URL", self.whatsapp_graph_url));
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
