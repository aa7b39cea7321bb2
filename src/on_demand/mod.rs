//! On-demand feature views at run time: the steps of a
//! [`RetrievalPlan`](crate::registry::RetrievalPlan) run their modules over
//! Arrow columns, the same bits online (one call per lookup, over all entity
//! rows) and offline (one call per joined batch of a training set).
//! [`write_time`] runs write-time views as rows are written online.

pub mod write_time;

use arrow::array::ArrayRef;

use crate::registry::{
    Definitions, FeatureRequest, OnDemandStep, PlannedModule, RetrievalPlan, Target,
};
use crate::transform::{CompiledTransform, ModuleSchema, TransformError};
use crate::{Error, FeatureStore};

impl PlannedModule for CompiledTransform {
    fn schema(&self) -> &ModuleSchema {
        CompiledTransform::schema(self)
    }
}

/// A step of a plan, with its module compiled and ready.
pub type Step = OnDemandStep<CompiledTransform>;

/// A plan with its modules compiled and ready.
pub type Plan = RetrievalPlan<CompiledTransform>;

/// Resolves `request` for `target` ([`crate::registry::request::resolve`])
/// with the project's modules, opened only when an on-demand view is
/// computed.
pub fn plan(
    store: &FeatureStore,
    definitions: &Definitions,
    request: &FeatureRequest,
    full_feature_names: bool,
    target: Target,
) -> Result<RetrievalPlan<CompiledTransform>, Error> {
    crate::registry::request::resolve(definitions, request, full_feature_names, target, |odfv| {
        store
            .transforms()?
            .resolve(&odfv.transform)
            .map_err(|source| failure(&odfv.name, source))
    })
}

/// Runs a step's module over its inputs (one array per module input, in
/// the module's order); outputs come back in the module's order.
pub fn run(step: &Step, inputs: &[ArrayRef]) -> Result<Vec<ArrayRef>, Error> {
    step.module
        .run(inputs)
        .map_err(|source| failure(&step.view.name, source))
}

/// An on-demand view's failure, named.
pub fn failure(view: &str, source: TransformError) -> Error {
    Error::OnDemand {
        view: view.to_string(),
        source,
    }
}
