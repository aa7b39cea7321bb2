//! Every type the ABI carries, in and out: the tests send each type through
//! a lookup, a training set and this function compiled natively, and expect
//! the same bits. Floats come back as they were given (no arithmetic), so
//! a NaN with a payload shows whether the SDK makes NaN outputs canonical.

pub use wafer_sdk::Timestamp;

#[derive(wafer_sdk::Outputs)]
pub struct Echo {
    /// The input, untouched.
    pub f64_out: f64,
    /// The input, untouched.
    pub f32_out: f32,
    /// The input times 3 (wrapping).
    pub i32_out: i32,
    /// The input plus 1 (wrapping).
    pub i64_out: i64,
    /// The input negated.
    pub bool_out: bool,
    /// One microsecond later.
    pub ts_out: Timestamp,
    /// The input, then its length in characters.
    pub str_out: String,
    /// The input with one byte appended (its length, modulo 128).
    pub bytes_out: Vec<u8>,
    /// The elements in reverse order.
    pub list_i32_out: Vec<i32>,
    /// The elements in reverse order.
    pub list_i64_out: Vec<i64>,
    /// The elements in reverse order, untouched.
    pub list_f64_out: Vec<f64>,
    /// `None` for an empty list, else the input.
    pub list_f32_out: Option<Vec<f32>>,
}

#[allow(clippy::too_many_arguments)]
#[wafer_sdk::transform]
pub fn every_type(
    f64_in: f64,
    f32_in: f32,
    i32_in: i32,
    i64_in: i64,
    bool_in: bool,
    ts_in: Timestamp,
    str_in: &str,
    bytes_in: &[u8],
    list_i32_in: &[i32],
    list_i64_in: &[i64],
    list_f64_in: &[f64],
    list_f32_in: Option<Vec<f32>>,
) -> Echo {
    let mut bytes = bytes_in.to_vec();
    bytes.push((bytes_in.len() % 128) as u8);
    Echo {
        f64_out: f64_in,
        f32_out: f32_in,
        i32_out: i32_in.wrapping_mul(3),
        i64_out: i64_in.wrapping_add(1),
        bool_out: !bool_in,
        ts_out: Timestamp {
            micros: ts_in.micros.wrapping_add(1),
        },
        str_out: format!("{str_in}{}", str_in.chars().count()),
        bytes_out: bytes,
        list_i32_out: list_i32_in.iter().rev().copied().collect(),
        list_i64_out: list_i64_in.iter().rev().copied().collect(),
        list_f64_out: list_f64_in.iter().rev().copied().collect(),
        list_f32_out: list_f32_in.filter(|l| !l.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes() {
        let out = every_type(
            1.5,
            2.5,
            i32::MAX,
            i64::MAX,
            true,
            Timestamp { micros: -1 },
            "hé",
            b"ab",
            &[1, 2],
            &[3, 4],
            &[0.5, -0.0],
            Some(vec![]),
        );
        assert_eq!(out.i32_out, i32::MAX.wrapping_mul(3));
        assert_eq!(out.i64_out, i64::MIN);
        assert!(!out.bool_out);
        assert_eq!(out.ts_out.micros, 0);
        assert_eq!(out.str_out, "hé2");
        assert_eq!(out.bytes_out, b"ab\x02");
        assert_eq!(out.list_i32_out, [2, 1]);
        assert_eq!(out.list_f64_out[0].to_bits(), (-0.0f64).to_bits());
        assert_eq!(out.list_f32_out, None);
    }
}
