//! The emitted CUDA path: a program as the network's own CUDA C++
//! (`emit.rs`; the kernel templates in `resnetc_cuda.cuh`), run on a GPU
//! through the driver API and NVRTC (`device.rs`, cudarc loaded at run
//! time, so resnetc builds and runs without CUDA), or written out by
//! `compile --emit cuda` as a library's sources with its packed weights.
//! `emu/cuda_emu.h` runs the same source on a CPU, for checks without a GPU.

pub mod device;
pub mod emit;

use super::program::Program;
use super::{Backend, Entry, Executable, Listing, ListingFile, OptionError, Options, Refusal};
use crate::ir::{GraphError, Stage};

pub const ENTRY: Entry = Entry {
    name: "cuda",
    about: "the network's own CUDA, compiled by NVRTC for the GPU here (f32, tf32, bf16)",
    emits: Some("cuda"),
    listing_weights: true,
    new: Cuda::make,
};

const STAGE: Stage = Stage::Backend("cuda");

/// The arithmetic of the convs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// CUDA cores, f32 throughout: the exact path.
    F32,
    /// Tensor cores with tf32 inputs, f32 accumulation and activations.
    Tf32,
    /// Tensor cores with bf16 inputs and activations, f32 accumulation.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn from_name(s: &str) -> Option<Precision> {
        [Precision::F32, Precision::Tf32, Precision::Bf16]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// The CUDA backend, with its options.
pub struct Cuda {
    precision: Precision,
    profile: bool,
}

impl Cuda {
    fn make(o: &Options) -> Result<Box<dyn Backend>, OptionError> {
        let precision = match o.precision.as_deref() {
            None => Precision::F32,
            Some(p) => Precision::from_name(p).ok_or_else(|| OptionError {
                backend: ENTRY.name,
                message: format!("no precision `{p}`: expected one of f32, tf32, bf16"),
            })?,
        };
        Ok(Box::new(Cuda {
            precision,
            profile: o.profile,
        }))
    }

    /// The program as CUDA in this backend's precision.
    pub fn emit(&self, p: &Program) -> Result<emit::Emitted, GraphError> {
        emit::emit(p, self.precision)
    }
}

impl Backend for Cuda {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn check(&self, p: &Program) -> Vec<GraphError> {
        let mut why = Vec::new();
        if let Err(e) = self.emit(p) {
            why.push(e);
        }
        if let Err(e) = device::available() {
            why.push(e);
        }
        why
    }

    fn compile(&self, p: &Program) -> Result<Box<dyn Executable>, Refusal> {
        // What is missing on this machine first: nothing below may touch CUDA without it.
        device::available()?;
        let e = self.emit(p)?;
        let weights = p.weight_values(STAGE)?;
        let blob = e.weights(&weights);
        Ok(Box::new(device::Compiled::new(&e, &blob, self.profile)?))
    }

    fn footprint(&self, p: &Program) -> super::memory::Footprint {
        // On the host: the weights as read and as packed (the device's own
        // memory is the driver's to refuse).
        let mut f = super::memory::Footprint::default();
        let w = super::weight_bytes(p);
        f.add("weights", w, false);
        f.add("packed weights", w, false);
        f
    }

    fn listing(&self, p: &Program) -> Result<Option<Listing>, Refusal> {
        let e = self.emit(p)?;
        let n = &e.name;
        let mut files = vec![
            ListingFile::text(format!("{n}.cu"), e.kernels_source()),
            ListingFile::text(format!("{n}_host.cu"), e.host_source()),
            ListingFile::text(format!("{n}.h"), e.header()),
            ListingFile::text(emit::HEADER_NAME, emit::KERNELS_HEADER.to_string()),
        ];
        if p.prepared().weights().is_some() {
            let values = p.weight_values(STAGE)?;
            files.push(ListingFile {
                name: format!("{n}.weights"),
                bytes: e.weights(&values),
            });
        }
        Ok(Some(Listing { files }))
    }
}
