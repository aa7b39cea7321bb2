//! Wafer: a feature store in one binary.
//!
//! Data flows one way: the [`cli`] (and later the HTTP server) calls
//! [`FeatureStore`], which reads definitions from the [`registry`] and data
//! from the stores ([`offline`]).

pub mod cli;
pub mod config;
pub mod example;
#[cfg(feature = "offline")]
pub mod offline;
pub mod online;
pub mod registry;
mod store;

pub use store::{Error, FeatureRequest, FeatureStore, MaterializeProgress, NoProgress};
