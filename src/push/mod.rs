//! Pushed rows: a batch of columns sent to a push source, written to the
//! online store, to the offline source as a new Parquet file, or both.
//!
//! The whole batch is converted and checked before anything is written, so
//! a batch with one bad value changes nothing anywhere: [`rows`] turns the
//! JSON columns into each fed view's rows (event times within a sane
//! window), [`offline`] stages the Parquet file, which is published only
//! once the online write succeeded (and, by default, was synced to disk).
//!
//! A push is safe to retry: online records are newer-wins (the same record
//! again changes nothing) and the offline file is named by its content (the
//! same rows again publish nothing new). So a failure after validation (the
//! online store down, a publish failing, a timeout) tells the client to
//! retry, never leaves it unsure whether retrying duplicates data.

mod offline;
mod rows;

pub use offline::SchemaCache;

pub use crate::error::PushError;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::on_demand::write_time::WriteTimeViews;
use crate::online::{self, EntityRows};
use crate::registry::{Definitions, FeatureView, Source, ViewSelection};
use crate::{Error, FeatureStore};

/// Where pushed rows go (Feast's `to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTarget {
    #[default]
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushTarget {
    pub fn online(self) -> bool {
        self != PushTarget::Offline
    }

    pub fn offline(self) -> bool {
        self != PushTarget::Online
    }
}

/// What one push source feeds, resolved against the definitions.
pub struct PushPlan<'a> {
    pub source: &'a Source,
    /// The online views pushed rows reach.
    pub views: Vec<&'a FeatureView>,
}

pub fn plan<'a>(definitions: &'a Definitions, name: &str) -> Result<PushPlan<'a>, PushError> {
    let push = definitions
        .push_source(name)
        .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
    let (source_name, views): (&str, Vec<&FeatureView>) = match (&push.source, &push.feature_view) {
        (Some(source), _) => (
            source,
            definitions
                .feature_views
                .iter()
                .filter(|v| v.online && v.source == *source)
                .collect(),
        ),
        (None, Some(view)) => {
            let view = definitions
                .feature_view(view)
                .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
            (&view.source, vec![view])
        }
        (None, None) => return Err(PushError::UnknownPushSource(name.to_string())),
    };
    let source = definitions
        .source(source_name)
        .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
    Ok(PushPlan { source, views })
}

/// What a push wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub rows: usize,
    /// Online records written (rows times the views fed).
    pub online_records: usize,
    /// The Parquet file an offline push added.
    pub offline_file: Option<PathBuf>,
}

impl FeatureStore {
    /// Whether pushing to `push_source` runs a transform (a write-time
    /// on-demand view over a view it feeds); `false` when the source is
    /// unknown (the push then fails on its own).
    pub fn push_runs_transforms(&self, push_source: &str, to: PushTarget) -> bool {
        let Ok(applied) = self.applied() else {
            return false;
        };
        let definitions = &applied.definitions;
        if !to.online() || definitions.on_demand_feature_views.is_empty() {
            return false;
        }
        let Ok(plan) = plan(definitions, push_source) else {
            return false;
        };
        definitions.on_demand_feature_views.iter().any(|odfv| {
            odfv.write_to_online_store
                && plan
                    .views
                    .iter()
                    .any(|view| odfv.sources.contains(&view.name))
        })
    }

