//! Resolved lookup plans, kept per registry version. Resolving a request
//! clones its views' definitions into a selection, and that (with dropping
//! the plan after) was more than half of an embedded lookup's instructions
//! (benches/README.md). A plan depends only on the request and the
//! registry version, except for the modules of on-demand views computed at
//! lookup time (a name can get a new version without a new registry
//! version), so only plans that compute nothing are kept.
//!
//! Bounded: requests naming more than [`MAX_KEY_BYTES`] of references are
//! never kept, and the cache is emptied when it holds [`MAX_PLANS`] plans
//! (so a client sending ever new requests cannot grow it, nor keep the
//! usual requests out for long) and whenever another registry version is
//! loaded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::on_demand::Plan;
use crate::registry::{FeatureRequest, RegistryVersion};

/// Most plans kept at once.
pub const MAX_PLANS: usize = 1024;
/// Longest request kept, in bytes of its references or service name.
pub const MAX_KEY_BYTES: usize = 4096;

/// Plans by request, for one registry version.
#[derive(Default)]
pub struct PlanCache {
    inner: RwLock<Option<Cached>>,
}

struct Cached {
    /// The version the plans were resolved against (held, so its address
    /// cannot be reused by another version while the plans are kept).
    version: Arc<RegistryVersion>,
    /// By request; one plan per `full_feature_names` value.
    plans: HashMap<FeatureRequest, [Option<Arc<Plan>>; 2]>,
}

impl PlanCache {
    /// The plan kept for `request` against `version`, if any.
    pub fn get(
        &self,
        version: &Arc<RegistryVersion>,
        request: &FeatureRequest,
        full_feature_names: bool,
    ) -> Option<Arc<Plan>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let cached = inner.as_ref()?;
        if !Arc::ptr_eq(&cached.version, version) {
            return None;
        }
        cached.plans.get(request)?[usize::from(full_feature_names)].clone()
    }

    /// Keeps `plan` for `request` against `version` when it computes
    /// nothing and the request is small.
    pub fn keep(
        &self,
        version: &Arc<RegistryVersion>,
        request: &FeatureRequest,
        full_feature_names: bool,
        plan: &Arc<Plan>,
    ) {
        if !plan.is_plain() || key_bytes(request) > MAX_KEY_BYTES {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let stale = inner
            .as_ref()
            .is_none_or(|c| !Arc::ptr_eq(&c.version, version) || c.plans.len() >= MAX_PLANS);
        if stale {
            *inner = Some(Cached {
                version: version.clone(),
                plans: HashMap::new(),
            });
        }
        if let Some(cached) = inner.as_mut() {
            cached.plans.entry(request.clone()).or_default()[usize::from(full_feature_names)] =
                Some(plan.clone());
        }
    }

    /// How many requests have a plan kept.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.as_ref().map_or(0, |c| c.plans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_bytes(request: &FeatureRequest) -> usize {
    match request {
        FeatureRequest::Features(references) => references.iter().map(String::len).sum(),
        FeatureRequest::Service(name) => name.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(number: u64) -> Arc<RegistryVersion> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "version": number,
                "created_at": "2026-01-01T00:00:00Z",
                "author": "test",
                "wafer_version": "0",
                "changes": [],
                "definitions": {},
            }))
            .unwrap(),
        )
    }

    fn plan() -> Arc<Plan> {
        Arc::new(Plan {
            stored: None,
            on_demand: Vec::new(),
            outputs: Vec::new(),
        })
    }

    #[test]
    fn plans_are_kept_per_version_flag_and_request_within_bounds() {
        let cache = PlanCache::default();
        let (one, two) = (version(1), version(1));
        let request = FeatureRequest::Service("s".into());
        let kept = plan();
        cache.keep(&one, &request, false, &kept);
        assert!(Arc::ptr_eq(
            &cache.get(&one, &request, false).unwrap(),
            &kept
        ));
        assert!(cache.get(&one, &request, true).is_none(), "other names");
        assert!(
            cache.get(&two, &request, false).is_none(),
            "another version"
        );
        cache.keep(&two, &request, true, &plan());
        assert!(cache.get(&one, &request, false).is_none(), "emptied");
        assert!(cache.get(&two, &request, true).is_some());

        // Bounded in entries: emptied when full, never over the bound.
        for i in 0..3 * MAX_PLANS {
            let request = FeatureRequest::Features(vec![format!("v:f{i}")]);
            cache.keep(&two, &request, false, &plan());
            assert!(cache.len() <= MAX_PLANS);
            assert!(cache.get(&two, &request, false).is_some());
        }
        // A long request is not kept.
        let long = FeatureRequest::Features(vec!["v:f".repeat(MAX_KEY_BYTES)]);
        cache.keep(&two, &long, false, &plan());
        assert!(cache.get(&two, &long, false).is_none());
    }
}
