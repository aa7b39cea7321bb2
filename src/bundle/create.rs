//! Making a bundle from a project: the registry snapshot the selected
//! feature services need (on-demand views pinned to the module versions
//! active now), those modules, and the online records of their views, all
//! or only those changed since an edge's last sync.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::Utc;

use super::format::{push_record, Manifest, ModuleRef, Writer, FORMAT_VERSION};
use super::BundleError;
use crate::online::LogPosition;
use crate::registry::{Definitions, RegistryVersion};
use crate::transform::TransformRef;
use crate::{Error, FeatureStore};

/// What to put in a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleRequest {
    /// Feature services to serve; every service when empty (and no views).
    pub feature_services: Vec<String>,
    /// Views (feature or on-demand) to serve beside the services.
    pub views: Vec<String>,
    /// Only these entities' records, when given: join key columns, as in
    /// a lookup's `entities`.
    pub entities: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// The change-log position an edge holds: only records changed after it
    /// (everything when the store cannot say).
    pub since: Option<LogPosition>,
    /// The registry version the receiver's records belong to: changes
    /// only are sent when it is the current one (a new version may add
    /// views whose older records the receiver lacks).
    pub registry_version: Option<u64>,
    /// Modules the receiver holds already (by sha256): not sent again.
    pub modules_held: HashSet<String>,
    /// Where the bundle is made (shown by `bundle inspect`).
    pub source: String,
}

impl FeatureStore {
    /// Builds a bundle's bytes (see [`crate::bundle`]).
    pub fn create_bundle(&self, request: &BundleRequest) -> Result<Vec<u8>, Error> {
        let applied = self.applied()?;
        let (mut definitions, services) = select(
            &applied.definitions,
            &request.feature_services,
            &request.views,
        )?;
        let transforms_needed = !definitions.on_demand_feature_views.is_empty();
        let mut modules = Vec::new();
        let mut writer = Writer::new();
        let mut sent = HashSet::new();
        if transforms_needed {
            let transforms = self.transforms()?;
            for view in &mut definitions.on_demand_feature_views {
                let reference = TransformRef::parse(&view.transform)?;
                let sha256 = match reference.sha256 {
                    Some(sha) => sha,
                    None => transforms.summary(&reference.name)?.active.sha256,
                };
                view.transform = format!("{}@sha256:{sha256}", reference.name);
                modules.push(ModuleRef {
                    name: reference.name.clone(),
                    sha256: sha256.clone(),
                });
                if !request.modules_held.contains(&sha256) && sent.insert(sha256.clone()) {
                    let bytes = transforms.module(&sha256)?.ok_or_else(|| {
                        BundleError::Source(format!("module sha256:{sha256} is not stored"))
                    })?;
                    writer.add(format!("module/{sha256}"), bytes);
                }
            }
        }
        let project = &self.config().project;
        let views = online_views(&definitions);
        let prefixes: Vec<Vec<u8>> = views
            .iter()
            .map(|v| crate::online::record::view_prefix(project, v))
            .collect();
        let store = self.online_store()?;
        // Positions handed out must be durable: after a crash the log must
        // not reuse one an edge holds.
        store.flush()?;
        let mut records = Vec::new();
        let mut count = 0u64;
        let wanted: Option<HashSet<Vec<u8>>> = match &request.entities {
            Some(columns) => Some(entity_keys(&definitions, project, &views, columns)?),
            None => None,
        };
        let keep = |key: &[u8]| wanted.as_ref().is_none_or(|w| w.contains(key));
        let changed = match request.since {
            Some(since) if request.registry_version == Some(applied.version) => {
                store.changed_since(since, &prefixes)?
            }
            _ => None,
        };
        let (full, cursor) = match changed {
            Some((changed, cursor)) => {
                for (key, value) in changed.iter().filter(|(k, _)| keep(k)) {
                    push_record(&mut records, key, value);
                    count += 1;
                }
                (false, Some(cursor))
            }
            None => {
                let cursor = store.scan(&prefixes, &mut |key, value| {
                    if keep(key) {
                        push_record(&mut records, key, value);
                        count += 1;
                    }
                    Ok(())
                })?;
                (true, cursor)
            }
        };
        let summary = self.registry().materialization_summary()?;
        let watermarks = views
            .iter()
            .filter_map(|v| summary.last(v).map(|r| (v.clone(), r.end)))
            .collect::<BTreeMap<_, _>>();
        let snapshot = RegistryVersion {
            definitions,
            ..(*applied).clone()
        };
        writer.add(
            "registry",
            serde_json::to_vec(&snapshot)
                .map_err(|e| BundleError::Source(format!("cannot encode the registry: {e}")))?,
        );
        writer.add("records", records);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            wafer_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: Utc::now(),
            project: project.clone(),
            source: request.source.clone(),
            registry_version: applied.version,
            feature_services: services,
            all_services: request.feature_services.is_empty() && request.views.is_empty(),
            entities_filtered: request.entities.is_some(),
            views,
            full,
            since: if full { None } else { request.since },
            cursor,
            watermarks,
            modules,
            records: count,
            parts: Vec::new(),
        };
        Ok(writer.finish(manifest)?)
    }
}

