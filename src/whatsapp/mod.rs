//! Everything that speaks Meta's WhatsApp Cloud API: the Graph client, the
//! template registry's rules, and the sandbox that simulates Meta locally.

pub mod client;
pub mod errors;
pub mod payload;
pub mod rendering;
pub mod sandbox;
pub mod templates;
pub mod webhook;

pub use client::{GraphClient, GraphError, SendError, Sent};
