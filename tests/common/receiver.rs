//! A voice platform's event endpoint on loopback: it records every request
//! it gets and answers each with the next status scripted (200 once the
//! script runs out), after an optional delay.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("an event body is JSON")
    }

    /// Whether one of the `v1,` signatures is the Standard Webhooks HMAC of
    /// this request under `secret`, computed here from the specification.
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.header("webhook-id"), self.header("webhook-timestamp"), self.body).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature").split(' ').any(|signature| signature == expected)
    }
}

#[derive(Default)]
struct Script {
    statuses: VecDeque<(u16, Option<&'static str>)>,
    delay: Duration,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let router = Router::new().fallback(receive).with_state(Arc::clone(&script));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, script }
    }

    /// The next answers, in order; `location` makes it a redirect.
    pub fn answer(&self, statuses: impl IntoIterator<Item = (u16, Option<&'static str>)>) {
        self.script.lock().unwrap().statuses.extend(statuses);
    }

    pub fn delay(&self, delay: Duration) {
        self.script.lock().unwrap().delay = delay;
    }

    pub fn count(&self) -> usize {
        self.script.lock().unwrap().received.len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits up to 10 s for a request whose event type is `kind`.
    pub async fn event(&self, kind: &str) -> Received {
        self.events_of(kind, 1).await.remove(0)
    }

    /// Waits up to 10 s for `count` requests of event type `kind`.
    pub async fn events_of(&self, kind: &str, count: usize) -> Vec<Received> {
        for _ in 0..400 {
            let found: Vec<Received> = self.received().into_iter().filter(|r| r.json()["type"] == kind).collect();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no {count} {kind} event(s) in 10 s; got {:?}",
            self.received().iter().map(|r| r.json()["type"].clone()).collect::<Vec<_>>()
        );
    }
}

async fn receive(State(script): State<Arc<Mutex<Script>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let (answer, delay) = {
        let mut script = script.lock().unwrap();
        script.received.push(Received { path: uri.path().to_owned(), headers, body: String::from_utf8_lossy(&body).into_owned() });
        (script.statuses.pop_front().unwrap_or((200, None)), script.delay)
    };
    tokio::time::sleep(delay).await;
    let status = StatusCode::from_u16(answer.0).unwrap();
    match answer.1 {
        Some(location) => (status, [(header::LOCATION, location)]).into_response(),
        None => status.into_response(),
    }
}
