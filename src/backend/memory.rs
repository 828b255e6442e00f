//! What running a network will take, before anything is allocated: each
//! backend says what its compiled network holds ([`Footprint`]), the caller
//! adds its inputs and outputs, and [`check`] compares the sum with the
//! memory this process may still use (`MemAvailable`, and the cgroup's
//! limit where there is one). A batch too large for the machine is refused
//! with the figure and the largest batch that fits, not met by the OOM
//! killer.

use std::fmt;

use crate::ir::{GraphError, Stage};

/// One part of a footprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub what: &'static str,
    pub bytes: u64,
    /// Whether it grows with the batch (linearly).
    pub per_batch: bool,
}

/// What a compiled network (and its caller) will hold in host memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub parts: Vec<Part>,
}

impl Footprint {
    pub fn add(&mut self, what: &'static str, bytes: u64, per_batch: bool) {
        self.parts.push(Part {
            what,
            bytes,
            per_batch,
        });
    }

    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.bytes))
    }

    /// The largest batch whose footprint fits in `bytes`, this one being
    /// for `batch` images.
    pub fn largest_batch(&self, batch: usize, bytes: u64) -> u64 {
        let (fixed, scaled) = self.parts.iter().fold((0u64, 0u64), |(f, s), p| {
            if p.per_batch {
                (f, s.saturating_add(p.bytes))
            } else {
                (f.saturating_add(p.bytes), s)
            }
        });
        let per_image = (scaled / batch.max(1) as u64).max(1);
        bytes.saturating_sub(fixed) / per_image
    }
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|p| p.bytes > 0)
            .map(|p| format!("{} {}", p.what, size(p.bytes)))
            .collect();
        write!(f, "{} ({})", size(self.total()), parts.join(", "))
    }
}

/// Bytes as people read them: `13.2 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A size as users write it: `8G`, `512M`, `1.5GiB`, `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("expected a size such as 8G or 512M, found `{s}`"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("expected a size such as 8G or 512M, found `{s}`")),
    };
    let bytes = v * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("the size `{s}` is too large"));
    }
    Ok(bytes as u64)
}

/// The memory this process may still take, and where the figure comes from.
pub fn available() -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    let mut take = |v: Option<u64>, what| {
        if let Some(v) = v {
            if best.is_none_or(|(b, _)| v < b) {
                best = Some((v, what));
            }
        }
    };
    take(mem_available(), "MemAvailable in /proc/meminfo");
    take(cgroup_left(), "the cgroup's memory limit");
    best
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// A cgroup's limit less its usage (v2, else v1); `None` without a limit.
fn cgroup_left() -> Option<u64> {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let (limit, used) = match read("/sys/fs/cgroup/memory.max") {
        Some(l) => (l, read("/sys/fs/cgroup/memory.current")?),
        None => (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?,
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes")?,
        ),
    };
    // v1 says "no limit" with a huge number.
    (limit < 1 << 60).then(|| limit.saturating_sub(used))
}

/// How much a run may take: the machine's figure, a user's, or no check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Available,
    Bytes(u64),
    Unchecked,
}

/// Refuse `need` (for `batch` images of `network`) if it does not fit.
pub fn check(
    need: &Footprint,
    batch: usize,
    network: &str,
    limit: Limit,
) -> Result<(), GraphError> {
    let (have, source) = match limit {
        Limit::Unchecked => return Ok(()),
        Limit::Bytes(b) => (b, "--max-memory"),
        Limit::Available => match available() {
            Some(a) => a,
            None => return Ok(()),
        },
    };
    if need.total() <= have {
        return Ok(());
    }
    let largest = need.largest_batch(batch, have);
    let hint = if largest == 0 {
        "not even one image fits: use a smaller input".to_string()
    } else {
        format!("the largest batch that fits is {largest}")
    };
    Err(GraphError::new(
        Stage::Memory,
        format!(
            "`{network}` at batch {batch} needs {need}, but {} are available ({source}); {hint}",
            size(have)
        ),
    )
    .help("a smaller --batch or --input; --max-memory SIZE sets the limit, --max-memory none lifts it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1e400G").is_err());
        assert_eq!(size(13 * (1 << 30) + (1 << 29)), "13.5 GiB");
        assert_eq!(size(100), "100 bytes");
    }

    #[test]
    fn the_largest_batch_is_what_fits_beside_the_fixed_parts() {
        let mut f = Footprint::default();
        f.add("weights", 1000, false);
        f.add("arena", 100_000, true);
        // 100 per image at batch 1000: 10 images fit in 2000 bytes.
        assert_eq!(f.largest_batch(1000, 2000), 10);
        let e = check(&f, 1000, "t", Limit::Bytes(2000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs 98.6 KiB") && e.contains("largest batch that fits is 10"),
            "{e}"
        );
        assert!(check(&f, 1000, "t", Limit::Bytes(1 << 20)).is_ok());
        assert!(check(&f, 1000, "t", Limit::Unchecked).is_ok());
    }
}
