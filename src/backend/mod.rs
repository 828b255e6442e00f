//! Backends run a [`Program`]: the prepared graph lowered to backend-neutral
//! steps. A backend is a [`Backend`] (made from [`Options`], it checks and
//! compiles programs) whose compiled networks are [`Executable`]s. The CLI,
//! the benches and the differential tests go through [`BACKENDS`] by name and
//! never name a backend's type; no backend imports another.
//!
//! `interp` is the reference: plain kernels with PyTorch's eval-mode
//! semantics over the graph itself (not over the program), the oracle for
//! the others.

pub mod cuda;
pub mod interp;
pub mod jit;
pub mod memory;
pub mod program;

use std::fmt;
use std::time::Duration;

use ndarray::ArrayD;

use crate::ir::GraphError;
pub use program::Program;

/// What a backend is made with. Each backend takes what it understands and
/// refuses values it cannot honour; an option it has no use for is ignored.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Worker threads; 0: one per core.
    pub threads: usize,
    /// A conv strategy to force where it is eligible (experiments).
    pub conv_strategy: Option<String>,
    /// The kernel set to use (`avx512`, `avx2`, `portable`): default the
    /// best this machine runs.
    pub kernels: Option<String>,
    /// Arithmetic precision (`f32`, and where a backend has them `tf32`, `bf16`).
    pub precision: Option<String>,
    /// Time every step, for [`Executable::profile`].
    pub profile: bool,
    /// Make one task of the named step panic (tests of error handling).
    #[doc(hidden)]
    pub fault: Option<String>,
}

/// Why a backend could not be made: an option it cannot honour. A usage
/// error: the CLI exits 2.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("backend `{backend}`: {message}")]
pub struct OptionError {
    pub backend: &'static str,
    pub message: String,
}

/// Why a program cannot be compiled: every reason found, not only the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub Vec<GraphError>);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

impl From<GraphError> for Refusal {
    fn from(e: GraphError) -> Refusal {
        Refusal(vec![e])
    }
}

/// Generated source, as `compile --emit` writes it and snapshots keep it:
/// deterministic, with names where a run would have addresses. The first
/// file is the main one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<ListingFile>,
}

/// One file of a listing: its name (in the output folder) and contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl ListingFile {
    pub fn text(name: impl Into<String>, text: String) -> ListingFile {
        ListingFile {
            name: name.into(),
            bytes: text.into_bytes(),
        }
    }

    /// The contents as text, if they are.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

impl Listing {
    /// The main file's text.
    pub fn text(&self) -> &str {
        self.files
            .first()
            .and_then(ListingFile::as_text)
            .unwrap_or("")
    }
}

/// A backend, made with its options.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// Every reason this backend cannot run `p` (none: it can).
    fn check(&self, p: &Program) -> Vec<GraphError>;
    /// Compile `p` with its weights (packed once, here).
    fn compile(&self, p: &Program) -> Result<Box<dyn Executable>, Refusal>;
    /// The same, `p` given up: a backend that packs weights may free each
    /// one as it packs it, so they are never held twice.
    fn compile_owned(&self, p: Program) -> Result<Box<dyn Executable>, Refusal> {
        self.compile(&p)
    }
    /// The generated source of `p`, without weights; `None` for a backend
    /// that generates none.
    fn listing(&self, p: &Program) -> Result<Option<Listing>, Refusal>;
    /// What `compile(p)` will hold in host memory, known before it runs.
    fn footprint(&self, p: &Program) -> memory::Footprint {
        let mut f = memory::Footprint::default();
        f.add("arena", p.arena_bytes, true);
        f.add("weights", weight_bytes(p), false);
        f
    }
}

/// Bytes of a program's weights in f32.
pub fn weight_bytes(p: &Program) -> u64 {
    p.weights
        .iter()
        .map(|w| 4 * w.shape.iter().map(|&d| d as u64).product::<u64>())
        .sum()
}

