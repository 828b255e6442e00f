//! Reading and writing `.safetensors` weight files (f32, f16 and bf16 in).

use half::{bf16, f16};
use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors};

use super::{WeightError, Weights};

/// Keys PyTorch exports that carry no weights (BN's batch counter).
fn ignored(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

pub fn load(path: &std::path::Path) -> Result<Weights, WeightError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| WeightError::Io {
        path: name.clone(),
        error,
    })?;
    from_bytes(&bytes, &name)
}

pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Weights, WeightError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| WeightError::Corrupt {
        path: name.to_string(),
        reason: e.to_string(),
    })?;
    let mut w = Weights::default();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, view) in tensors {
        if ignored(&key) {
            continue;
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                w.reject(key, format!("{other:?}"));
                continue;
            }
        };
        let shape = view.shape().to_vec();
        let t = ArrayD::from_shape_vec(shape, values).map_err(|e| WeightError::Corrupt {
            path: name.to_string(),
            reason: format!("tensor `{key}`: {e}"),
        })?;
        w.insert(key, t);
    }
    Ok(w)
}

/// Serialize as f32 safetensors.
pub fn to_bytes(w: &Weights) -> Result<Vec<u8>, String> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(k, t)| {
            let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(k, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.as_str(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

pub fn save(w: &Weights, path: &std::path::Path) -> Result<(), String> {
    let bytes = to_bytes(w)?;
    std::fs::write(path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}
