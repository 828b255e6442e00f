//! `resnetc init`: deterministic He-initialized weights for a spec.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::lower::Options;
use crate::weights::{file, init};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    pub spec: PathBuf,
    /// Where to write the weights (.safetensors, torchvision's key names).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random BN scales, shifts and statistics instead of 1, 0, 0, 1 (for tests).
    #[arg(long)]
    pub randomize_bn: bool,
}

pub fn run(args: &InitArgs) -> ExitCode {
    let Some((g, _)) = super::build(&args.spec, &Options::default()) else {
        return ExitCode::FAILURE;
    };
    let w = init::init(
        &g,
        init::InitOptions {
            seed: args.seed,
            randomize_bn: args.randomize_bn,
        },
    );
    match file::save(&w, &args.output) {
        Ok(()) => {
            println!(
                "wrote {} ({} tensors, {} parameters and BN statistics, seed {})",
                args.output.display(),
                w.len(),
                crate::report::group(w.iter().map(|(_, t)| t.len() as u64).sum()),
                args.seed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
