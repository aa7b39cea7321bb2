//! Edge sync: fetches from a central `wafer serve` (`GET /edge/bundle`) a
//! bundle of what changed since this edge's position (everything the first
//! time, or when the central's change log no longer reaches back), verifies
//! it, and applies it ([`Edge::apply`]). A sync cut anywhere (connection
//! dropped, kill -9) leaves the state served before; the next one starts
//! again from the position last committed.

use std::time::Duration;

use super::{Applied, Edge};
use crate::bundle::{Bundle, BundleError};
use crate::online::LogPosition;
use crate::{Error, FeatureStore};

/// Where an edge syncs from.
#[derive(Debug, Clone)]
pub struct SyncSource {
    /// The central server's base URL (`http://host:6566`).
    pub url: String,
    /// A token with the `edge` role, when the central server checks them.
    pub token: Option<String>,
    /// Feature services to serve; every one when empty.
    pub feature_services: Vec<String>,
    /// The largest bundle accepted.
    pub max_bytes: u64,
    /// The whole fetch's time limit.
    pub timeout: Duration,
}

impl SyncSource {
    fn error(&self, message: impl Into<String>) -> Error {
        BundleError::Sync {
            url: self.url.clone(),
            message: message.into(),
        }
        .into()
    }

    /// Fetches and verifies a bundle of the changes after `since` (made
    /// under registry version `held`), or of everything.
    pub fn fetch(
        &self,
        since: Option<(LogPosition, u64)>,
        modules_held: &[String],
    ) -> Result<Bundle, Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut query = Vec::new();
        if let Some((since, held)) = since {
            query.push(format!(
                "since={}&log={}&registry_version={held}",
                since.at, since.log
            ));
        }
        if !self.feature_services.is_empty() {
            query.push(format!(
                "feature_services={}",
                encode(&self.feature_services.join(","))
            ));
        }
        if !modules_held.is_empty() {
            query.push(format!("modules={}", modules_held.join(",")));
        }
        let url = format!(
            "{}/edge/bundle{}{}",
            self.url.trim_end_matches('/'),
            if query.is_empty() { "" } else { "?" },
            query.join("&")
        );
        let mut request = agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| self.error(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            // An error Feast has a class for comes as a JSON string holding
            // the error object: show its message.
            let body = body.trim();
            let message = serde_json::from_str::<String>(body)
                .ok()
                .and_then(|detail| serde_json::from_str::<serde_json::Value>(&detail).ok())
                .and_then(|error| error["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.to_string());
            return Err(self.error(format!("answered {status}: {message}")));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(self.max_bytes)
            .read_to_vec()
            .map_err(|e| self.error(format!("reading the bundle: {e}")))?;
        Ok(Bundle::verify(bytes)?)
    }
}

/// One sync of `edge` (served by `store`) from `source`.
pub fn sync_once(edge: &Edge, store: &FeatureStore, source: &SyncSource) -> Result<Applied, Error> {
    let current = edge.manifest()?;
    // Changes only continue a state of the same selection.
    let mut wanted = source.feature_services.clone();
    wanted.sort();
    let since = current.as_ref().and_then(|m| {
        let mut held = m.feature_services.clone();
        held.sort();
        let same = if wanted.is_empty() {
            m.all_services
        } else {
            !m.all_services && wanted == held
        };
        m.cursor
            .filter(|_| same && !m.entities_filtered)
            .map(|c| (c, m.registry_version))
    });
    // The modules this edge really stores (not what its manifest says).
    let held: Vec<String> = match &current {
        Some(_) => store.transforms()?.stored_hashes()?.into_iter().collect(),
        None => Vec::new(),
    };
    let bundle = source.fetch(since, &held)?;
    edge.apply(store, &bundle)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
