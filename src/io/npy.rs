//! NumPy `.npy` files: float32 (and float64, converted) arrays in C order.

use ndarray::ArrayD;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Read an array; errors name the file and say what was expected.
pub fn read(path: &std::path::Path) -> Result<ArrayD<f32>, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    parse(&bytes).map_err(|e| format!("`{name}` is not a usable .npy file: {e}"))
}

pub fn parse(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("expected the .npy magic `\\x93NUMPY` at the start".into());
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("expected format version 1, 2 or 3, found {v}")),
    };
    let header = bytes.get(start..start + len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = field(header, "descr").ok_or("the header has no 'descr'")?;
    let fortran = field(header, "fortran_order").ok_or("the header has no 'fortran_order'")?;
    let shape = field(header, "shape").ok_or("the header has no 'shape'")?;
    if fortran.trim() != "False" {
        return Err("expected C order (fortran_order: False)".into());
    }
    let shape: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry `{s}`"))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the shape overflows")?;
    let data = &bytes[start + len..];
    let descr = descr.trim().trim_matches('\'');
    let values: Vec<f32> = match descr {
        "<f4" | "|f4" => {
            check_len(data.len(), count, 4)?;
            data.chunks_exact(4)
                .take(count)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<f8" => {
            check_len(data.len(), count, 8)?;
            data.chunks_exact(8)
                .take(count)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect()
        }
        other => {
            return Err(format!(
                "expected little-endian float32 ('<f4') or float64 ('<f8'), found '{other}'"
            ))
        }
    };
    ArrayD::from_shape_vec(shape, values).map_err(|e| e.to_string())
}

fn check_len(have: usize, count: usize, size: usize) -> Result<(), String> {
    let need = count.checked_mul(size).ok_or("the shape overflows")?;
    if have < need {
        return Err(format!(
            "truncated: the shape needs {need} bytes of data, found {have}"
        ));
    }
    Ok(())
}

/// The text of a key's value in the header dict (`{'descr': '<f4', ...}`).
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(&rest[..end])
}

/// Write a float32 array (format version 1).
pub fn to_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    let shape = match a.shape() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with '\n'.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + a.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in a.as_standard_layout().iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn write(path: &std::path::Path, a: &ArrayD<f32>) -> Result<(), String> {
    std::fs::write(path, to_bytes(a)).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = ArrayD::from_shape_fn(vec![2, 3, 4], |d| (d[0] * 100 + d[1] * 10 + d[2]) as f32);
        let b = parse(&to_bytes(&a)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            to_bytes(&a).len() % 16,
            0,
            "header padded, data 4-byte aligned"
        );
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(parse(b"hello").unwrap_err().contains("magic"));
        let a = ArrayD::from_shape_vec(vec![4], vec![1.0f32; 4]).unwrap();
        let mut bytes = to_bytes(&a);
        bytes.truncate(bytes.len() - 3);
        assert!(parse(&bytes).unwrap_err().contains("truncated"));
        let mut ints = to_bytes(&a);
        let at = ints.windows(3).position(|w| w == b"<f4").unwrap();
        ints[at + 1..at + 3].copy_from_slice(b"i8");
        assert!(parse(&ints).unwrap_err().contains("'<i8'"));
    }
}