    /// Writes pushed rows (`df`, columns by name) through `push_source`: to
    /// the online store, as a new Parquet file of its source, or both. Every
    /// row is checked before anything is written.
    pub fn push(
        &self,
        push_source: &str,
        df: &EntityRows,
        to: PushTarget,
    ) -> Result<PushOutcome, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        let plan = plan(definitions, push_source)?;
        self.write_pushed(definitions, &plan, push_source, df, to)
    }

    /// Whether writing rows of `view` online runs a transform (a
    /// write-time on-demand view over it).
    pub fn view_write_runs_transforms(&self, view: &str) -> bool {
        self.applied().is_ok_and(|applied| {
            applied
                .definitions
                .on_demand_feature_views
                .iter()
                .any(|odfv| odfv.write_to_online_store && odfv.sources.iter().any(|s| s == view))
        })
    }

    /// Feast's `write_to_online_store`: rows of one feature view (`df`:
    /// its join keys, features, and event times under the source's
    /// timestamp column or Feast's `event_timestamp`, created times under
    /// the source's created column or `created`), checked and written
    /// online exactly as a push to online is, write-time on-demand views
    /// included.
    pub fn write_to_online_store(&self, view: &str, df: EntityRows) -> Result<PushOutcome, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        let feature_view = definitions
            .feature_view(view)
            .ok_or_else(|| crate::registry::SelectionError::UnknownView(view.to_string()))?;
        if !feature_view.online {
            return Err(crate::error::MaterializeError::NotOnline(view.to_string()).into());
        }
        let source = definitions
            .source(&feature_view.source)
            .ok_or_else(|| crate::registry::SelectionError::UnknownView(view.to_string()))?;
        let plan = PushPlan {
            source,
            views: vec![feature_view],
        };
        let df = feast_time_columns(df, source);
        self.write_pushed(definitions, &plan, view, &df, PushTarget::Online)
    }

    /// Checks every row of `df`, then writes it where `to` says: the
    /// online records of `plan`'s views (and their write-time on-demand
    /// views), a new Parquet file of its source (`name` names it in
    /// errors and the file).
    fn write_pushed(
        &self,
        definitions: &Definitions,
        plan: &PushPlan<'_>,
        push_source: &str,
        df: &EntityRows,
        to: PushTarget,
    ) -> Result<PushOutcome, Error> {
        let project = &self.config().project;
        let rows = df.len().map_err(|e| PushError::Malformed(e.to_string()))?;
        let now = chrono::Utc::now();
        let ahead = chrono::Duration::seconds(
            i64::try_from(self.config().push.max_future_seconds)
                .unwrap_or(i64::MAX / 1_000_000_000),
        );
        let latest = now
            .checked_add_signed(ahead)
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MAX);
        rows::check_times(df, plan.source, 0, latest)?;
        let mut records = Vec::new();
        if to.online() {
            for (view, view_rows) in rows::online_rows(definitions, plan, df)? {
                let selection = ViewSelection::for_view(definitions, &view.name)?;
                records.extend(online::records_from_rows(project, &selection, &view_rows)?);
                // Write-time on-demand views store their outputs too.
                let write_time = WriteTimeViews::over(definitions, view, || self.transforms())?;
                if !write_time.is_empty() {
                    records.extend(write_time.records(project, &view_rows)?);
                }
            }
        }
        let staged = if to.offline() {
            Some(offline::stage(
                self.project_dir(),
                self.push_schemas(),
                definitions,
                push_source,
                plan,
                df,
            )?)
        } else {
            None
        };
        if !records.is_empty() {
            // An unpublished file is removed when dropped.
            let store = self.online_store()?;
            store.write(&records)?;
            if self.config().online_store.sync_writes {
                store.flush()?;
            }
        }
        let offline_file = match staged {
            Some(staged) => Some(staged.publish().map_err(|e| PushError::Publish {
                push: push_source.to_string(),
                message: e.to_string(),
            })?),
            None => None,
        };
        Ok(PushOutcome {
            rows,
            online_records: records.len(),
            offline_file,
        })
    }
}

/// Feast's client sends a view's times as `event_timestamp` and `created`,
/// whatever its source calls them: those two names mean what Feast means.
/// Each becomes the source's own column (a column already named so is
/// replaced), both at once, so a source whose timestamp column is called
/// `created` still reads Feast's event times.
fn feast_time_columns(df: EntityRows, source: &Source) -> EntityRows {
    let target = |feast: &str| match feast {
        "event_timestamp" => Some(source.timestamp_field.as_str()),
        "created" => source.created_timestamp_column.as_deref(),
        _ => None,
    };
    let sent = |name: &str| df.columns.iter().any(|(n, _)| n == name);
    let supplied: Vec<&str> = ["event_timestamp", "created"]
        .into_iter()
        .filter(|feast| sent(feast))
        .filter_map(target)
        .collect();
    let supplied: Vec<String> = supplied.into_iter().map(str::to_string).collect();
    EntityRows {
        columns: df
            .columns
            .into_iter()
            .filter_map(|(name, values)| match target(&name) {
                Some(ours) => Some((ours.to_string(), values)),
                // Feast's `created` for a source without a created column.
                None if name == "created" => None,
                None if supplied.contains(&name) => None,
                None => Some((name, values)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(timestamp: &str, created: Option<&str>) -> Source {
        serde_saphyr::from_str(&format!(
            "{{name: s, path: p, timestamp_field: {timestamp}{}}}",
            created
                .map(|c| format!(", created_timestamp_column: {c}"))
                .unwrap_or_default()
        ))
        .unwrap()
    }

    fn names(df: &EntityRows) -> Vec<(&str, &serde_json::Value)> {
        df.columns
            .iter()
            .map(|(n, v)| (n.as_str(), &v[0]))
            .collect()
    }

    fn feast_df() -> EntityRows {
        EntityRows {
            columns: vec![
                ("driver_id".into(), vec![1.into()]),
                ("event_timestamp".into(), vec!["e".into()]),
                ("created".into(), vec!["c".into()]),
            ],
        }
    }

    #[test]
    fn feasts_time_columns_become_the_sources() {
        let renamed = feast_time_columns(feast_df(), &source("ts", Some("created_ts")));
        assert_eq!(
            names(&renamed),
            vec![
                ("driver_id", &1.into()),
                ("ts", &"e".into()),
                ("created_ts", &"c".into())
            ]
        );
        // The same names: nothing changes.
        let same = feast_time_columns(feast_df(), &source("event_timestamp", Some("created")));
        assert_eq!(names(&same), names(&feast_df()));
        // A source timed by a column called `created`, without a created
        // column: Feast's event times are read, its created column dropped.
        let clash = feast_time_columns(feast_df(), &source("created", None));
        assert_eq!(
            names(&clash),
            vec![("driver_id", &1.into()), ("created", &"e".into())]
        );
    }
}
