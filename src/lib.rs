//! Wafer: a feature store in one binary.
//!
//! Data flows one way. The transports, the [`cli`] and the HTTP [`server`],
//! call use cases on [`FeatureStore`]: lookups ([`lookup`]), training sets
//! ([`training`]), [`materialize`], [`push`], registry browsing
//! ([`browse`]), and skew and drift reports ([`monitor`]) over what the
//! [`feature_log`] wrote of served lookups. Use cases resolve requests
//! against the [`registry`] into plans and run them on the stores
//! ([`offline`], [`online`]) and the WebAssembly [`transform`] runtime
//! ([`on_demand`]). Underneath, [`codec`] reads and prints values and times
//! one way, [`view_rows`] names the batch layout rows are written online
//! in, [`types`] holds the feature types, and [`durable`] and [`files`]
//! write and read files.

pub mod browse;
pub mod bundle;
pub mod cli;
pub mod codec;
pub mod config;
pub mod durable;
pub mod edge;
pub mod error;
pub mod example;
pub mod feature_log;
pub mod files;
pub mod lookup;
pub mod materialize;
pub mod monitor;
#[cfg(feature = "offline")]
pub mod offline;
pub mod on_demand;
pub mod online;
pub mod push;
#[cfg(feature = "redis")]
pub mod redis_client;
pub mod registry;
pub mod server;
mod store;
#[cfg(feature = "offline")]
pub mod training;
pub mod transform;
pub mod types;
pub mod view_rows;

pub use error::Error;
pub use materialize::{MaterializeProgress, NoProgress};
pub use push::{PushOutcome, PushTarget};
pub use registry::FeatureRequest;
pub use store::FeatureStore;
