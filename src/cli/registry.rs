//! `wafer registry`: list the applied objects, show one name as JSON (with
//! a feature view's freshness), print the version history. Listing and
//! showing go through the same browsing use case as the HTTP `/registry`
//! endpoints.

use anyhow::Result;
use serde_json::Value;

use super::args::RegistryCommand;
use crate::browse::KINDS;
use crate::registry::{Action, ObjectKind};
use crate::FeatureStore;

pub(super) fn run(store: &FeatureStore, command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::List => list(store),
        RegistryCommand::Show { name, version } => show(store, &name, version),
        RegistryCommand::History => history(store),
    }
}

/// One line per object: kind, name, the essentials.
fn list(store: &FeatureStore) -> Result<()> {
    let summary = store.registry_summary()?;
    println!(
        "registry version {} ({})",
        summary.version,
        summary.created_at.to_rfc3339()
    );
    println!("{:<16} {:<28} DETAILS", "KIND", "NAME");
    for kind in KINDS {
        for object in store.list_objects(kind)? {
            println!(
                "{:<16} {:<28} {}",
                kind.to_string(),
                text(&object["name"]),
                details(kind, &object)
            );
        }
    }
    Ok(())
}

/// What a listing line says about an object, read from its JSON.
fn details(kind: ObjectKind, object: &Value) -> String {
    match kind {
        ObjectKind::Entity => format!("join keys {}", fields(&object["join_keys"])),
        ObjectKind::Source => text(&object["path"]).to_string(),
        ObjectKind::FeatureView => format!(
            "{} features, entities {}, ttl {}",
            len(&object["features"]),
            texts(&object["entities"]).join(", "),
            text(&object["ttl"])
        ),
        ObjectKind::FeatureService => {
            // An item is a view's name, or {view: [features]}.
            let views: Vec<&str> = items(&object["features"])
                .map(|item| match item {
                    Value::Object(map) => map.keys().next().map_or("", String::as_str),
                    other => text(other),
                })
                .collect();
            format!("views {}", views.join(", "))
        }
        ObjectKind::PushSource => {
            let mut targets = Vec::new();
            if let Some(source) = object["source"].as_str() {
                targets.push(format!("source {source}"));
            }
            if let Some(view) = object["feature_view"].as_str() {
                targets.push(format!("feature view {view}"));
            }
            targets.join(", ")
        }
        ObjectKind::RequestSource => format!("fields {}", fields(&object["fields"])),
        ObjectKind::OnDemandFeatureView => {
            let written = if object["write_to_online_store"] == true {
                ", written online"
            } else {
                ""
            };
            format!(
                "{} features, transform {}, sources {}{written}",
                len(&object["features"]),
                text(&object["transform"]),
                texts(&object["sources"]).join(", ")
            )
        }
    }
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

fn len(list: &Value) -> usize {
    items(list).count()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn texts(list: &Value) -> Vec<&str> {
    items(list).map(text).collect()
}

/// Typed fields as `name:type, ...`.
fn fields(list: &Value) -> String {
    items(list)
        .map(|f| format!("{}:{}", text(&f["name"]), text(&f["type"])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every object named `name`, as pretty JSON under a `# kind` header, and a
/// feature view's freshness.
fn show(store: &FeatureStore, name: &str, version: Option<u64>) -> Result<()> {
    let (version, objects) = store.objects_named(name, version)?;
    for (kind, object) in &objects {
        println!("# {kind} (registry version {version})");
        println!("{}", serde_json::to_string_pretty(object)?);
    }
    if objects
        .iter()
        .any(|(kind, _)| *kind == ObjectKind::FeatureView)
    {
        let freshness = store.freshness(name)?;
        match freshness.last {
            None => println!("# freshness: never materialized"),
            Some(last) => println!(
                "# freshness: materialized up to {} ({} rows written by that run, {} runs, last finished {})",
                last.end.to_rfc3339(),
                last.rows_written,
                freshness.runs,
                last.finished_at.to_rfc3339()
            ),
        }
    }
    Ok(())
}

/// Every applied version: when, who, how many objects added, changed and
/// removed, and each change.
fn history(store: &FeatureStore) -> Result<()> {
    for version in store.registry().history()? {
        let count = |action: Action| {
            version
                .changes
                .iter()
                .filter(|c| c.action == action)
                .count()
        };
        let (adds, changes, removes) = (
            count(Action::Add),
            count(Action::Change),
            count(Action::Remove),
        );
        println!(
            "version {}  {}  by {}  (+{adds} ~{changes} -{removes})",
            version.version,
            version.created_at.to_rfc3339(),
            version.author
        );
        for change in &version.changes {
            println!("    {change}");
        }
    }
    Ok(())
}
