//! Resolved lookup plans, kept per registry version. Resolving a request
//! clones its views' definitions into a selection, and that (with dropping
//! the plan after) was more than half of an embedded lookup's instructions
//! (benches/README.md). A plan depends only on the request and the
//! registry version, except for the modules of on-demand views computed at
//! lookup time (a name can get a new version without a new registry
//! version), so only plans that compute nothing are kept.
//!
//! Bounded by weight, not count: a plan holds a copy of every view it
//! reads (all of its features), so a short request over a wide view is a
//! large plan. A plan weighs the fields it holds ([`weight`]); the cache
//! holds at most [`MAX_WEIGHT`] of them and is emptied when the next plan
//! would not fit (so a client sending ever new requests cannot grow it,
//! nor keep the usual requests out for long), and when another registry
//! version is loaded ([`PlanCache::clear`]). Requests naming more than
//! [`MAX_KEY_BYTES`] are never kept. Emptied maps are dropped after the
//! lock is released.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::on_demand::Plan;
use crate::registry::{FeatureRequest, RegistryVersion};

/// Most fields (see [`weight`]) kept at once: about 10-20 MiB of copied
/// definitions.
pub const MAX_WEIGHT: usize = 65_536;
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
    /// The plans' total weight.
    weight: usize,
}

impl PlanCache {
    /// The plan kept for `request` against `version`, if any.
    pub fn get(
        &self,
        version: &Arc<RegistryVersion>,
        request: &FeatureRequest,
        full_feature_names: bool,
    ) -> Option<Arc<Plan>> {
        if key_bytes(request) > MAX_KEY_BYTES {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let cached = inner.as_ref()?;
        if !Arc::ptr_eq(&cached.version, version) {
            return None;
        }
        cached.plans.get(request)?[usize::from(full_feature_names)].clone()
    }

    /// Keeps `plan` for `request` against `version` when it computes
    /// nothing, the request is small and `version` is not older than the
    /// one kept (a lookup that began before a new version was loaded).
    pub fn keep(
        &self,
        version: &Arc<RegistryVersion>,
        request: &FeatureRequest,
        full_feature_names: bool,
        plan: &Arc<Plan>,
    ) {
        let weight = weight(plan);
        if !plan.is_plain() || key_bytes(request) > MAX_KEY_BYTES || weight > MAX_WEIGHT {
            return;
        }
        let mut emptied = None;
        {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            match inner.as_ref() {
                Some(cached) if Arc::ptr_eq(&cached.version, version) => {}
                Some(cached) if cached.version.version > version.version => return,
                _ => {
                    emptied = inner.replace(Cached {
                        version: version.clone(),
                        plans: HashMap::new(),
                        weight: 0,
                    });
                }
            }
            let Some(cached) = inner.as_mut() else {
                return;
            };
            if cached.weight + weight > MAX_WEIGHT {
                emptied = Some(Cached {
                    version: cached.version.clone(),
                    plans: std::mem::take(&mut cached.plans),
                    weight: std::mem::take(&mut cached.weight),
                });
            }
            let slot = &mut cached.plans.entry(request.clone()).or_default()
                [usize::from(full_feature_names)];
            if slot.is_none() {
                *slot = Some(plan.clone());
                cached.weight += weight;
            }
        }
        drop(emptied);
    }

    /// Forgets every plan (another registry version was loaded).
    pub fn clear(&self) {
        let emptied = self.inner.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(emptied);
    }

    /// The kept plans' total weight.
    pub fn weight(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.as_ref().map_or(0, |c| c.weight)
    }
}

/// What a plan holds, in fields: every feature and join key of each view
/// it copied, and one per output.
pub fn weight(plan: &Plan) -> usize {
    let views = plan.stored.as_ref().map_or(0, |stored| {
        stored
            .views
            .iter()
            .map(|v| 1 + v.view.features.len() + v.join_keys.len())
            .sum::<usize>()
            + stored.features.len()
    });
    1 + views + plan.outputs.len()
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
        let (one, two) = (version(1), version(2));
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

        // An older version never replaces a newer one's plans.
        cache.keep(&one, &request, false, &plan());
        assert!(cache.get(&one, &request, false).is_none());
        assert!(cache.get(&two, &request, true).is_some());

        // Bounded in weight: emptied when the next plan would not fit,
        // never over the bound.
        for i in 0..3 * MAX_WEIGHT {
            let request = FeatureRequest::Features(vec![format!("v:f{i}")]);
            cache.keep(&two, &request, i % 2 == 0, &plan());
            assert!(cache.weight() <= MAX_WEIGHT);
            assert!(cache.get(&two, &request, i % 2 == 0).is_some());
        }
        cache.clear();
        assert_eq!(cache.weight(), 0);
        // A long request is not kept.
        let long = FeatureRequest::Features(vec!["v:f".repeat(MAX_KEY_BYTES)]);
        cache.keep(&two, &long, false, &plan());
        assert!(cache.get(&two, &long, false).is_none());
    }
}
