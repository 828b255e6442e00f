//! Loading a spec: the file, its imports (relative to the importing file) and
//! the built-in prelude, into one [`Program`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::syntax::ast::{BlockDef, Network};
use crate::syntax::parser::parse;
use crate::syntax::{Diagnostic, Diagnostics, FileId, SourceMap};

/// The standard blocks (`basic`, `bottleneck`), written in the DSL itself.
pub const PRELUDE: &str = include_str!("../prelude.rn");
pub const PRELUDE_NAME: &str = "<prelude>";

/// Everything a spec refers to, parsed.
#[derive(Debug, Clone)]
pub struct Program {
    pub root: FileId,
    /// Block definitions by name; a spec's own blocks shadow the prelude's.
    pub blocks: HashMap<String, BlockDef>,
    /// The root file's network; `None` for a block library.
    pub network: Option<Network>,
}

/// Load a spec from disk. Diagnostics point into `sources`, which keeps every
/// file read so that errors can be rendered.
pub fn load_file(path: &Path, sources: &mut SourceMap) -> Result<Program, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new("io", format!("cannot read spec `{}`: {e}", path.display()))
    })?;
    load_source(&path.display().to_string(), &text, sources)
}

/// Load a spec from text; imports are resolved relative to `name`'s folder.
pub fn load_source(
    name: &str,
    text: &str,
    sources: &mut SourceMap,
) -> Result<Program, Diagnostics> {
    let mut loader = Loader {
        sources,
        diags: Diagnostics::default(),
        blocks: HashMap::new(),
        prelude_blocks: HashMap::new(),
        seen: Vec::new(),
    };
    loader.prelude();
    let root = loader.sources.add(name, text);
    let network = loader.file(root, Path::new(name), true);
    let Loader {
        diags,
        mut blocks,
        prelude_blocks,
        ..
    } = loader;
    for (k, v) in prelude_blocks {
        blocks.entry(k).or_insert(v);
    }
    diags.into_result(Program {
        root,
        blocks,
        network,
    })
}

struct Loader<'a> {
    sources: &'a mut SourceMap,
    diags: Diagnostics,
    blocks: HashMap<String, BlockDef>,
    prelude_blocks: HashMap<String, BlockDef>,
    /// Canonical paths already loaded: an import is read once, cycles end.
    seen: Vec<PathBuf>,
}

impl Loader<'_> {
    fn prelude(&mut self) {
        let id = self.sources.add(PRELUDE_NAME, PRELUDE);
        match parse(id, PRELUDE) {
            Ok(f) => {
                for b in f.blocks {
                    self.prelude_blocks.insert(b.name.name.clone(), b);
                }
            }
            Err(d) => self.diags.push(d),
        }
    }

    fn file(&mut self, id: FileId, path: &Path, is_root: bool) -> Option<Network> {
        if let Ok(c) = path.canonicalize() {
            self.seen.push(c);
        }
        let text = self.sources.get(id).text.clone();
        let ast = match parse(id, &text) {
            Ok(a) => a,
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for imp in &ast.imports {
            let target = dir.join(&imp.path);
            let canonical = target.canonicalize().ok();
            if canonical.as_ref().is_some_and(|c| self.seen.contains(c)) {
                continue;
            }
            match std::fs::read_to_string(&target) {
                Ok(t) => {
                    let fid = self.sources.add(target.display().to_string(), t);
                    self.file(fid, &target, false);
                }
                Err(e) => self.diags.push(
                    Diagnostic::at(
                        "io",
                        imp.span,
                        format!("cannot import `{}`: {e}", target.display()),
                    )
                    .help("import paths are relative to the file that imports them"),
                ),
            }
        }
        for b in ast.blocks {
            if let Some(prev) = self.blocks.get(&b.name.name) {
                self.diags.push(
                    Diagnostic::at(
                        "duplicate",
                        b.name.span,
                        format!("block `{}` is defined twice", b.name.name),
                    )
                    .label(prev.name.span, "first defined here"),
                );
                continue;
            }
            self.blocks.insert(b.name.name.clone(), b);
        }
        let mut networks = ast.networks.into_iter();
        let first = networks.next();
        if let Some(extra) = networks.next() {
            self.diags.push(
                Diagnostic::at(
                    "duplicate",
                    extra.name.span,
                    "a spec file holds one network, found a second",
                )
                .help("put each network in its own file and share blocks with `import`"),
            );
        }
        if !is_root {
            if let Some(n) = &first {
                self.diags.push(
                    Diagnostic::at(
                        "import",
                        n.name.span,
                        "an imported file may define blocks only, found a network",
                    )
                    .help("move the network into its own spec file"),
                );
            }
            return None;
        }
        first
    }
}
