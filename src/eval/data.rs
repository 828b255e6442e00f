//! Labelled image folders: torchvision's ImageFolder (a subfolder per
//! class, classes in sorted order), or a folder with a labels file of
//! `file label` lines (the ILSVRC validation ground truth).

use std::path::{Path, PathBuf};

/// The extensions ImageFolder takes that resnetc decodes.
const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn sorted(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("`{}`: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// The samples of `root` and the class names, by index.
pub fn samples(root: &Path, labels: Option<&Path>) -> Result<(Vec<Sample>, Vec<String>), String> {
    if let Some(file) = labels {
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("`{}`: {e}", file.display()))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, label) = line.rsplit_once(char::is_whitespace).ok_or_else(|| {
                format!(
                    "`{}` line {}: expected `file label`, found `{line}`",
                    file.display(),
                    n + 1
                )
            })?;
            let label: usize = label.trim().parse().map_err(|_| {
                format!(
                    "`{}` line {}: expected a class index, found `{}`",
                    file.display(),
                    n + 1,
                    label.trim()
                )
            })?;
            out.push(Sample {
                path: root.join(name.trim()),
                label,
            });
        }
        return Ok((out, Vec::new()));
    }
    let classes: Vec<PathBuf> = sorted(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(format!(
            "`{}`: no class folders (an ImageFolder has one subfolder per class; or give --labels FILE)",
            root.display()
        ));
    }
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        names.push(
            dir.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        );
        // ImageFolder walks each class folder recursively.
        let mut stack = vec![dir.clone()];
        let mut files = Vec::new();
        while let Some(d) = stack.pop() {
            for p in sorted(&d)? {
                if p.is_dir() {
                    stack.push(p);
                } else if is_image(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        out.extend(files.into_iter().map(|path| Sample { path, label }));
    }
    Ok((out, names))
}
