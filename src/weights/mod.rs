//! Weights keyed by the IR's names (torchvision's state_dict keys), checked
//! against the graph before anything runs.

pub mod file;
pub mod init;

use std::collections::BTreeMap;
use std::fmt;

use ndarray::ArrayD;

use crate::ir::Graph;

/// A weight file for graph `g`: `.safetensors` by state_dict key, or an
/// ONNX model's initializers bound to `g` by structure.
pub fn load_for(path: &std::path::Path, g: &Graph) -> Result<Weights, String> {
    // Tensors side by side on 2 MB pages, which the JIT's store can take.
    let _carving = crate::pages::Carving::begin();
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if !is_onnx {
        return file::load(path).map_err(|e| e.to_string());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    crate::onnx::import::weights_for(&bytes, &path.display().to_string(), g)
}

/// Tensors by state_dict key, as f32.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, ArrayD<f32>>,
    /// Tensors read with a dtype we do not compute in: key and dtype.
    rejected: Vec<(String, String)>,
}

impl Weights {
    pub fn insert(&mut self, key: String, t: ArrayD<f32>) {
        self.tensors.insert(key, t);
    }
    pub fn reject(&mut self, key: String, dtype: String) {
        self.rejected.push((key, dtype));
    }
    pub fn get(&self, key: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ArrayD<f32>)> {
        self.tensors.iter()
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Check every expected tensor is here with its shape and nothing else
    /// is: the only way to get [`BoundWeights`], which the backends take.
    pub fn bind(self, g: &Graph, source: &str) -> Result<BoundWeights, WeightError> {
        let mut m = Mismatch {
            source: source.to_string(),
            network: g.name.clone(),
            ..Mismatch::default()
        };
        let expected = expected(g);
        for (key, shape) in &expected {
            if self.rejected.iter().any(|(k, _)| k == key) {
                continue;
            }
            match self.tensors.get(key) {
                None => m.missing.push((key.clone(), shape.clone())),
                Some(t) if t.shape() != shape.as_slice() => {
                    m.misshaped
                        .push((key.clone(), shape.clone(), t.shape().to_vec()))
                }
                Some(_) => {}
            }
        }
        for (key, t) in &self.tensors {
            if !expected.iter().any(|(k, _)| k == key) {
                m.unexpected.push((key.clone(), t.shape().to_vec()));
            }
        }
        m.wrong_dtype = self.rejected.clone();
        m.expected = expected.len();
        m.found = self.tensors.len() + self.rejected.len();
        if m.missing.is_empty()
            && m.misshaped.is_empty()
            && m.unexpected.is_empty()
            && m.wrong_dtype.is_empty()
        {
            Ok(BoundWeights { weights: self })
        } else {
            Err(WeightError::Mismatch(Box::new(m)))
        }
    }
}

/// Weights known to fit one graph exactly.
#[derive(Clone, Debug)]
pub struct BoundWeights {
    weights: Weights,
}

impl BoundWeights {
    /// The tensor `node.suffix`; present by construction.
    pub fn param(&self, node: &str, suffix: &str) -> Option<&ArrayD<f32>> {
        self.weights.get(&format!("{node}.{suffix}"))
    }
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
    /// For passes that rewrite weights; they keep the binding exact, and the
    /// pass manager checks it after every pass.
    pub fn take(&mut self, key: &str) -> Option<ArrayD<f32>> {
        self.weights.tensors.remove(key)
    }
    pub fn put(&mut self, key: String, t: ArrayD<f32>) {
        self.weights.tensors.insert(key, t);
    }
    /// Whether these weights still fit `g` exactly (names and shapes).
    pub fn fits(&self, g: &Graph) -> Result<(), String> {
        let expected = expected(g);
        if expected.len() != self.weights.len() {
            return Err(format!(
                "{} weight tensors for {} parameters",
                self.weights.len(),
                expected.len()
            ));
        }
        for (k, shape) in expected {
            match self.weights.get(&k) {
                Some(t) if t.shape() == shape.as_slice() => {}
                Some(t) => {
                    return Err(format!(
                        "`{k}` has shape {:?}, expected {shape:?}",
                        t.shape()
                    ))
                }
                None => return Err(format!("no weight `{k}`")),
            }
        }
        Ok(())
    }
}

/// Zero weights that fit `g` (for compiling without weights, e.g. `--emit clif`).
pub fn zeros(g: &Graph) -> BoundWeights {
    let mut w = Weights::default();
    for (k, shape) in expected(g) {
        w.insert(k, ArrayD::zeros(shape));
    }
    BoundWeights { weights: w }
}

/// Every parameter tensor the graph needs: key and shape, in graph order.
pub fn expected(g: &Graph) -> Vec<(String, Vec<usize>)> {
    g.nodes()
        .flat_map(|(_, n)| {
            n.op.params()
                .into_iter()
                .map(move |p| (format!("{}.{}", n.name, p.suffix), p.shape))
        })
        .collect()
}

/// What is wrong with a weights file, all at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    pub source: String,
    pub network: String,
    pub expected: usize,
    pub found: usize,
    pub missing: Vec<(String, Vec<usize>)>,
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Key, expected shape, found shape.
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Key and the dtype found.
    pub wrong_dtype: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum WeightError {
    Io {
        path: String,
        error: std::io::Error,
    },
    /// Not a safetensors file, truncated, or inconsistent.
    Corrupt {
        path: String,
        reason: String,
    },
    Mismatch(Box<Mismatch>),
}

fn dims(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The first few items of a list, then how many more.
fn listing<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "  {title} ({}):", items.len())?;
    for it in items.iter().take(8) {
        writeln!(f, "    {}", show(it))?;
    }
    if items.len() > 8 {
        writeln!(f, "    ... and {} more", items.len() - 8)?;
    }
    Ok(())
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightError::Io { path, error } => write!(f, "cannot read weights `{path}`: {error}"),
            WeightError::Corrupt { path, reason } => write!(
                f,
                "`{path}` is not a readable safetensors file: {reason}\n  hint: export weights with safetensors.torch.save_file(model.state_dict(), \"{path}\")"
            ),
            WeightError::Mismatch(m) => {
                writeln!(
                    f,
                    "weights `{}` do not fit network `{}` ({} tensors expected, {} found); nothing was run:",
                    m.source, m.network, m.expected, m.found
                )?;
                listing(f, "missing", &m.missing, |(k, s)| format!("{k} {}", dims(s)))?;
                listing(f, "unexpected", &m.unexpected, |(k, s)| format!("{k} {}", dims(s)))?;
                listing(f, "wrong shape", &m.misshaped, |(k, e, s)| {
                    format!("{k}: expected {}, found {}", dims(e), dims(s))
                })?;
                listing(f, "wrong dtype", &m.wrong_dtype, |(k, d)| {
                    format!("{k}: expected F32, F16 or BF16, found {d}")
                })?;
                write!(
                    f,
                    "  hint: keys follow torchvision's state_dict (`layer2.0.downsample.0.weight`); \
                     `resnetc compile SPEC -o -` lists the network's values"
                )
            }
        }
    }
}

impl std::error::Error for WeightError {}
