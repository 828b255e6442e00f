//! Reading and writing `.safetensors` weight files (f32, f16 and bf16 in).

use half::{bf16, f16};
use ndarray::ArrayD;
use safetensors::Dtype;

use super::{WeightError, Weights};

/// Keys PyTorch exports that carry no weights (BN's batch counter).
fn ignored(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

pub fn load(path: &std::path::Path) -> Result<Weights, WeightError> {
    let name = path.display().to_string();
    let io = |error| WeightError::Io {
        path: name.clone(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    // Read tensor by tensor: the file's bytes are never all held beside
    // the values decoded from them.
    read(std::io::BufReader::new(file), len, &name)
}

pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Weights, WeightError> {
    read(bytes, bytes.len() as u64, name)
}

/// The largest header the safetensors format allows.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in the header.
struct Entry {
    key: String,
    dtype: String,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// The header's entries in file order, checked: known fields, offsets that
/// tile the data exactly, sizes that match dtype and shape.
fn entries(header: &[u8], data_len: u64, name: &str) -> Result<Vec<Entry>, WeightError> {
    let corrupt = |reason: String| WeightError::Corrupt {
        path: name.to_string(),
        reason,
    };
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| corrupt(format!("the header is not a JSON object: {e}")))?;
    let mut out = Vec::new();
    for (key, t) in v {
        if key == "__metadata__" {
            continue;
        }
        let bad = |what: &str| corrupt(format!("tensor `{key}`: {what}"));
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?
            .to_string();
        let shape = t
            .get("shape")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("a shape that is not a list of sizes"))?;
        let offsets = t
            .get("data_offsets")
            .and_then(|d| d.as_array())
            .and_then(|d| Some((d.first()?.as_u64()?, d.get(1)?.as_u64()?, d.len())))
            .filter(|&(s, e, n)| n == 2 && s <= e)
            .ok_or_else(|| bad("data_offsets are not [start, end]"))?;
        let bits: u64 = match dtype.as_str() {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 8,
            "U16" | "I16" | "F16" | "BF16" => 16,
            "U32" | "I32" | "F32" => 32,
            "U64" | "I64" | "F64" => 64,
            _ => return Err(bad(&format!("unknown dtype `{dtype}`"))),
        };
        let bytes = shape
            .iter()
            .try_fold(bits / 8, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad("a shape too large"))?;
        if offsets.1 - offsets.0 != bytes {
            return Err(bad(&format!(
                "{} bytes of data for {dtype} {shape:?}, which takes {bytes}",
                offsets.1 - offsets.0
            )));
        }
        out.push(Entry {
            key,
            dtype,
            shape,
            start: offsets.0,
            end: offsets.1,
        });
    }
    out.sort_by_key(|e| (e.start, e.end));
    let mut at = 0;
    for e in &out {
        if e.start != at {
            return Err(corrupt(format!(
                "tensor `{}` starts at byte {} of the data, expected {at}",
                e.key, e.start
            )));
        }
        at = e.end;
    }
    if at != data_len {
        return Err(corrupt(format!(
            "the header describes {at} bytes of data, the file has {data_len}"
        )));
    }
    Ok(out)
}

/// Read a safetensors stream of `len` bytes.
fn read(mut r: impl std::io::Read, len: u64, name: &str) -> Result<Weights, WeightError> {
    let corrupt = |reason: String| WeightError::Corrupt {
        path: name.to_string(),
        reason,
    };
    let mut n = [0u8; 8];
    r.read_exact(&mut n)
        .map_err(|_| corrupt(format!("{len} bytes: too short for a safetensors header")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > len.saturating_sub(8) {
        return Err(corrupt(format!("a header of {n} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)
        .map_err(|e| corrupt(format!("reading the header: {e}")))?;
    let entries = entries(&header, len - 8 - n, name)?;
    let mut w = Weights::default();
    let mut buf = Vec::new();
    for e in entries {
        buf.resize((e.end - e.start) as usize, 0);
        r.read_exact(&mut buf)
            .map_err(|err| corrupt(format!("tensor `{}`: {err}", e.key)))?;
        if ignored(&e.key) {
            continue;
        }
        let values: Vec<f32> = match e.dtype.as_str() {
            "F32" => buf
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => buf
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "BF16" => buf
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                w.reject(e.key, other.to_string());
                continue;
            }
        };
        let t = ArrayD::from_shape_vec(e.shape, values)
            .map_err(|err| corrupt(format!("tensor `{}`: {err}", e.key)))?;
        w.insert(e.key, t);
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
