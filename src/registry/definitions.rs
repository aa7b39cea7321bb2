//! The declarative objects a project defines in its YAML files: entities,
//! sources, feature views, feature services, push sources, request sources
//! and on-demand feature views.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::monitoring::{FeatureLogging, Monitoring};
use crate::types::ValueType;

/// Everything a project defines. Several definition files merge into one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definitions {
    #[serde(default)]
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub feature_views: Vec<FeatureView>,
    #[serde(default)]
    pub feature_services: Vec<FeatureService>,
    #[serde(default)]
    pub push_sources: Vec<PushSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_sources: Vec<RequestSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_demand_feature_views: Vec<OnDemandFeatureView>,
}

impl Definitions {
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn feature_view(&self, name: &str) -> Option<&FeatureView> {
        self.feature_views.iter().find(|v| v.name == name)
    }

    pub fn feature_service(&self, name: &str) -> Option<&FeatureService> {
        self.feature_services.iter().find(|s| s.name == name)
    }

    pub fn push_source(&self, name: &str) -> Option<&PushSource> {
        self.push_sources.iter().find(|s| s.name == name)
    }

    pub fn request_source(&self, name: &str) -> Option<&RequestSource> {
        self.request_sources.iter().find(|s| s.name == name)
    }

    pub fn on_demand_feature_view(&self, name: &str) -> Option<&OnDemandFeatureView> {
        self.on_demand_feature_views.iter().find(|v| v.name == name)
    }

    /// The feature view a write-time on-demand view's outputs are stored
    /// as: keyed, timed and expired like its one source view, with the
    /// outputs as features. `None` for views computed at lookup.
    pub fn write_time_view(&self, odfv: &OnDemandFeatureView) -> Option<FeatureView> {
        if !odfv.write_to_online_store {
            return None;
        }
        let [source] = odfv.sources.as_slice() else {
            return None;
        };
        let source = self.feature_view(source)?;
        Some(FeatureView {
            name: odfv.name.clone(),
            entities: source.entities.clone(),
            source: source.source.clone(),
            features: odfv.features.clone(),
            ttl: source.ttl,
            online: true,
            description: odfv.description.clone(),
            owner: odfv.owner.clone(),
            tags: odfv.tags.clone(),
            defined_in: odfv.defined_in.clone(),
        })
    }

    /// Appends another file's definitions to these.
    pub fn extend(&mut self, other: Definitions) {
        self.request_sources.extend(other.request_sources);
        self.on_demand_feature_views
            .extend(other.on_demand_feature_views);
        self.entities.extend(other.entities);
        self.sources.extend(other.sources);
        self.feature_views.extend(other.feature_views);
        self.feature_services.extend(other.feature_services);
        self.push_sources.extend(other.push_sources);
    }

    /// The join keys of a view, in the declared order of its entities and
    /// their keys.
    pub fn join_keys<'a>(&'a self, view: &'a FeatureView) -> Vec<&'a Field> {
        view.entities
            .iter()
            .filter_map(|name| self.entity(name))
            .flat_map(|entity| entity.join_keys.iter())
            .collect()
    }
}

/// A named, typed column: a feature or a join key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// What features are about (a driver, a customer), identified by one or more
/// join keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub name: String,
    pub join_keys: Vec<Field>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// Parquet data: a file, a directory of `.parquet` files, or a glob, relative
/// to the project directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub path: String,
    pub timestamp_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    /// Source column name to feature or join key name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

impl Source {
    /// The column of the source that holds `name` (a feature or join key),
    /// after `field_mapping`; `None` when the mapping renamed that column
    /// to something else.
    pub fn column_for<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if let Some((column, _)) = self
            .field_mapping
            .iter()
            .find(|(_, mapped)| mapped.as_str() == name)
        {
            return Some(column.as_str());
        }
        (!self.field_mapping.contains_key(name)).then_some(name)
    }
}

/// A group of typed features read from one source, keyed by entities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureView {
    pub name: String,
    pub entities: Vec<String>,
    pub source: String,
    pub features: Vec<Field>,
    /// How long a value stays valid after its event timestamp; zero means
    /// forever.
    #[serde(default)]
    pub ttl: Ttl,
    #[serde(default = "default_true")]
    pub online: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.features.iter().find(|f| f.name == name)
    }
}

