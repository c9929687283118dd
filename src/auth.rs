//! Bearer-token verification. Which algorithm a token may use comes from the
//! configuration: HS256 only with a configured secret, RS256/ES256 only with a
//! key from the configured JWKS. A token's header picks between the configured
//! verifiers and can never widen them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde_json::{Map, Value, json};

use crate::domain::TenantId;

/// Allowed clock skew for `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
/// Keys are refetched when older than this, even when every kid is known.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Unknown kids trigger at most one refetch per interval, so a flood of forged
/// kids cannot hammer the key server.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    ActionsRead,
    ActionsWrite,
    ActionsExecute,
    WhatsappAdmin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Self::ActionsRead, Self::ActionsWrite, Self::ActionsExecute, Self::WhatsappAdmin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActionsRead => "actions:read",
            Self::ActionsWrite => "actions:write",
            Self::ActionsExecute => "actions:execute",
            Self::WhatsappAdmin => "whatsapp:admin",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == input)
    }
}

/// Who is calling: the tenant and what the token lets it do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    scopes: HashSet<Scope>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The caller the claims name. Each claim actiond reads is absent or of its
/// one type; any other type (`null` included) makes the token invalid, so a
/// malformed claim can never widen what a token grants.
pub fn caller_from(claims: &Map<String, Value>) -> Result<Caller, String> {
    let text = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(format!("the token's {name} claim is not a string")),
    };
    let (org_id, sub, scope) = (text("org_id")?, text("sub")?, text("scope")?);
    let permissions = match claims.get("permissions") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().ok_or("the token's permissions claim is not an array of strings"))
                .collect::<Result<Vec<&str>, _>>()?,
        ),
        Some(_) => return Err("the token's permissions claim is not an array of strings".into()),
    };
    let tenant =
        org_id.and_then(TenantId::new).or_else(|| sub.and_then(TenantId::new)).ok_or("the token names no tenant (org_id or sub)")?;
    let scopes = if scope.is_none() && permissions.is_none() {
        // A token that says nothing of scopes has every scope of its tenant.
        Scope::ALL.into_iter().collect()
    } else {
        let named = scope.into_iter().flat_map(str::split_whitespace).chain(permissions.into_iter().flatten());
        named.filter_map(Scope::parse).collect()
    };
    Ok(Caller { tenant, scopes })
}

pub struct AuthSettings<'a> {
    pub secret: Option<&'a str>,
    pub jwks_url: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// How long a verified token is taken on trust before its signature is
/// checked again: a key removed from the JWKS stops working within this.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Tokens remembered at most; when full, the memory starts over.
const VERIFIED_MAX: usize = 4096;

pub struct Authenticator {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Tokens verified lately, by the whole token: a client's every request
    /// would otherwise decode it and check its signature again.
    verified: std::sync::Mutex<HashMap<String, Verified>>,
}

/// A verified token's caller and when it may be taken on trust: within its
/// own nbf..exp (with the leeway), and until `checked_until`.
struct Verified {
    caller: Caller,
    valid_from: i64,
    valid_until: i64,
    checked_until: Instant,
}

impl Authenticator {
    pub fn new(settings: AuthSettings<'_>) -> Result<Self, String> {
        let jwks = match settings.jwks_url {
            Some(url) => Some(Arc::new(Jwks::new(url)?)),
            None => None,
        };
        Ok(Self {
            secret: settings.secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            issuer: settings.issuer.map(str::to_owned),
            audience: settings.audience.map(str::to_owned),
            verified: std::sync::Mutex::default(),
        })
    }

