//! The delivery worker: claims due jobs with a lease, paces them, sends them
//! through the Graph API and records the outcome.

pub mod pacing;
pub mod retry;
pub mod worker;

pub use worker::{DeliverySettings, Worker};
