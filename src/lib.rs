//! Wafer: a feature store in one binary.
//!
//! Data flows one way: the [`cli`] and the HTTP [`server`] call
//! [`FeatureStore`], which reads definitions from the [`registry`], data
//! from the stores ([`offline`], [`online`]) and writes pushed rows
//! ([`push`]).

pub mod cli;
pub mod config;
pub mod example;
#[cfg(feature = "offline")]
pub mod offline;
pub mod online;
pub mod push;
pub mod registry;
pub mod server;
mod serving;
mod store;
pub mod transform;

pub use store::{
    Error, FeatureRequest, FeatureStore, MaterializeProgress, NoProgress, PushOutcome,
};
