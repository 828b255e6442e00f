//! Tensor shapes. Activations are NCHW (or NxF after flatten).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest tensor we accept: 2^40 elements (4 TiB of f32). Anything
/// bigger is a spec mistake, and keeps all later arithmetic far from u64 overflow.
pub const MAX_ELEMENTS: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn nchw(n: usize, c: usize, h: usize, w: usize) -> Shape {
        Shape(vec![n, c, h, w])
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of elements; `None` if it overflows or passes [`MAX_ELEMENTS`].
    pub fn checked_numel(&self) -> Option<u64> {
        let mut n: u64 = 1;
        for &d in &self.0 {
            n = n.checked_mul(d as u64)?;
        }
        (n <= MAX_ELEMENTS).then_some(n)
    }

    /// Number of elements of a shape already validated at construction.
    pub fn numel(&self) -> u64 {
        self.0.iter().map(|&d| d as u64).product()
    }

    pub fn batch(&self) -> usize {
        self.0.first().copied().unwrap_or(1)
    }

    /// Channels of an NCHW or NxF tensor.
    pub fn channels(&self) -> usize {
        self.0.get(1).copied().unwrap_or(1)
    }

    pub fn height(&self) -> usize {
        self.0.get(2).copied().unwrap_or(1)
    }

    pub fn width(&self) -> usize {
        self.0.get(3).copied().unwrap_or(1)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("x")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
