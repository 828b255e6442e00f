//! The fc at small batches: `out[i, o] = x[i, :] . W[o, :] + b[o]`, the
//! weights read once. As a GEMM the batch would be B's columns, padded to
//! NR = 32: at batch 1, 32 times the multiplies, and the weights (2-8 MB
//! in ResNet-18/50, from memory) read through broadcasts. Here the weights
//! are packed in strips of [`SW`] outputs, k-major (`[strip][k][SW]`), so
//! that a strip is one contiguous stream, and each input value scales a
//! strip's row of weights. This is the frame; the strip loop is stamped into
//! each kernel set ([`strip`] over its [`Lanes`]).

use super::kernels::epilogue::{self, Lanes};
use super::kernels::Kernels;
use super::team::{TaskPtr, Team};

/// Outputs a strip holds: whole vectors of every set (8 and 16 lanes).
pub const SW: usize = 32;

/// The largest batch the fc runs as GEMVs. ResNet-50's fc (2,048 x 1,000)
/// on the AVX2 host, 2026-12-02, GEMV against GEMM: 0.80 / 1.41 ms at batch
/// 4, 0.97 / 1.51 at 8, 1.61 / 1.33 at 16 (batch 1: 0.49 / 1.39).
pub const MAX_BATCH: usize = 8;

/// Strips per task: ResNet-50's 1,000 outputs as 8 tasks of 4 strips.
const STRIPS_PER_TASK: usize = 4;

/// fc weights packed in strips of [`SW`] outputs; outputs past `m` are zero.
#[derive(Clone, Debug)]
pub struct Strips {
    pub data: Vec<f32>,
    pub m: usize,
    pub k: usize,
}

impl Strips {
    /// Pack a row-major `m x k` matrix (`W[o][f]`).
    pub fn pack(w: &[f32], m: usize, k: usize) -> Strips {
        let strips = m.div_ceil(SW);
        let mut data = vec![0.0f32; strips * k * SW];
        for (o, row) in w.chunks_exact(k).take(m).enumerate() {
            let (s, j) = (o / SW, o % SW);
            for (kk, &v) in row.iter().enumerate() {
                data[(s * k + kk) * SW + j] = v;
            }
        }
        Strips { data, m, k }
    }

    fn strips(&self) -> usize {
        self.m.div_ceil(SW)
    }
}

/// One strip for one image.
pub struct StripArgs {
    /// The strip's `k x SW` weights.
    pub w: *const f32,
    pub k: usize,
    /// The image's `k` inputs.
    pub x: *const f32,
    /// The strip's biases (`cols` of them), or null.
    pub bias: *const f32,
    /// The strip's outputs in the image's row.
    pub out: *mut f32,
    /// Outputs of the strip inside `m` (`SW` but in the last strip).
    pub cols: usize,
}

/// `out[..cols] = x . w + bias` for one strip, the sums in k order.
///
/// # Safety
/// The pointers hold what [`StripArgs`] says; the CPU has `L`'s features
/// (call it inside a set's `#[target_feature]` function).
#[inline(always)]
pub unsafe fn strip<L: Lanes>(a: &StripArgs) {
    debug_assert!(SW.is_multiple_of(L::N));
    // SAFETY: the caller's promise.
    unsafe {
        let mut acc = [L::splat(0.0); SW];
        let acc = &mut acc[..SW / L::N];
        for kk in 0..a.k {
            let s = *a.x.add(kk);
            let row = a.w.add(kk * SW);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = L::load(row.add(v * L::N)).mul_add(s, *acc);
            }
        }
        for (v, &acc) in acc.iter().enumerate() {
            let at = v * L::N;
            if at >= a.cols {
                break;
            }
            let n = (a.cols - at).min(L::N);
            let whole = n == L::N;
            let bias = match (a.bias.is_null(), whole) {
                (true, _) => L::splat(0.0),
                (false, true) => L::load(a.bias.add(at)),
                (false, false) => L::load_first(a.bias.add(at), n),
            };
            let r = epilogue::apply(acc, bias, None, false);
            if whole {
                r.store(a.out.add(at));
            } else {
                r.store_first(a.out.add(at), n);
            }
        }
    }
}

/// `out[i, :] = W x[i, :] + bias` for the `n` images, strips shared out
/// over the team.
///
/// # Safety
/// `x` holds `n x k` values, `out` has room for `n x m`; `bias`, where
/// given, holds `m`; the set runs here.
pub unsafe fn run(
    kernels: &Kernels,
    w: &Strips,
    x: *const f32,
    n: usize,
    bias: Option<&[f32]>,
    out: *mut f32,
    team: &Team,
) {
    let (m, k) = (w.m, w.k);
    let strips = w.strips();
    let tasks = strips.div_ceil(STRIPS_PER_TASK);
    // SAFETY: each task writes its own strips' outputs; the rest is read.
    let (x, out) = unsafe { (TaskPtr::reading(x), TaskPtr::new(out)) };
    team.run(tasks, &|t| {
        for s in t * STRIPS_PER_TASK..((t + 1) * STRIPS_PER_TASK).min(strips) {
            let o = s * SW;
            for i in 0..n {
                let a = StripArgs {
                    w: w.data[s * k * SW..].as_ptr(),
                    k,
                    x: x.get().wrapping_add(i * k),
                    bias: bias.map_or(std::ptr::null(), |b| b[o..].as_ptr()),
                    out: out.get().wrapping_add(i * m + o),
                    cols: (m - o).min(SW),
                };
                // SAFETY: strip s of the packed weights; image i's inputs and
                // its row of outputs (the caller's promise), strip s's part
                // written by this task alone.
                unsafe { (kernels.gemm.gemv)(&a) };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::jit::kernels;

    #[test]
    fn every_set_equals_a_naive_product() {
        let team = Team::new(2).expect("a team");
        for (m, k, n) in [(1000, 512, 1), (10, 64, 4), (33, 7, 2), (31, 3, 3)] {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let b: Vec<f32> = (0..m).map(|i| i as f32 / 16.0).collect();
            let packed = Strips::pack(&w, m, k);
            for set in kernels::available() {
                for bias in [None, Some(&b[..])] {
                    let mut out = vec![f32::NAN; n * m + 1];
                    // SAFETY: sizes as `run` asks; the set runs here.
                    unsafe { run(set, &packed, x.as_ptr(), n, bias, out.as_mut_ptr(), &team) };
                    for i in 0..n {
                        for o in 0..m {
                            let mut want = bias.map_or(0.0, |b| b[o]);
                            want += (0..k).map(|f| x[i * k + f] * w[o * k + f]).sum::<f32>();
                            let got = out[i * m + o];
                            assert!(
                                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                                "{set:?} m {m} k {k} image {i} output {o}: {got} against {want}"
                            );
                        }
                    }
                    assert!(out[n * m].is_nan(), "{set:?}: wrote past the outputs");
                }
            }
        }
    }

    #[test]
    fn nan_inputs_reach_the_outputs() {
        let team = Team::new(1).expect("a team");
        let (m, k) = (40, 5);
        let w = vec![1.0f32; m * k];
        let x = [1.0, f32::NAN, 0.0, 2.0, 3.0];
        let packed = Strips::pack(&w, m, k);
        for set in kernels::available() {
            let mut out = vec![0.0f32; m];
            // SAFETY: sizes as `run` asks; the set runs here.
            unsafe { run(set, &packed, x.as_ptr(), 1, None, out.as_mut_ptr(), &team) };
            assert!(out.iter().all(|v| v.is_nan()), "{set:?}: {out:?}");
        }
    }
}
