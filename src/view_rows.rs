//! [`ViewRows`]: the one batch layout of a feature view's rows as they are
//! written online. Materialization reads it from DuckDB (the latest-row
//! query selects columns in this order), pushes build it from JSON,
//! write-time on-demand views swap its features for their outputs, and the
//! online store turns it into records.
//!
//! Columns, in order: the view's join keys (declared order), the event time
//! and the created time (both `Int64` UTC nanoseconds; created may be null),
//! then the features (declared order).

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;

/// Why a batch does not have the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "expected {expected} columns (join keys, event time, created time, features), got {got}"
    )]
    Columns { expected: usize, got: usize },
    #[error("event and created times must be Int64 nanoseconds")]
    Times,
    #[error("columns of unequal length: {0}")]
    Arrow(String),
}

/// A view's rows: join keys, event time, created time, features.
#[derive(Debug, Clone)]
pub struct ViewRows {
    keys: Vec<ArrayRef>,
    event: Int64Array,
    created: Int64Array,
    features: Vec<ArrayRef>,
}

impl ViewRows {
    /// Assembles the parts; every column must have the same length.
    pub fn new(
        keys: Vec<ArrayRef>,
        event: Int64Array,
        created: Int64Array,
        features: Vec<ArrayRef>,
    ) -> Result<Self, LayoutError> {
        let rows = event.len();
        let lengths = keys
            .iter()
            .chain(&features)
            .map(|c| c.len())
            .chain([created.len()]);
        if let Some(other) = lengths.into_iter().find(|&n| n != rows) {
            return Err(LayoutError::Arrow(format!(
                "{rows} event times, a column of {other}"
            )));
        }
        Ok(ViewRows {
            keys,
            event,
            created,
            features,
        })
    }

    /// Reads a batch laid out as this module describes, for a view with
    /// `join_keys` keys and `features` features.
    pub fn from_batch(
        batch: &RecordBatch,
        join_keys: usize,
        features: usize,
    ) -> Result<Self, LayoutError> {
        let expected = join_keys + 2 + features;
        if batch.num_columns() != expected {
            return Err(LayoutError::Columns {
                expected,
                got: batch.num_columns(),
            });
        }
        let time = |i: usize| {
            batch
                .column(i)
                .as_primitive_opt::<Int64Type>()
                .cloned()
                .ok_or(LayoutError::Times)
        };
        Ok(ViewRows {
            keys: batch.columns()[..join_keys].to_vec(),
            event: time(join_keys)?,
            created: time(join_keys + 1)?,
            features: batch.columns()[join_keys + 2..].to_vec(),
        })
    }

    pub fn num_rows(&self) -> usize {
        self.event.len()
    }

    pub fn keys(&self) -> &[ArrayRef] {
        &self.keys
    }

    /// Event times, UTC nanoseconds.
    pub fn event_times(&self) -> &Int64Array {
        &self.event
    }

    /// Created times, UTC nanoseconds; null where the source has none.
    pub fn created_times(&self) -> &Int64Array {
        &self.created
    }

    pub fn features(&self) -> &[ArrayRef] {
        &self.features
    }

    /// The same keys and times with other features: a write-time on-demand
    /// view's outputs, stored like the rows they were computed from.
    pub fn with_features(&self, features: Vec<ArrayRef>) -> Result<Self, LayoutError> {
        ViewRows::new(
            self.keys.clone(),
            self.event.clone(),
            self.created.clone(),
            features,
        )
    }
}