    /// The caller a token proves, or a one-line reason it proves nothing.
    pub async fn verify(&self, token: &str) -> Result<Caller, String> {
        if let Some(caller) = self.remembered(token) {
            return Ok(caller);
        }
        let (caller, claims) = self.check(token).await?;
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let leeway = LEEWAY_SECONDS as i64;
        let entry = Verified {
            caller: caller.clone(),
            valid_from: number("nbf").map_or(i64::MIN, |nbf| nbf - leeway),
            valid_until: number("exp").map_or(i64::MIN, |exp| exp + leeway),
            checked_until: Instant::now() + VERIFIED_FOR,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(token.to_owned(), entry);
        Ok(caller)
    }

    /// The caller of a token verified lately, while it may be taken on trust.
    fn remembered(&self, token: &str) -> Option<Caller> {
        let now = crate::clock::now_ms() / 1000;
        let verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = verified.get(token)?;
        let trusted = (known.valid_from..=known.valid_until).contains(&now) && known.checked_until > Instant::now();
        trusted.then(|| known.caller.clone())
    }

    /// Decodes the token and checks its signature and claims.
    async fn check(&self, token: &str) -> Result<(Caller, Map<String, Value>), String> {
        let header = decode_header(token).map_err(|_| "the token is not a well-formed JWT with a supported algorithm".to_owned())?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or("HS256 tokens are not accepted by this server")?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or("RS256/ES256 tokens are not accepted by this server")?;
                let kid = header.kid.as_deref().ok_or("the token has no kid to find its key")?;
                jwks.key(kid).await?
            }
            other => return Err(format!("{other:?} tokens are not accepted")),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| describe(&e))?;
        Ok((caller_from(&data.claims)?, data.claims))
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature is wrong".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        _ => "the token is invalid".into(),
    }
}

/// A JWKS endpoint's keys, cached by kid. A request whose kid is known never
/// waits for a fetch: stale keys are refreshed in the background and keep
/// serving until a fetch succeeds. Only a request with an unknown kid waits,
/// and unknown kids cause at most one fetch per `JWKS_REFETCH_INTERVAL`,
/// counted from the previous fetch of any kind, so a flood of forged kids
/// cannot hammer the key server.
struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the last fetch began, successful or not.
    last_fetch: std::sync::Mutex<Option<Instant>>,
    /// Held for the length of a fetch, so that fetches never overlap.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    fn new(url: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.to_owned(),
            http,
            keys: RwLock::default(),
            last_fetch: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    async fn key(self: &Arc<Self>, kid: &str) -> Result<DecodingKey, String> {
        if let Some(key) = self.cached(kid) {
            if self.fetched_within(JWKS_MAX_AGE).is_none() {
                let jwks = Arc::clone(self);
                tokio::spawn(async move {
                    if let Ok(_fetching) = jwks.fetching.try_lock() {
                        jwks.refresh_unless_fetched_within(JWKS_MAX_AGE).await;
                    }
                });
            }
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // The fetch this request waited behind may have brought the key.
        if self.cached(kid).is_none() {
            self.refresh_unless_fetched_within(JWKS_REFETCH_INTERVAL).await;
        }
        self.cached(kid).ok_or_else(|| "the token's kid names no known key".to_owned())
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(kid).cloned()
    }

    /// When the last fetch began, if it began within `interval`.
    fn fetched_within(&self, interval: Duration) -> Option<Instant> {
        let last = *self.last_fetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.filter(|at| at.elapsed() < interval)
    }

    /// Fetches the keys, unless the last fetch began within `interval`; the
    /// caller holds `fetching`. A failed fetch keeps the last good keys.
    async fn refresh_unless_fetched_within(&self, interval: Duration) {
        if self.fetched_within(interval).is_some() {
            return;
        }
        *self.last_fetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys,
            Err(error) => tracing::warn!(%error, "could not refresh the JWKS; keeping the cached keys"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let response = self.http.get(&self.url).send().await.map_err(|e| e.to_string())?;
        let set: JwkSet = response.error_for_status().map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        let keys = set.keys.iter().filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?))).collect();
        Ok(keys)
    }
}

