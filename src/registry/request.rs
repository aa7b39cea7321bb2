//! A request for features, resolved once against the definitions into a
//! [`RetrievalPlan`]: the stored features to read (requested ones, then the
//! inputs on-demand transforms need), the on-demand views to compute with
//! where each of their inputs comes from, and every output's name and
//! origin. Online lookups and training sets both execute a plan; nothing
//! is resolved twice and no string is built to be parsed again.

use std::collections::{HashMap, HashSet};

use super::definitions::{Definitions, OnDemandFeatureView};
use super::selection::{full_name, FeatureSelection, SelectionError, ViewSelection};
use crate::transform::ModuleSchema;
use crate::types::ValueType;

/// Which features a retrieval asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeatureRequest {
    /// `view:feature` references.
    Features(Vec<String>),
    /// Every feature of a feature service.
    Service(String),
}

/// Where a plan runs: online, the outputs of write-time on-demand views are
/// stored features; offline (training sets), they are computed like the
/// other on-demand views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Online,
    Offline,
}

/// A transform module as a plan needs it: its schema.
pub trait PlannedModule {
    fn schema(&self) -> &ModuleSchema;
}

/// A resolved request.
#[derive(Debug)]
pub struct RetrievalPlan<M> {
    /// The stored features to read, in this order: those requested, then
    /// the inputs of on-demand views not requested. `None` when nothing is
    /// read from a store. Named by [`full_name`] when the plan computes
    /// anything (so hidden inputs never collide), else by output name.
    pub stored: Option<FeatureSelection>,
    /// The on-demand views to compute, each once.
    pub on_demand: Vec<OnDemandStep<M>>,
    /// The requested features, in the order asked.
    pub outputs: Vec<PlannedOutput>,
}

/// One on-demand view to compute.
#[derive(Debug)]
pub struct OnDemandStep<M> {
    pub view: OnDemandFeatureView,
    pub module: M,
    /// One per module input, in the module's order.
    pub inputs: Vec<StepInput>,
}

/// Where a module input comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StepInput {
    /// A stored feature: its index in [`RetrievalPlan::stored`]'s features,
    /// and its stored type (the module widens int32 and float32 inputs).
    Stored {
        feature: usize,
        value_type: ValueType,
    },
    /// Request data: a column sent with the entity rows (online) or in the
    /// entity file (offline).
    Request { name: String, value_type: ValueType },
}

/// One requested feature.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOutput {
    /// `feature`, or `view__feature` with full feature names.
    pub name: String,
    pub view: String,
    pub feature: String,
    pub value_type: ValueType,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Index in [`RetrievalPlan::stored`]'s features.
    Stored(usize),
    /// A step's output: the index of the step, and of the output among the
    /// module's outputs (`None` when the module does not produce it).
    Computed { step: usize, output: Option<usize> },
}

impl<M> RetrievalPlan<M> {
    /// Whether the plan only reads stored features, named as requested: the
    /// store's own result is the answer.
    pub fn is_plain(&self) -> bool {
        self.on_demand.is_empty()
    }

    /// The request data fields the on-demand steps read, each once, in
    /// the order first read, leaving out those named like a join key of
    /// the stored features (that column is the key).
    pub fn request_fields(&self) -> Vec<(String, ValueType)> {
        let keys: Vec<&str> = self
            .stored
            .as_ref()
            .map(|s| s.join_keys().into_iter().map(|k| k.name.as_str()).collect())
            .unwrap_or_default();
        let mut fields: Vec<(String, ValueType)> = Vec::new();
        for step in &self.on_demand {
            for input in &step.inputs {
                if let StepInput::Request { name, value_type } = input {
                    if !keys.contains(&name.as_str()) && !fields.iter().any(|(n, _)| n == name) {
                        fields.push((name.clone(), value_type.clone()));
                    }
                }
            }
        }
        fields
    }
}

/// The `(view, feature)` pairs a request names, in order: references
/// parsed, services expanded.
fn requested_pairs(
    definitions: &Definitions,
    request: &FeatureRequest,
) -> Result<Vec<(String, String)>, SelectionError> {
    match request {
        FeatureRequest::Features(references) => {
            references.iter().map(super::parse_reference).collect()
        }
        FeatureRequest::Service(name) => {
            let service = definitions
                .feature_service(name)
                .ok_or_else(|| SelectionError::UnknownService(name.clone()))?;
            let mut pairs = Vec::new();
            for item in &service.features {
                let all: Vec<String> = if let Some(view) = definitions.feature_view(&item.view) {
                    view.features.iter().map(|f| f.name.clone()).collect()
                } else if let Some(view) = definitions.on_demand_feature_view(&item.view) {
                    view.features.iter().map(|f| f.name.clone()).collect()
                } else {
                    return Err(SelectionError::UnknownView(item.view.clone()));
                };
                let names = item.features.clone().unwrap_or(all);
                pairs.extend(names.into_iter().map(|n| (item.view.clone(), n)));
            }
            Ok(pairs)
        }
    }
}

/// The feature view among an on-demand view's sources that provides
/// `input`, or `None` when a request source does (apply checked that
/// exactly one source provides each input).
fn source_view_of<'d>(
    definitions: &'d Definitions,
    odfv: &OnDemandFeatureView,
    input: &str,
) -> Option<&'d super::FeatureView> {
    odfv.sources.iter().find_map(|name| {
        definitions
            .feature_view(name)
            .filter(|view| view.feature(input).is_some())
    })
}

