//! The Graph API calls actiond makes, typed. Meta's errors are read from the
//! body's `error.code`, never from the HTTP status (reference §2).

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;

use super::errors::{ErrorClass, classify, describe};
use crate::store::TemplateRecord;

/// Template pages followed at most, so a looping `paging.next` cannot spin forever.
const MAX_TEMPLATE_PAGES: usize = 200;
const TEMPLATE_FIELDS: &str = "name,language,status,category,components,parameter_format";

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Meta answered with an error object: the request was understood and refused.
    #[error("Meta refused the request: {message} (code {code})")]
    Refused { code: i64, message: String },
    /// No usable answer: a transport failure, a timeout, or a body that is not Meta's.
    #[error("the Graph API could not be reached: {0}")]
    Unreachable(String),
}

/// A message Meta took: its id, and the WhatsApp id it gave the recipient
/// (for some countries' numbers not the number sent to; its events use it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub wamid: String,
    pub wa_id: Option<String>,
}

/// Why a send did not return a wamid.
#[derive(Debug)]
pub enum SendError {
    /// Meta answered with an error object: it did not take the message.
    Refused { code: i64, message: String },
    /// The request never reached Meta (no connection): safe to send again.
    NotSent(String),
    /// Meta may or may not have taken the message: a timeout, a dropped
    /// connection, a 5xx without Meta's error body.
    Unknown(String),
}

/// What Meta says about a registered business phone number.
#[derive(Debug, Clone, Deserialize)]
pub struct PhoneNumberInfo {
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// `{graph url}/{version}`, without a trailing slash.
    versioned_base: String,
    /// The configured Graph URL, whose origin alone may receive the token.
    graph_url: reqwest::Url,
}

impl GraphClient {
    pub fn new(graph_url: &str, version: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        let graph_url = graph_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(graph_url).map_err(|e| format!("ACTIOND_WHATSAPP_GRAPH_URL: {e}"))?;
        Ok(Self { http, versioned_base: format!("{graph_url}/{version}"), graph_url: parsed })
    }

    /// `GET /{version}/{phone_number_id}`: proves the token can see the number.
    pub async fn phone_number(&self, phone_number_id: &str, access_token: &str) -> Result<PhoneNumberInfo, GraphError> {
        let url = format!("{}/{phone_number_id}?fields=display_phone_number,verified_name,quality_rating", self.versioned_base);
        let body = self.get(&url, access_token).await?;
        serde_json::from_value(body).map_err(|e| GraphError::Unreachable(format!("unexpected phone number answer: {e}")))
    }

    /// Every template of the WABA, following `paging.next` until it is absent.
    pub async fn templates(&self, waba_id: &str, access_token: &str) -> Result<Vec<TemplateRecord>, GraphError> {
        let mut url = format!("{}/{waba_id}/message_templates?fields={TEMPLATE_FIELDS}&limit=100", self.versioned_base);
        let mut templates = Vec::new();
        for _ in 0..MAX_TEMPLATE_PAGES {
            let page = self.get(&url, access_token).await?;
            for item in page["data"].as_array().into_iter().flatten() {
                templates.push(template_record(item)?);
            }
            match page["paging"]["next"].as_str() {
                // The token goes only back to the Graph API's own origin. The URL
                // is never quoted in an error: Meta puts the token in its query.
                Some(next) => match reqwest::Url::parse(next) {
                    Ok(parsed) if parsed.origin() == self.graph_url.origin() => url = next.to_owned(),
                    _ => return Err(GraphError::Unreachable("paging.next points away from the Graph API".into())),
                },
                None => return Ok(templates),
            }
        }
        Err(GraphError::Unreachable(format!("template listing did not end after {MAX_TEMPLATE_PAGES} pages")))
    }

    /// `POST /{version}/{phone_number_id}/messages` of `message`, a JSON
    /// text: Meta's wamid for the message.
    pub async fn send_message(&self, phone_number_id: &str, access_token: &str, message: &str) -> Result<Sent, SendError> {
        let url = format!("{}/{phone_number_id}/messages", self.versioned_base);
        let request = self.http.post(&url).bearer_auth(access_token).header(CONTENT_TYPE, "application/json").body(message.to_owned());
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() || error.is_builder() => return Err(SendError::NotSent(error.without_url().to_string())),
            Err(error) => return Err(SendError::Unknown(error.without_url().to_string())),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if let Some(error) = body.get("error").filter(|e| e.is_object()) {
            let message = describe(error["message"].as_str().unwrap_or("no message"), error["error_data"]["details"].as_str());
            // Without Meta's numeric code this is not Meta speaking (a proxy, say): nothing was sent.
            return Err(match error["code"].as_i64() {
                Some(code) => SendError::Refused { code, message },
                None => SendError::NotSent(message),
            });
        }
        match body["messages"][0]["id"].as_str() {
            Some(wamid) if status.is_success() => {
                Ok(Sent { wamid: wamid.to_owned(), wa_id: body["contacts"][0]["wa_id"].as_str().map(str::to_owned) })
            }
            // A 4xx was refused before anything was sent; a 5xx or a 2xx without an id may not have been.
            _ if status.is_client_error() => Err(SendError::NotSent(format!("HTTP {status} without Meta's error body"))),
            _ => Err(SendError::Unknown(format!("HTTP {status} without a message id or Meta's error body"))),
        }
    }

    async fn get(&self, url: &str, access_token: &str) -> Result<Value, GraphError> {
        let response =
            self.http.get(url).bearer_auth(access_token).send().await.map_err(|e| GraphError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if let Some(error) = body.get("error").filter(|e| e.is_object()) {
            let message = error["message"].as_str().unwrap_or("no message").to_owned();
            // Without Meta's numeric code this is not Meta speaking (a proxy,
            // say), and a throttle or an outage at Meta says nothing about the
            // credentials either.
            return Err(match error["code"].as_i64() {
                None => GraphError::Unreachable(format!("HTTP {status}, an error without Meta's code: {message}")),
                Some(code) if classify(code) == ErrorClass::Transient => {
                    GraphError::Unreachable(format!("Meta is unavailable: {message} (code {code})"))
                }
                Some(code) => GraphError::Refused { code, message },
            });
        }
        if !status.is_success() || !body.is_object() {
            return Err(GraphError::Unreachable(format!("HTTP {status} without a Graph API error body")));
        }
        Ok(body)
    }
}

fn template_record(item: &Value) -> Result<TemplateRecord, GraphError> {
    let text = |key: &str| item[key].as_str().map(str::to_owned);
    let (Some(name), Some(language), Some(status)) = (text("name"), text("language"), text("status")) else {
        return Err(GraphError::Unreachable("a template without name, language or status".into()));
    };
    Ok(TemplateRecord {
        id: text("id").or_else(|| item["id"].as_i64().map(|id| id.to_string())).unwrap_or_default(),
        name,
        language,
        status: status.to_ascii_uppercase(),
        category: text("category").unwrap_or_default(),
        parameter_format: text("parameter_format").unwrap_or_else(|| "POSITIONAL".into()),
        components: item.get("components").cloned().unwrap_or(Value::Array(Vec::new())),
    })
}
