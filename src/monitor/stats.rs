//! The drift statistics, from counts DuckDB computed: the population
//! stability index, the Kolmogorov-Smirnov p-value and the Jensen-Shannon
//! distance.

/// A proportion of zero is replaced by this before the logarithm, as
/// Evidently does, so an empty bin counts as rare rather than infinite.
const EMPTY_BIN: f64 = 1e-4;

/// PSI of `current` against `reference`, bin by bin (counts, same bins):
/// the sum of (c - r) * ln(c / r) over the bins' proportions.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let total = |counts: &[u64]| counts.iter().sum::<u64>().max(1) as f64;
    let (r_total, c_total) = (total(reference), total(current));
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = (r as f64 / r_total).max(EMPTY_BIN);
            let c = (c as f64 / c_total).max(EMPTY_BIN);
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// The two-sided p-value of a two-sample Kolmogorov-Smirnov statistic `d`
/// for samples of `n` and `m` values: the asymptotic Kolmogorov
/// distribution with Stephens' small-sample correction (Numerical Recipes'
/// `kstwo`).
pub fn ks_p_value(d: f64, n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let effective = ((n as f64) * (m as f64) / ((n + m) as f64)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * d;
    kolmogorov_q(lambda)
}

/// Q_KS(lambda) = 2 * sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lambda^2).
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    let mut previous = 0.0f64;
    for j in 1..=100 {
        let term = sign * 2.0 * (-2.0 * (j as f64).powi(2) * lambda * lambda).exp();
        sum += term;
        if term.abs() <= 1e-10 * previous.abs() || term.abs() <= 1e-16 * sum.abs() {
            return sum.clamp(0.0, 1.0);
        }
        previous = term;
        sign = -sign;
    }
    // Did not converge: only for lambda near 0, where Q is 1.
    1.0
}

/// The Jensen-Shannon distance (the square root of the divergence, with
/// base-2 logarithms, so in [0, 1]) between two distributions given as
/// counts over the same categories.
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> f64 {
    let total = |counts: &[u64]| counts.iter().sum::<u64>() as f64;
    let (r_total, c_total) = (total(reference), total(current));
    if r_total == 0.0 || c_total == 0.0 {
        return 0.0;
    }
    let mut divergence = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let p = r as f64 / r_total;
        let q = c as f64 / c_total;
        let m = (p + q) / 2.0;
        if p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    divergence.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_equal_proportions_and_grows_with_a_shift() {
        assert!(psi(&[10, 20, 30], &[100, 200, 300]).abs() < 1e-12);
        // By hand: (0.5-0.25)ln(2) + (0.5-0.75)ln(2/3).
        let expected = 0.25 * 2f64.ln() + (-0.25) * (0.5f64 / 0.75).ln();
        assert!((psi(&[1, 3], &[1, 1]) - expected).abs() < 1e-12);
    }

    #[test]
    fn ks_p_value_matches_known_values() {
        // Q_KS(1.36) is about 0.0495 (the 5% critical value of lambda).
        assert!((kolmogorov_q(1.358) - 0.05).abs() < 1e-3);
        assert!((kolmogorov_q(1.628) - 0.01).abs() < 5e-4);
        assert_eq!(ks_p_value(0.0, 100, 100), 1.0);
        assert!(ks_p_value(0.5, 1000, 1000) < 1e-10);
    }

    #[test]
    fn jensen_shannon_is_bounded() {
        assert_eq!(jensen_shannon(&[5, 5], &[10, 10]), 0.0);
        assert!((jensen_shannon(&[1, 0], &[0, 1]) - 1.0).abs() < 1e-12);
    }
}