/// Resolves `request` for `target`. `module` resolves an on-demand view's
/// transform; it is called once per computed view, and only when there is
/// one.
pub fn resolve<M: PlannedModule, E: From<SelectionError>>(
    definitions: &Definitions,
    request: &FeatureRequest,
    full_feature_names: bool,
    target: Target,
    mut module: impl FnMut(&OnDemandFeatureView) -> Result<M, E>,
) -> Result<RetrievalPlan<M>, E> {
    let pairs = requested_pairs(definitions, request)?;
    if pairs.is_empty() {
        return Err(SelectionError::Empty.into());
    }
    let computed =
        |odfv: &OnDemandFeatureView| !(target == Target::Online && odfv.write_to_online_store);
    let plain = !pairs.iter().any(|(view, _)| {
        definitions
            .on_demand_feature_view(view)
            .is_some_and(computed)
    });
    // Output names, then every check on borrowed names, in request order:
    // the view, the feature, a feature asked twice, an output name taken.
    let names: Vec<String> = pairs
        .iter()
        .map(|(view, feature)| {
            if full_feature_names {
                full_name(view, feature)
            } else {
                feature.clone()
            }
        })
        .collect();
    let mut stored = FeatureSelection::default();
    let mut origins: Vec<(ValueType, Origin)> = Vec::with_capacity(pairs.len());
    let mut steps: Vec<(&OnDemandFeatureView, Vec<usize>)> = Vec::new();
    {
        let mut requested: HashSet<(&str, &str)> = HashSet::with_capacity(pairs.len());
        let mut taken: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
        for (index, ((view_name, feature_name), name)) in pairs.iter().zip(&names).enumerate() {
            let odfv = definitions.on_demand_feature_view(view_name);
            let field = match odfv {
                Some(odfv) => odfv.features.iter().find(|f| &f.name == feature_name),
                None => definitions
                    .feature_view(view_name)
                    .ok_or_else(|| SelectionError::UnknownView(view_name.clone()))?
                    .feature(feature_name),
            }
            .ok_or_else(|| SelectionError::UnknownFeature {
                view: view_name.clone(),
                feature: feature_name.clone(),
            })?;
            if !requested.insert((view_name, feature_name)) {
                return Err(
                    SelectionError::Duplicate(format!("{view_name}:{feature_name}")).into(),
                );
            }
            if let Some(&first) = taken.get(name.as_str()) {
                let (first_view, first_feature) = &pairs[first];
                return Err(SelectionError::NameCollision {
                    name: name.clone(),
                    first: format!("{first_view}:{first_feature}"),
                    second: format!("{view_name}:{feature_name}"),
                }
                .into());
            }
            taken.insert(name, index);
            let origin = match odfv.filter(|o| computed(o)) {
                Some(odfv) => {
                    let step = match steps.iter().position(|(o, _)| o.name == odfv.name) {
                        Some(step) => step,
                        None => {
                            steps.push((odfv, Vec::new()));
                            steps.len() - 1
                        }
                    };
                    steps[step].1.push(index);
                    // The output index is known once the module is resolved.
                    Origin::Computed { step, output: None }
                }
                None => {
                    let stored_name = if plain {
                        name.clone()
                    } else {
                        full_name(view_name, feature_name)
                    };
                    let view = || match odfv {
                        Some(odfv) => ViewSelection::for_write_time(definitions, odfv)
                            .ok_or_else(|| SelectionError::OnDemandOffline(view_name.clone())),
                        None => ViewSelection::for_view(definitions, view_name),
                    };
                    Origin::Stored(stored.add(view_name, view, field.clone(), stored_name)?)
                }
            };
            origins.push((field.value_type.clone(), origin));
        }
    }
    let mut outputs: Vec<PlannedOutput> = pairs
        .into_iter()
        .zip(names)
        .zip(origins)
        .map(
            |(((view, feature), name), (value_type, origin))| PlannedOutput {
                name,
                view,
                feature,
                value_type,
                origin,
            },
        )
        .collect();

    let mut on_demand = Vec::with_capacity(steps.len());
    for (odfv, step_outputs) in steps {
        let module = module(odfv)?;
        let schema = module.schema();
        let mut inputs = Vec::with_capacity(schema.inputs.len());
        for input in &schema.inputs {
            inputs.push(match source_view_of(definitions, odfv, &input.name) {
                Some(view) => {
                    let value_type = view
                        .feature(&input.name)
                        .map_or_else(|| input.value_type.clone(), |f| f.value_type.clone());
                    let existing = stored.features.iter().position(|f| {
                        stored.views[f.view].view.name == view.name && f.field.name == input.name
                    });
                    let feature = match existing {
                        Some(index) => index,
                        None => {
                            let field = view.feature(&input.name).cloned().ok_or_else(|| {
                                SelectionError::UnknownFeature {
                                    view: view.name.clone(),
                                    feature: input.name.clone(),
                                }
                            })?;
                            stored.add(
                                &view.name,
                                || ViewSelection::for_view(definitions, &view.name),
                                field,
                                full_name(&view.name, &input.name),
                            )?
                        }
                    };
                    StepInput::Stored {
                        feature,
                        value_type,
                    }
                }
                None => StepInput::Request {
                    name: input.name.clone(),
                    value_type: input.value_type.clone(),
                },
            });
        }
        let step = on_demand.len();
        for index in step_outputs {
            let output = &mut outputs[index];
            let position = schema.outputs.iter().position(|o| o.name == output.feature);
            output.origin = Origin::Computed {
                step,
                output: position,
            };
        }
        on_demand.push(OnDemandStep {
            view: odfv.clone(),
            module,
            inputs,
        });
    }
    Ok(RetrievalPlan {
        stored: (!stored.features.is_empty()).then_some(stored),
        on_demand,
        outputs,
    })
}
