//! Write Wafer on-demand feature transforms as plain Rust functions.
//!
//! ```ignore
//! #[wafer_sdk::transform]
//! fn conv_rate_plus_val(conv_rate: f64, val_to_add: i64) -> f64 {
//!     conv_rate + val_to_add as f64
//! }
//! ```
//!
//! The attribute generates everything Wafer needs when the crate is built
//! for `wasm32-unknown-unknown`: the exports of ABI v1 (see `ABI.md` beside
//! this crate), the schema custom section, the row loop, null handling and
//! the panic hook. Natively the function stays an ordinary function, so it
//! can be unit tested and compared with the module.
//!
//! Parameters are named after input features or request fields. Several
//! outputs come from a returned struct with `#[derive(wafer_sdk::Outputs)]`.
//! `Option<T>` marks nullable inputs and outputs; a null reaching a
//! parameter that is not an `Option` makes every output of that row null.
//!
//! Supported types: `bool`, `i32`, `i64`, `f32`, `f64`, [`Timestamp`],
//! `String` (or `&str` as an input), `Vec<u8>` (or `&[u8]`), and lists
//! `Vec<f32>`, `Vec<f64>`, `Vec<i32>`, `Vec<i64>` (or slices as inputs).

#![warn(missing_docs)]

pub use wafer_sdk_macros::{transform, Outputs};

/// Math functions (`sin`, `cos`, `asin`, `exp`, `ln`, ...) from the `libm`
/// crate. Use these rather than `f64::sin` and friends: natively those call
/// the platform's C library, whose last bit can differ from the pure Rust
/// implementation compiled into the module. With `math` both agree exactly.
pub mod math {
    pub use libm::*;
}

#[doc(hidden)]
pub mod __private;

/// A point in time: microseconds since the Unix epoch, UTC. The type of
/// `timestamp` features and request fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
}

/// A type that can be a transform parameter. Implemented for the supported
/// types and for `Option` of them.
pub trait Param<'a>: Sized {
    #[doc(hidden)]
    const TYPE: &'static str;
    #[doc(hidden)]
    const NULLABLE: bool;
    /// `None` when a null reached a parameter that cannot hold one.
    #[doc(hidden)]
    fn get(column: &__private::InputColumn<'a>, row: usize) -> Option<Self>;
}

/// A type that can be one output. Implemented for the supported types and
/// for `Option` of them.
pub trait OutputValue {
    #[doc(hidden)]
    const TYPE: &'static str;
    #[doc(hidden)]
    const NULLABLE: bool;
    #[doc(hidden)]
    const ELEMENT_WIDTH: usize;
    #[doc(hidden)]
    fn write(self, column: &mut __private::OutputColumn, row: usize);
}

/// The outputs of a transform that returns a struct. Derive it:
/// `#[derive(wafer_sdk::Outputs)]`; each field is one output, named after
/// the field.
pub trait Outputs {
    #[doc(hidden)]
    const SCHEMA: &'static [u8];
    #[doc(hidden)]
    const COUNT: usize;
    #[doc(hidden)]
    const ELEMENT_WIDTHS: &'static [usize];
    #[doc(hidden)]
    fn write(self, columns: &mut [__private::OutputColumn], row: usize);
}

use __private::{InputColumn, OutputColumn, Scalar, ScalarOut};

impl<'a, T: Scalar<'a>> Param<'a> for T {
    const TYPE: &'static str = T::TYPE;
    const NULLABLE: bool = false;
    fn get(column: &InputColumn<'a>, row: usize) -> Option<Self> {
        column.is_valid(row).then(|| T::read(column, row))
    }
}

impl<'a, T: Scalar<'a>> Param<'a> for Option<T> {
    const TYPE: &'static str = T::TYPE;
    const NULLABLE: bool = true;
    fn get(column: &InputColumn<'a>, row: usize) -> Option<Self> {
        Some(column.is_valid(row).then(|| T::read(column, row)))
    }
}

impl<T: ScalarOut> OutputValue for T {
    const TYPE: &'static str = T::TYPE;
    const NULLABLE: bool = false;
    const ELEMENT_WIDTH: usize = T::ELEMENT_WIDTH;
    fn write(self, column: &mut OutputColumn, row: usize) {
        self.put(column, row);
    }
}

impl<T: ScalarOut> OutputValue for Option<T> {
    const TYPE: &'static str = T::TYPE;
    const NULLABLE: bool = true;
    const ELEMENT_WIDTH: usize = T::ELEMENT_WIDTH;
    fn write(self, column: &mut OutputColumn, row: usize) {
        match self {
            Some(value) => value.put(column, row),
            None => column.put_null(row),
        }
    }
}
