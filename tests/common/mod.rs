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