/// The definitions the services and views need, and the services' names:
/// their feature views and on-demand views, the on-demand views' sources,
/// the entities, batch sources and push sources of the feature views, and
/// the request sources.
fn select(
    all: &Definitions,
    services: &[String],
    views: &[String],
) -> Result<(Definitions, Vec<String>), BundleError> {
    let services: Vec<String> = if services.is_empty() && views.is_empty() {
        all.feature_services
            .iter()
            .map(|s| s.name.clone())
            .collect()
    } else {
        services.to_vec()
    };
    let mut wanted: BTreeSet<String> = views.iter().cloned().collect();
    for name in &services {
        let service = all
            .feature_service(name)
            .ok_or_else(|| BundleError::Selection(format!("unknown feature service '{name}'")))?;
        wanted.extend(service.features.iter().map(|item| item.view.clone()));
    }
    let mut out = Definitions::default();
    let mut feature_views = BTreeSet::new();
    let mut request_sources = BTreeSet::new();
    for name in &wanted {
        if let Some(view) = all.on_demand_feature_views.iter().find(|v| &v.name == name) {
            for source in &view.sources {
                if all.feature_view(source).is_some() {
                    feature_views.insert(source.clone());
                } else {
                    request_sources.insert(source.clone());
                }
            }
            out.on_demand_feature_views.push(view.clone());
        } else if all.feature_view(name).is_some() {
            feature_views.insert(name.clone());
        } else {
            return Err(BundleError::Selection(format!("unknown view '{name}'")));
        }
    }
    // Write-time on-demand views of the kept feature views are written by
    // their pushes: they come along.
    for view in &all.on_demand_feature_views {
        if view.write_to_online_store
            && view.sources.iter().all(|s| feature_views.contains(s))
            && !out
                .on_demand_feature_views
                .iter()
                .any(|v| v.name == view.name)
        {
            out.on_demand_feature_views.push(view.clone());
        }
    }
    let mut entities = BTreeSet::new();
    let mut sources = BTreeSet::new();
    for name in &feature_views {
        let view = all.feature_view(name).expect("checked above");
        entities.extend(view.entities.iter().cloned());
        sources.insert(view.source.clone());
        out.feature_views.push(view.clone());
    }
    out.entities = all
        .entities
        .iter()
        .filter(|e| entities.contains(&e.name))
        .cloned()
        .collect();
    out.push_sources = all
        .push_sources
        .iter()
        .filter(|p| {
            sources.contains(&p.name)
                || p.source.as_ref().is_some_and(|s| sources.contains(s))
                || p.feature_view
                    .as_ref()
                    .is_some_and(|v| feature_views.contains(v))
        })
        .cloned()
        .collect();
    for push in &out.push_sources {
        sources.extend(push.source.iter().cloned());
    }
    out.sources = all
        .sources
        .iter()
        .filter(|s| sources.contains(&s.name))
        .cloned()
        .collect();
    out.request_sources = all
        .request_sources
        .iter()
        .filter(|r| request_sources.contains(&r.name))
        .cloned()
        .collect();
    out.feature_services = all
        .feature_services
        .iter()
        .filter(|s| services.contains(&s.name))
        .cloned()
        .collect();
    Ok((out, services))
}

/// The views whose records a bundle carries: online feature views and
/// on-demand views stored at write time.
pub(crate) fn online_views(definitions: &Definitions) -> Vec<String> {
    let mut views: Vec<String> = definitions
        .feature_views
        .iter()
        .filter(|v| v.online)
        .map(|v| v.name.clone())
        .collect();
    views.extend(
        definitions
            .on_demand_feature_views
            .iter()
            .filter(|v| v.write_to_online_store)
            .map(|v| v.name.clone()),
    );
    views
}

/// The encoded keys of the listed entities in each of `views`: a view
/// whose join keys the columns lack contributes none.
fn entity_keys(
    definitions: &Definitions,
    project: &str,
    views: &[String],
    columns: &BTreeMap<String, Vec<serde_json::Value>>,
) -> Result<HashSet<Vec<u8>>, BundleError> {
    let rows = columns.values().map(Vec::len).max().unwrap_or(0);
    if columns.values().any(|c| c.len() != rows) {
        return Err(BundleError::Selection(
            "entities: every column needs the same number of values".into(),
        ));
    }
    let mut keys = HashSet::new();
    for name in views {
        // A write-time on-demand view is keyed as its source view.
        let source = definitions
            .on_demand_feature_views
            .iter()
            .find(|v| &v.name == name)
            .and_then(|v| v.sources.iter().find_map(|s| definitions.feature_view(s)));
        let Some(view) = definitions.feature_view(name).or(source) else {
            continue;
        };
        let join_keys: Vec<_> = view
            .entities
            .iter()
            .filter_map(|e| definitions.entity(e))
            .flat_map(|e| e.join_keys.iter())
            .collect();
        if join_keys.iter().any(|k| !columns.contains_key(&k.name)) {
            continue;
        }
        let key_columns: Vec<&Vec<serde_json::Value>> =
            join_keys.iter().map(|k| &columns[&k.name]).collect();
        for row in 0..rows {
            let values = join_keys
                .iter()
                .zip(&key_columns)
                .map(|(k, column)| {
                    crate::codec::Value::from_json(&column[row], &k.value_type).map_err(|e| {
                        BundleError::Selection(format!("entities: '{}', row {row}: {e}", k.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            keys.insert(crate::online::record::encode_key(project, name, &values));
        }
    }
    Ok(keys)
}