/// How a step runs, for profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Direct convolution on channel-blocked maps.
    Blocked,
    /// The same with bf16 dot products (`--precision bf16`).
    BlockedBf16,
    /// The same on AMX's bf16 tiles (`--precision bf16`, where the CPU has them).
    BlockedAmx,
    /// The same a row at a time, for 3x3s with one or two output blocks.
    BlockedSlide,
    /// Winograd F(4x4, 3x3) on channel-blocked maps.
    Winograd,
    /// Winograd F(2x2, 3x3) on channel-blocked maps.
    WinogradF2,
    /// A 1x1 conv whose input rows are the GEMM's B.
    Direct1x1,
    /// A strided 1x1 conv on its subsampled input.
    Strided1x1,
    /// im2col into the GEMM's packed B.
    Im2col,
    /// Implicit GEMM (a GPU conv that gathers its operand tiles).
    ImplicitGemm,
    /// A matrix product (fc).
    Gemm,
    /// Matrix-vector products (an fc at small batches).
    Gemv,
    /// A generated elementwise loop.
    Loop,
    /// A hand-written kernel (pooling, softmax...).
    Kernel,
    /// The reference interpreter's plain kernels.
    Reference,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Blocked => "blocked",
            Strategy::BlockedBf16 => "blocked-bf16",
            Strategy::BlockedAmx => "blocked-amx",
            Strategy::BlockedSlide => "blocked-slide",
            Strategy::Winograd => "winograd",
            Strategy::WinogradF2 => "winograd-f2",
            Strategy::Direct1x1 => "direct-1x1",
            Strategy::Strided1x1 => "strided-1x1",
            Strategy::Im2col => "im2col",
            Strategy::ImplicitGemm => "implicit-gemm",
            Strategy::Gemm => "gemm",
            Strategy::Gemv => "gemv",
            Strategy::Loop => "loop",
            Strategy::Kernel => "kernel",
            Strategy::Reference => "reference",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a compiled network, for profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepInfo {
    pub name: String,
    pub op: &'static str,
    pub strategy: Strategy,
    pub flops: u64,
}

/// What a compiled network is and holds.
#[derive(Clone, Debug, Default)]
pub struct Info {
    pub threads: usize,
    /// The kernel set (`avx512f 12x32`...) or device it runs on.
    pub kernels: String,
    /// Activation arena, bytes.
    pub arena_bytes: usize,
    pub compile_time: Duration,
    /// Where the compile time went, phase by phase (empty where a backend
    /// does not say).
    pub phases: Vec<(&'static str, Duration)>,
    /// The packed weights' store, bytes, and how many of them were pages
    /// of freed tensors, moved rather than faulted in (where a backend has
    /// one).
    pub store: Option<(usize, usize)>,
}

/// A compiled network, ready to run.
pub trait Executable {
    /// Run on one input batch of the shape it was compiled for; returns
    /// the logits (the values before a final softmax).
    fn run(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, GraphError>;
    /// Its steps, in order: what [`Executable::profile`]'s times refer to.
    fn steps(&self) -> &[StepInfo];
    /// Each step's time in the last run, when compiled with `profile`.
    fn profile(&self) -> Option<Vec<Duration>> {
        None
    }
    fn info(&self) -> Info;
    /// The arithmetic peak (GFLOP/s) of what it runs on, measured now.
    fn measure_peak(&self) -> Option<f64> {
        None
    }
}

/// A backend in the registry: its name, a line about it, its maker.
pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    /// What `compile --emit` calls its listing, if it has one.
    pub emits: Option<&'static str>,
    /// Whether its listing includes the weights (packed its way), so that
    /// `compile` prepares the program with them.
    pub listing_weights: bool,
    pub new: fn(&Options) -> Result<Box<dyn Backend>, OptionError>,
}

/// Every backend, the default first. A new backend is a folder under
/// `src/backend/` and one line here.
pub const BACKENDS: &[Entry] = &[jit::ENTRY, interp::ENTRY, cuda::ENTRY];

/// The names of the registered backends.
pub fn names() -> Vec<&'static str> {
    BACKENDS.iter().map(|e| e.name).collect()
}

/// The backend whose listing `compile --emit NAME` writes.
pub fn emitting(name: &str) -> Option<&'static Entry> {
    BACKENDS.iter().find(|e| e.emits == Some(name))
}

/// Make the backend called `name`.
pub fn by_name(name: &str, opts: &Options) -> Result<Box<dyn Backend>, OptionError> {
    match BACKENDS.iter().find(|e| e.name == name) {
        Some(e) => (e.new)(opts),
        None => Err(OptionError {
            backend: "?",
            message: format!(
                "no backend `{name}`: expected one of {}",
                names().join(", ")
            ),
        }),
    }
}