/// Mints an HS256 token for `actiond token` and dev mode.
pub fn mint(secret: &str, tenant: &str, scopes: &[Scope], ttl: Duration, issuer: Option<&str>, audience: Option<&str>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut claims = json!({"sub": tenant, "org_id": tenant, "iat": now, "exp": now.saturating_add(ttl.as_secs())});
    if !scopes.is_empty() {
        claims["scope"] = json!(scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    }
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    if let Some(audience) = audience {
        claims["aud"] = json!(audience);
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("HS256 signing cannot fail")
}

/// `1h`, `30m`, `45s`, `7d` or plain seconds.
pub fn parse_ttl(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input.find(|c: char| !c.is_ascii_digit()).unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("'{input}' is not a duration such as 1h, 30m or 3600s"))?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{input}' has an unknown unit; use s, m, h or d")),
    };
    number.checked_mul(unit_seconds).map(Duration::from_secs).ok_or_else(|| format!("'{input}' is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

    fn authenticator() -> Authenticator {
        Authenticator::new(AuthSettings { secret: Some(SECRET), jwks_url: None, issuer: None, audience: None }).unwrap()
    }

    fn sign(claims: Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[tokio::test]
    async fn minted_tokens_carry_tenant_and_scopes() {
        let token = mint(SECRET, "acme", &[Scope::ActionsRead], Duration::from_secs(60), None, None);
        let caller = authenticator().verify(&token).await.unwrap();
        assert_eq!(caller.tenant.as_str(), "acme");
        assert!(caller.has(Scope::ActionsRead));
        assert!(!caller.has(Scope::ActionsWrite));
    }

    #[tokio::test]
    async fn tenant_is_org_id_else_sub_and_no_scope_claim_means_all() {
        let exp = now() + 60;
        let caller = authenticator().verify(&sign(json!({"sub": "user-1", "org_id": "org-9", "exp": exp}))).await.unwrap();
        assert_eq!(caller.tenant.as_str(), "org-9");
        assert!(Scope::ALL.iter().all(|s| caller.has(*s)));
        let caller = authenticator().verify(&sign(json!({"sub": "user-1", "exp": exp, "permissions": ["whatsapp:admin"]}))).await.unwrap();
        assert_eq!(caller.tenant.as_str(), "user-1");
        assert!(caller.has(Scope::WhatsappAdmin) && !caller.has(Scope::ActionsRead));
        assert!(authenticator().verify(&sign(json!({"exp": exp}))).await.is_err());
    }

    #[tokio::test]
    async fn a_remembered_token_is_trusted_only_within_its_window() {
        let auth = authenticator();
        let token = sign(json!({"sub": "a", "exp": now() + 600}));
        let caller = auth.verify(&token).await.unwrap();
        assert!(auth.verified.lock().unwrap().contains_key(&token), "remembered");
        assert_eq!(auth.verify(&token).await.unwrap().tenant.as_str(), "a");
        // Past its exp (and leeway), or past its recheck, an entry sends the
        // token to a full check again, which a forged one fails.
        let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.forged";
        let now = now() as i64;
        for (valid_until, checked_until) in [(now - 1, Instant::now() + VERIFIED_FOR), (now + 600, Instant::now())] {
            let entry = Verified { caller: caller.clone(), valid_from: i64::MIN, valid_until, checked_until };
            auth.verified.lock().unwrap().insert(forged.into(), entry);
            assert!(auth.verify(forged).await.is_err());
        }
        let entry = Verified { caller, valid_from: i64::MIN, valid_until: now + 600, checked_until: Instant::now() + VERIFIED_FOR };
        auth.verified.lock().unwrap().insert(forged.into(), entry);
        assert!(auth.verify(forged).await.is_ok(), "within its window the entry is trusted");
    }

    #[tokio::test]
    async fn rejects_expired_missing_exp_future_nbf_and_wrong_secret() {
        let auth = authenticator();
        assert!(auth.verify(&sign(json!({"sub": "a", "exp": now() - 120}))).await.is_err());
        assert!(auth.verify(&sign(json!({"sub": "a"}))).await.is_err());
        assert!(auth.verify(&sign(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}))).await.is_err());
        // Within the 60 s leeway both ways.
        assert!(auth.verify(&sign(json!({"sub": "a", "exp": now() - 30, "nbf": now() + 30}))).await.is_ok());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert!(auth.verify(&forged).await.is_err());
    }

    #[tokio::test]
    async fn rejects_alg_none_and_algorithms_not_configured() {
        let auth = authenticator();
        // {"alg":"none"} . {"sub":"a","exp":9999999999} . (no signature)
        assert!(auth.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.").await.is_err());
        let hs384 =
            encode(&Header::new(Algorithm::HS384), &json!({"sub": "a", "exp": now() + 60}), &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert!(auth.verify(&hs384).await.is_err());
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
