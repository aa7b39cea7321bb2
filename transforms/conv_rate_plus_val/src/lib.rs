//! Feast's classic on-demand example: a stored rate plus a request value.

#[wafer_sdk::transform]
pub fn conv_rate_plus_val(conv_rate: f64, val_to_add: i64) -> f64 {
    conv_rate + val_to_add as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(conv_rate_plus_val(0.5, 2), 2.5);
        assert_eq!(conv_rate_plus_val(-1.0, 0), -1.0);
    }
}
