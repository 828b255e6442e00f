//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use resnetc::ir::Graph;
use resnetc::lower::{compile_file, Options};
use resnetc::syntax::SourceMap;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compile a spec that must compile; a failure shows the rendered diagnostics.
pub fn compile(path: &Path) -> Graph {
    compile_with(path, &Options::default())
}

pub fn compile_with(path: &Path, opts: &Options) -> Graph {
    let mut sources = SourceMap::new();
    match compile_file(path, opts, &mut sources) {
        Ok(g) => g,
        Err(d) => panic!("{} failed:\n{}", path.display(), d.render(&sources, false)),
    }
}

/// A spec's graph prepared at `level`, without weights.
pub fn optimized(path: &Path, level: u8) -> resnetc::passes::Prepared {
    prepare(compile(path), None, level)
}

/// A graph (and its weights) prepared at `level`.
pub fn prepare(
    g: Graph,
    w: Option<&resnetc::weights::Weights>,
    level: u8,
) -> resnetc::passes::Prepared {
    let weights = w.map(|w| w.clone().bind(&g, "test").expect("weights fit"));
    let m = resnetc::passes::Module { graph: g, weights };
    let opts = resnetc::passes::Options {
        level,
        ..Default::default()
    };
    match resnetc::passes::prepare(m, &opts) {
        Ok((m, _)) => m,
        Err(e) => panic!("-O{level}: {e}"),
    }
}

/// A graph and weights prepared at `level` and lowered to a program.
pub fn program(g: &Graph, w: &resnetc::weights::Weights, level: u8) -> resnetc::backend::Program {
    resnetc::backend::Program::lower(prepare(g.clone(), Some(w), level)).expect("lowers")
}

/// Every spec and example, relative to the crate root.
pub fn all_specs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["specs", "specs/cifar", "examples"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("spec folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "rn"))
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

/// Random weights (randomized BN) and the interpreter's logits for `x`. For
/// very deep nets (ResNet-1202) the residual stream overflows f32, so BN
/// variances are raised until the logits are finite and moderate (each BN
/// then damps its branch).
pub fn finite_run(
    g: &Graph,
    x: &ndarray::ArrayD<f32>,
    seed: u64,
) -> (resnetc::weights::Weights, ndarray::ArrayD<f32>) {
    use resnetc::backend::interp;
    use resnetc::weights::init;
    for damping in [1.0f32, 100.0, 10_000.0] {
        let mut w = init::init(
            g,
            init::InitOptions {
                seed,
                randomize_bn: true,
            },
        );
        let keys: Vec<String> = w
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k.ends_with("running_var"))
            .collect();
        for k in keys {
            let t = w.get(&k).unwrap().mapv(|v| v * damping);
            w.insert(k, t);
        }
        let b = w.clone().bind(g, "init").unwrap();
        let y = interp::run(g, &b, x.clone(), &[g.logits()])
            .unwrap()
            .remove(0);
        if y.iter().all(|v| v.is_finite() && v.abs() < 1e6) {
            return (w, y);
        }
    }
    panic!("{}: logits overflow even with damped BN", g.name);
}
