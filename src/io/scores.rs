//! What callers make of logits: softmax scores and the top classes. Backends
//! return logits; this is the one place scores are computed from them.

use ndarray::{Array2, ArrayView2};

/// Softmax of each row, in f64 for the sum (max-subtracted, so large logits
/// do not overflow). A row with a NaN is all NaN, as in PyTorch.
pub fn softmax(logits: ArrayView2<f32>) -> Array2<f32> {
    let mut out = logits.to_owned();
    for mut row in out.rows_mut() {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
        row.mapv_inplace(|v| (((v - m) as f64).exp() / sum) as f32);
    }
    out
}

/// The indices of the `k` largest values, largest first (NaN last).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        row[b]
            .partial_cmp(&row[a])
            .unwrap_or_else(|| row[a].is_nan().cmp(&row[b].is_nan()))
    });
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_nan() {
        let x = ndarray::arr2(&[
            [1.0f32, 2.0, 3.0],
            [1000.0, 1000.0, 0.0],
            [f32::NAN, 0.0, 1.0],
        ]);
        let p = softmax(x.view());
        for r in 0..2 {
            assert!((p.row(r).sum() - 1.0).abs() < 1e-6);
        }
        assert!((p[[1, 0]] - 0.5).abs() < 1e-6);
        assert!(p.row(2).iter().all(|v| v.is_nan()));
        assert_eq!(top_k(&[0.1, f32::NAN, 0.7, 0.2], 3), vec![2, 3, 0]);
    }
}
