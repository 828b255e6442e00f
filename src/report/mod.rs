//! Reports over a graph: counts and costs. Ops own their cost rules; this
//! module only adds them up and formats them.

pub mod build;
pub mod plot;
pub mod table;

pub use build::{build, Report};

/// `11689512` -> `11,689,512`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3857973248` -> `3.86 G`.
pub fn si(n: u64) -> String {
    let x = n as f64;
    let (v, unit) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.2} {unit}").trim_end().to_string()
}

/// Bytes as MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(11689512), "11,689,512");
        assert_eq!(si(3857973248), "3.86 G");
        assert_eq!(si(269722), "269.72 k");
    }
}
