//! Write-time on-demand views (`write_to_online_store: true`): their
//! modules run on one feature view's rows as they are written online
//! (materialization, pushes), and their outputs are stored as records of
//! their own, keyed and timed like the rows they came from.

use arrow::array::ArrayRef;

use super::failure;
use crate::online::{self, KeyedRecord, OnlineError};
use crate::registry::{Definitions, FeatureView, ViewSelection};
use crate::transform::{CompiledTransform, TransformError, Transforms};
use crate::view_rows::ViewRows;
use crate::Error;

/// The write-time views over one feature view.
pub struct WriteTimeViews {
    views: Vec<WriteTimeView>,
}

struct WriteTimeView {
    name: String,
    /// Where the outputs are stored: the view's outputs keyed like its
    /// source view.
    stored: ViewSelection,
    transform: CompiledTransform,
    /// For each module input, its index among the source view's features.
    inputs: Vec<usize>,
    /// For each stored feature, its index among the module's outputs.
    outputs: Vec<usize>,
}

impl WriteTimeViews {
    /// Those over `view`; the module store is opened only if there are any.
    pub fn over<'t>(
        definitions: &Definitions,
        view: &FeatureView,
        transforms: impl FnOnce() -> Result<&'t Transforms, Error>,
    ) -> Result<Self, Error> {
        let odfvs: Vec<_> = definitions
            .on_demand_feature_views
            .iter()
            .filter(|o| o.write_to_online_store && o.sources == [view.name.as_str()])
            .collect();
        let mut views = Vec::with_capacity(odfvs.len());
        if let Some(transforms) = (!odfvs.is_empty()).then(transforms).transpose()? {
            for odfv in odfvs {
                let broken = |message: String| failure(&odfv.name, TransformError::Schema(message));
                let transform = transforms
                    .resolve(&odfv.transform)
                    .map_err(|source| failure(&odfv.name, source))?;
                let schema = transform.schema();
                let inputs = schema
                    .inputs
                    .iter()
                    .map(|input| {
                        view.features
                            .iter()
                            .position(|f| f.name == input.name)
                            .ok_or_else(|| {
                                broken(format!(
                                    "view '{}' has no feature '{}'",
                                    view.name, input.name
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let outputs = odfv
                    .features
                    .iter()
                    .map(|feature| {
                        schema
                            .outputs
                            .iter()
                            .position(|o| o.name == feature.name)
                            .ok_or_else(|| {
                                broken(format!("the module has no output '{}'", feature.name))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let stored = ViewSelection::for_write_time(definitions, odfv)
                    .ok_or_else(|| broken("it is not a write-time view".to_string()))?;
                views.push(WriteTimeView {
                    name: odfv.name.clone(),
                    stored,
                    transform,
                    inputs,
                    outputs,
                });
            }
        }
        Ok(WriteTimeViews { views })
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// The records of every write-time view for `rows`, the source view's
    /// rows as they are written.
    pub fn records(&self, project: &str, rows: &ViewRows) -> Result<Vec<KeyedRecord>, Error> {
        let mut records = Vec::new();
        for view in &self.views {
            let features = rows.features();
            let inputs: Vec<ArrayRef> = view
                .inputs
                .iter()
                .filter_map(|&i| features.get(i).cloned())
                .collect();
            let outputs = view
                .transform
                .run(&inputs)
                .map_err(|source| failure(&view.name, source))?;
            let outputs_rows = rows
                .with_features(
                    view.outputs
                        .iter()
                        .filter_map(|&i| outputs.get(i).cloned())
                        .collect(),
                )
                .map_err(|e| OnlineError::Data(e.to_string()))?;
            records.extend(online::records_from_rows(
                project,
                &view.stored,
                &outputs_rows,
            )?);
        }
        Ok(records)
    }
}
