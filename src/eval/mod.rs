//! The paper's test-time protocol: a network run on images of any size
//! (fully convolutionally: global pooling then fc is the fc at every
//! position, averaged), several views an image, softmax scores averaged;
//! and scoring a labelled folder.

pub mod data;
pub mod tta;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis, IxDyn};

use crate::backend::{Backend, Executable, Program, Refusal};
use crate::lower::{compile_file, Options};
use crate::passes;
use crate::syntax::SourceMap;
use crate::weights::Weights;

/// Compiled networks kept at once: each holds its own packed weights.
const CACHE: usize = 8;

/// One spec and its weights, compiled once per input shape it is given.
pub struct Networks<'a> {
    spec: PathBuf,
    weights: Weights,
    backend: &'a dyn Backend,
    opt: passes::Options,
    /// Images a network call takes (views are padded up to it).
    pub batch: usize,
    cache: Vec<([usize; 3], Box<dyn Executable>)>,
    /// How many networks were compiled (a folder of 3 sizes compiles 3).
    pub compiled: usize,
    /// The memory a network may take (checked before each compile).
    pub limit: crate::backend::memory::Limit,
}

impl<'a> Networks<'a> {
    pub fn new(
        spec: &Path,
        weights: Weights,
        backend: &'a dyn Backend,
        opt: passes::Options,
        batch: usize,
    ) -> Networks<'a> {
        Networks {
            spec: spec.to_path_buf(),
            weights,
            backend,
            opt,
            batch: batch.max(1),
            cache: Vec::new(),
            compiled: 0,
            limit: crate::backend::memory::Limit::Available,
        }
    }

    fn compile(&self, chw: [usize; 3]) -> Result<Box<dyn Executable>, String> {
        let mut sources = SourceMap::new();
        let opts = Options {
            batch: self.batch,
            input: Some(chw),
        };
        let at = format!(
            "{} at {}x{}x{}",
            self.spec.display(),
            chw[0],
            chw[1],
            chw[2]
        );
        let g = compile_file(&self.spec, &opts, &mut sources)
            .map_err(|d| format!("{at}: {}", d.render(&sources, false)))?;
        let bound = self
            .weights
            .clone()
            .bind(&g, "weights")
            .map_err(|e| format!("{at}: {e}"))?;
        let m = passes::Module {
            graph: g,
            weights: Some(bound),
        };
        let (p, _) = passes::prepare(m, &self.opt).map_err(|e| format!("{at}: {e}"))?;
        let program = Program::lower(p).map_err(|e| format!("{at}: {e}"))?;
        // What it will allocate, before it does (a 640-pixel scale of a
        // wide image is several 224 networks).
        let mut f = self.backend.footprint(&program);
        f.add("input", 4 * program.input.len() as u64, true);
        f.add("logits", 4 * program.output.len() as u64, true);
        crate::backend::memory::check(&f, self.batch, &program.name, self.limit)
            .map_err(|e| format!("{at}: {e}"))?;
        self.backend.compile_owned(program).map_err(|Refusal(why)| {
            let why: Vec<String> = why.iter().map(|e| e.to_string()).collect();
            format!("{at}: {}", why.join("; "))
        })
    }

    /// Logits of `x` (N x C x H x W, any N, any H x W): run `batch` at a
    /// time on the network for its size, the last call zero-padded.
    pub fn logits(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
        let s = x.shape();
        if s.len() != 4 || s[0] == 0 {
            return Err(format!("expected an NxCxHxW batch, found {s:?}"));
        }
        let chw = [s[1], s[2], s[3]];
        let k = match self.cache.iter().position(|(c, _)| *c == chw) {
            Some(k) => k,
            None => {
                if self.cache.len() >= CACHE {
                    self.cache.remove(0);
                }
                let e = self.compile(chw)?;
                self.compiled += 1;
                self.cache.push((chw, e));
                self.cache.len() - 1
            }
        };
        let (b, n) = (self.batch, s[0]);
        let mut out = Vec::new();
        for start in (0..n).step_by(b) {
            let end = (start + b).min(n);
            let mut chunk = ArrayD::<f32>::zeros(IxDyn(&[b, chw[0], chw[1], chw[2]]));
            chunk
                .slice_axis_mut(Axis(0), (0..end - start).into())
                .assign(&x.slice_axis(Axis(0), (start..end).into()));
            let y = self.cache[k].1.run(&chunk).map_err(|e| e.to_string())?;
            out.push(y.slice_axis(Axis(0), (0..end - start).into()).to_owned());
        }
        let views: Vec<_> = out.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())
    }
}

/// Softmax over the last axis of an N x classes array.
pub fn softmax(logits: &ArrayD<f32>) -> ArrayD<f32> {
    let mut p = logits.clone();
    for mut row in p.axis_iter_mut(Axis(0)) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s: f32 = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

/// The scores of each image (its views' softmax, averaged: the paper's
/// rule). Views of one shape run together, across images.
pub fn scores(nets: &mut Networks, images: &[Vec<ArrayD<f32>>]) -> Result<Vec<Vec<f32>>, String> {
    let mut groups: HashMap<Vec<usize>, Vec<(usize, usize)>> = HashMap::new();
    for (i, views) in images.iter().enumerate() {
        for (j, v) in views.iter().enumerate() {
            groups.entry(v.shape().to_vec()).or_default().push((i, j));
        }
    }
    let mut keys: Vec<_> = groups.keys().cloned().collect();
    keys.sort();
    let mut sums: Vec<Option<Vec<f32>>> = vec![None; images.len()];
    for k in keys {
        let members = &groups[&k];
        let parts: Vec<_> = members.iter().map(|&(i, j)| images[i][j].view()).collect();
        let x = ndarray::concatenate(Axis(0), &parts).map_err(|e| e.to_string())?;
        let p = softmax(&nets.logits(&x)?);
        for (&(i, _), row) in members.iter().zip(p.axis_iter(Axis(0))) {
            match &mut sums[i] {
                Some(s) => s.iter_mut().zip(row.iter()).for_each(|(a, &b)| *a += b),
                None => sums[i] = Some(row.iter().copied().collect()),
            }
        }
    }
    sums.into_iter()
        .zip(images)
        .map(|(s, views)| {
            let mut s = s.ok_or("an image with no views")?;
            let n = views.len() as f32;
            s.iter_mut().for_each(|v| *v /= n);
            Ok(s)
        })
        .collect()
}

/// Class indices by descending score (ties: the lower index first).
pub fn ranked(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}
