//! One codec for feature values: JSON <-> [`Value`] <-> Arrow, and times as
//! text and numbers ([`time`]). Requests, pushes, request data, responses,
//! `wafer transform test` and the CLI all read and print values through it,
//! so a value means the same on every path (an integer timestamp is epoch
//! seconds everywhere).

pub mod arrow;
pub mod columns;
pub mod time;
mod value;

pub use value::Value;