fn default_true() -> bool {
    true
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A named set of features a model consumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureService {
    pub name: String,
    pub features: Vec<ServiceItem>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Log what the service serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<FeatureLogging>,
    /// Thresholds of its skew and drift reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// A named entry point for pushed rows. It feeds a batch source (`source`:
/// offline pushes land in its directory, online pushes reach every online
/// view over it) or a single feature view (`feature_view`: online pushes
/// reach that view, offline pushes its source).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_view: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// Named, typed fields that arrive with each request (in `entities` over
/// HTTP, as columns of the entity file for training sets) and feed
/// on-demand feature views.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSource {
    pub name: String,
    pub fields: Vec<Field>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// Features computed by a WebAssembly transform from features of feature
/// views and request fields. The module's inputs are matched by name with
/// the features and fields of `sources`; its outputs with `features`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnDemandFeatureView {
    pub name: String,
    /// `name` (its active version when applied) or `name@sha256:HEX`.
    pub transform: String,
    /// Feature views and request sources the inputs come from.
    pub sources: Vec<String>,
    /// The outputs this view serves, each produced by the module.
    pub features: Vec<Field>,
    /// Run the transform when its source view's rows are written online
    /// (materialization, push) and store the outputs, instead of at every
    /// lookup. Training sets still run it; no request data is allowed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub write_to_online_store: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// One entry of a feature service: a whole view (`- view`) or some of its
/// features (`- view: [a, b]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceItem {
    pub view: String,
    /// `None` selects every feature of the view.
    pub features: Option<Vec<String>>,
}

impl Serialize for ServiceItem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match &self.features {
            None => serializer.serialize_str(&self.view),
            Some(features) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(&self.view, features)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ServiceItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> serde::de::Visitor<'de> for ItemVisitor {
            type Value = ServiceItem;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a view name or `view: [feature, ...]`")
            }

            fn visit_str<E: serde::de::Error>(self, view: &str) -> Result<ServiceItem, E> {
                Ok(ServiceItem {
                    view: view.to_string(),
                    features: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ServiceItem, A::Error> {
                let (view, features) =
                    map.next_entry::<String, Vec<String>>()?.ok_or_else(|| {
                        serde::de::Error::custom("an empty entry: write `view: [feature, ...]`")
                    })?;
                if map.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "one view per entry: write `- view: [feature, ...]` for each",
                    ));
                }
                Ok(ServiceItem {
                    view,
                    features: Some(features),
                })
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A time-to-live: `2h`, `1d`, `30m`, `90s`, or `0` for unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ttl(pub Duration);

impl Ttl {
    pub fn is_unbounded(&self) -> bool {
        self.0.is_zero()
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Ttl(Duration::ZERO));
        }
        humantime::parse_duration(text).map(Ttl).map_err(|e| {
            format!("invalid ttl '{text}': {e} (write e.g. 2h, 1d, 30m, or 0 for unbounded)")
        })
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unbounded() {
            f.write_str("0")
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TtlVisitor;
        impl serde::de::Visitor<'_> for TtlVisitor {
            type Value = Ttl;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 2h or 1d, or 0 for unbounded")
            }

            fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Ttl, E> {
                Ok(Ttl(Duration::from_secs(seconds)))
            }

            fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Ttl, E> {
                u64::try_from(seconds)
                    .map(|s| Ttl(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("invalid ttl {seconds}: must not be negative")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ttl, E> {
                Ttl::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TtlVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_units_and_zero() {
        assert_eq!(Ttl::parse("2h").unwrap().0, Duration::from_secs(7200));
        assert_eq!(Ttl::parse("1d").unwrap().0, Duration::from_secs(86400));
        assert!(Ttl::parse("0").unwrap().is_unbounded());
        assert!(Ttl::parse("soon").is_err());
    }

    #[test]
    fn service_items_accept_both_forms() {
        let yaml = "name: s\nfeatures:\n  - a\n  - b: [x, y]\n";
        let service: FeatureService = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            service.features[0],
            ServiceItem {
                view: "a".into(),
                features: None
            }
        );
        assert_eq!(
            service.features[1],
            ServiceItem {
                view: "b".into(),
                features: Some(vec!["x".into(), "y".into()])
            }
        );
    }
}

/// Why a source's path resolves to no data.
#[derive(Debug, thiserror::Error)]
pub enum SourcePathError {
    #[error("no Parquet file matches '{0}'")]
    NoFiles(String),
    #[error("invalid glob '{pattern}': {message}")]
    BadGlob { pattern: String, message: String },
    #[error("cannot read '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Source {
    /// The Parquet files behind this source, sorted, resolved against the
    /// project directory: the file itself, every `.parquet` file under a
    /// directory, or every file a glob matches.
    pub fn resolve_files(
        &self,
        project_dir: &std::path::Path,
    ) -> Result<Vec<PathBuf>, SourcePathError> {
        let full = project_dir.join(&self.path);
        let mut files = Vec::new();
        if crate::files::is_glob(&self.path) {
            files = crate::files::expand_glob(&full).map_err(|e| SourcePathError::BadGlob {
                pattern: self.path.clone(),
                message: e.to_string(),
            })?;
        } else if full.is_dir() {
            collect_parquet_files(&full, &mut files)?;
        } else if full.is_file() {
            files.push(full);
        }
        if files.is_empty() {
            return Err(SourcePathError::NoFiles(self.path.clone()));
        }
        files.sort();
        Ok(files)
    }
}

fn collect_parquet_files(
    dir: &std::path::Path,
    out: &mut Vec<PathBuf>,
) -> Result<(), SourcePathError> {
    let io = |source| SourcePathError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}
