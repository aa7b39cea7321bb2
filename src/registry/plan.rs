//! What applying new definitions would change, object by object.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::definitions::Definitions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Entity,
    Source,
    FeatureView,
    FeatureService,
    PushSource,
    RequestSource,
    OnDemandFeatureView,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Entity => "entity",
            ObjectKind::Source => "source",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::FeatureService => "feature service",
            ObjectKind::PushSource => "push source",
            ObjectKind::RequestSource => "request source",
            ObjectKind::OnDemandFeatureView => "on-demand feature view",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Add,
    Change,
    Remove,
}

/// One object added, changed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub kind: ObjectKind,
    pub name: String,
    /// For a change, the top-level fields that differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.action {
            Action::Add => "+ add",
            Action::Change => "~ change",
            Action::Remove => "- remove",
        };
        write!(f, "{sign} {} '{}'", self.kind, self.name)?;
        if !self.fields.is_empty() {
            write!(f, " ({})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// The changes from `old` to `new`, kinds in dependency order.
pub fn diff(old: &Definitions, new: &Definitions) -> Vec<Change> {
    let mut changes = Vec::new();
    let kinds = [
        (ObjectKind::Entity, "entities"),
        (ObjectKind::Source, "sources"),
        (ObjectKind::FeatureView, "feature_views"),
        (ObjectKind::FeatureService, "feature_services"),
        (ObjectKind::PushSource, "push_sources"),
        (ObjectKind::RequestSource, "request_sources"),
        (ObjectKind::OnDemandFeatureView, "on_demand_feature_views"),
    ];
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    for (kind, key) in kinds {
        let before = by_name(&old[key]);
        let after = by_name(&new[key]);
        for (name, object) in &after {
            match before.get(name) {
                None => changes.push(Change {
                    action: Action::Add,
                    kind,
                    name: name.clone(),
                    fields: vec![],
                }),
                Some(previous) if previous != object => changes.push(Change {
                    action: Action::Change,
                    kind,
                    name: name.clone(),
                    fields: changed_fields(previous, object),
                }),
                Some(_) => {}
            }
        }
        for name in before.keys().filter(|name| !after.contains_key(*name)) {
            changes.push(Change {
                action: Action::Remove,
                kind,
                name: name.clone(),
                fields: vec![],
            });
        }
    }
    changes
}

fn by_name(list: &Value) -> BTreeMap<String, &Value> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| Some((item.get("name")?.as_str()?.to_string(), item)))
                .collect()
        })
        .unwrap_or_default()
}

fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}
