//! NumPy `.npy` files: float32 and float64 arrays (converted to f32), either
//! byte order, C or Fortran order. Whatever the bytes, reading gives an
//! array or an error that says what is wrong; nothing is allocated for the
//! data before the header's shape is checked against the bytes present.

use ndarray::{ArrayD, ShapeBuilder};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The most dimensions an array may have here.
const MAX_DIMS: usize = 32;

/// Read an array; errors name the file and say what was expected.
pub fn read(path: &std::path::Path) -> Result<ArrayD<f32>, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    parse(&bytes).map_err(|e| format!("`{name}` is not a usable .npy file: {e}"))
}

/// The header's fields.
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

pub fn parse(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("expected the .npy magic `\\x93NUMPY` at the start".into());
    }
    let major = bytes[6];
    let (len, start): (usize, usize) = match major {
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
    let header = start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let Header {
        descr,
        fortran,
        shape,
    } = header_fields(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("the shape {shape:?} has more elements than memory can address"))?;
    let data = &bytes[start + len..];
    let (size, big, float64) = match descr.as_str() {
        "<f4" | "|f4" | "=f4" => (4, false, false),
        ">f4" => (4, true, false),
        "<f8" | "=f8" => (8, false, true),
        ">f8" => (8, true, true),
        other => {
            return Err(format!(
                "expected float32 ('<f4', '>f4') or float64 ('<f8', '>f8'), found '{other}'"
            ))
        }
    };
    let need = count
        .checked_mul(size)
        .ok_or_else(|| format!("the shape {shape:?} needs more bytes than memory can address"))?;
    if data.len() != need {
        return Err(format!(
            "the shape {shape:?} of '{descr}' needs {need} bytes of data, found {}",
            data.len()
        ));
    }
    let values: Vec<f32> = match (float64, big) {
        (false, false) => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (false, true) => data
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (true, big) => data
            .chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            })
            .collect(),
    };
    let a = if fortran {
        ArrayD::from_shape_vec(shape.f(), values)
    } else {
        ArrayD::from_shape_vec(shape, values)
    };
    let a = a.map_err(|e| e.to_string())?;
    Ok(a.as_standard_layout().into_owned())
}

/// The header: a Python dict literal of `descr` (a string), `fortran_order`
/// (True or False) and `shape` (a tuple of integers), in any order.
fn header_fields(text: &str) -> Result<Header, String> {
    let mut p = Lexer {
        s: text.trim_end(),
        at: 0,
    };
    p.expect('{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.space();
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        p.space();
        p.expect(':')?;
        p.space();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected header key '{other}'")),
        }
        p.space();
        if !p.eat(',') {
            p.space();
            p.expect('}')?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or("the header has no 'descr'")?,
        fortran: fortran.ok_or("the header has no 'fortran_order'")?,
        shape: shape.ok_or("the header has no 'shape'")?,
    })
}

struct Lexer<'a> {
    s: &'a str,
    at: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.s[self.at..]
    }
    fn space(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.at += n;
    }
    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{c}` in the header at byte {}", self.at))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = if self.eat('\'') {
            '\''
        } else if self.eat('"') {
            '"'
        } else {
            return Err(format!(
                "expected a quoted string in the header at byte {}",
                self.at
            ));
        };
        let end = self
            .rest()
            .find(q)
            .ok_or("an unterminated string in the header")?;
        let v = self.rest()[..end].to_string();
        self.at += end + 1;
        Ok(v)
    }
    fn boolean(&mut self) -> Result<bool, String> {
        for (word, v) in [("True", true), ("False", false)] {
            if self.rest().starts_with(word) {
                self.at += word.len();
                return Ok(v);
            }
        }
        Err("expected True or False for 'fortran_order'".into())
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            self.space();
            if self.eat(')') {
                return Ok(dims);
            }
            let digits = self.rest().len()
                - self
                    .rest()
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            if digits == 0 {
                return Err(format!(
                    "expected a dimension in 'shape' at byte {}",
                    self.at
                ));
            }
            let d = &self.rest()[..digits];
            dims.push(
                d.parse::<usize>()
                    .map_err(|_| format!("the dimension {d} is too large"))?,
            );
            if dims.len() > MAX_DIMS {
                return Err(format!("more than {MAX_DIMS} dimensions"));
            }
            self.at += digits;
            self.space();
            if !self.eat(',') {
                self.space();
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }
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
        assert!(parse(&bytes)
            .unwrap_err()
            .contains("needs 16 bytes of data, found 13"));
        let mut ints = to_bytes(&a);
        let at = ints.windows(3).position(|w| w == b"<f4").unwrap();
        ints[at + 1..at + 3].copy_from_slice(b"i8");
        assert!(parse(&ints).unwrap_err().contains("'<i8'"));
    }

    /// A header from its text, padded as numpy pads it, then `data`.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        h.push('\n');
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn shapes_that_claim_more_than_the_data_are_errors_not_allocations() {
        // The regression: zero elements, a batch of 2^31.
        let f = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 7, 2, 0), }",
            &[],
        );
        let a = parse(&f).unwrap();
        assert_eq!(a.len(), 0);
        let f = file("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", &[]);
        assert!(parse(&f).unwrap_err().contains("more elements than memory"));
        let f = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }",
            &[0; 8],
        );
        assert!(parse(&f)
            .unwrap_err()
            .contains("needs 4000000000 bytes of data, found 8"));
        let f = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            &[],
        );
        assert!(parse(&f).unwrap_err().contains("too large"));
        let f = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 12],
        );
        assert!(parse(&f).unwrap_err().contains("found 12"), "extra bytes");
    }

    #[test]
    fn byte_order_fortran_order_and_float64_are_read() {
        let vals = [1.5f32, -2.0, 3.25, 4.0, 5.0, 6.0];
        let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse(&file(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
            &be,
        ))
        .unwrap();
        assert_eq!(a.as_slice().unwrap(), &vals);
        let le: Vec<u8> = vals
            .iter()
            .flat_map(|v| (*v as f64).to_le_bytes())
            .collect();
        // Fortran order: column-major data, read back in C order.
        let a = parse(&file(
            "{'fortran_order': True, 'shape': (2, 3), 'descr': '<f8'}",
            &le,
        ))
        .unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.5, 3.25, 5.0, -2.0, 4.0, 6.0]);
        assert_eq!(a.shape(), &[2, 3]);
        for bad in [
            "{'descr': '<f4', 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4 , 'fortran_order': False, 'shape': (1,)}",
            "['descr']",
        ] {
            assert!(parse(&file(bad, &[0; 4])).is_err(), "{bad}");
        }
    }
}
