//! Static checks before lowering: every name resolves and every call matches
//! its signature. Collects all such errors at once, in every block, used or not.

use std::collections::HashSet;

use super::eval::suggest;
use super::load::Program;
use super::sig::{match_args, primitive, PRIMITIVES};
use crate::syntax::ast::{BlockDef, Expr, ExprKind, Network, ShortcutKind, ShortcutSpec, Stmt};
use crate::syntax::{Diagnostic, Diagnostics};

/// The most blocks a stage may repeat (ResNet-1202 has 200).
pub const MAX_REPEAT: u64 = 10_000;

/// The parameters of `add shortcut(...)`.
pub const SHORTCUT_PARAMS: &[&str] = &["from", "project_from", "bn", "bias"];

/// The options of a projection shortcut (`shortcut B(...)`, `C(...)`).
pub const PROJECTION_PARAMS: &[&str] = &["bias", "bn"];

pub fn check(prog: &Program) -> Diagnostics {
    let mut c = Checker {
        prog,
        diags: Diagnostics::default(),
    };
    let mut blocks: Vec<&BlockDef> = prog.blocks.values().collect();
    blocks.sort_by_key(|b| (b.span.file.0, b.span.start));
    for b in blocks {
        c.block(b);
    }
    if let Some(n) = &prog.network {
        c.network(n);
    }
    c.diags
}

struct Checker<'p> {
    prog: &'p Program,
    diags: Diagnostics,
}

struct Scope {
    names: HashSet<String>,
    taps: HashSet<String>,
    in_block: bool,
}

impl Checker<'_> {
    fn block(&mut self, b: &BlockDef) {
        let mut names = HashSet::new();
        for p in &b.params {
            if let Some(d) = &p.default {
                self.expr(d, &names);
            }
            if !names.insert(p.name.name.clone()) {
                self.diags.push(Diagnostic::at(
                    "duplicate",
                    p.name.span,
                    format!("parameter `{}` is declared twice", p.name.name),
                ));
            }
        }
        let mut scope = Scope {
            names,
            taps: HashSet::from(["input".to_string()]),
            in_block: true,
        };
        self.stmts(&b.body, &mut scope);
    }

    fn network(&mut self, n: &Network) {
        if n.input.is_none() {
            self.diags.push(
                Diagnostic::at(
                    "missing",
                    n.name.span,
                    format!("network `{}` has no input", n.name.name),
                )
                .help("declare one, e.g. `input 3x224x224`, or pass --input"),
            );
        }
        if let Some(s) = &n.shortcut {
            self.shortcut(s);
        }
        let mut scope = Scope {
            names: HashSet::new(),
            taps: HashSet::new(),
            in_block: false,
        };
        if let Some(stem) = &n.stem {
            self.stmts(&stem.body, &mut scope);
        }
        for st in &n.stages {
            if let Some(s) = &st.shortcut {
                self.shortcut(s);
            }
            if let Some(e) = &st.stride {
                self.expr(e, &HashSet::new());
            }
            if st.repeat == 0 || st.repeat > MAX_REPEAT {
                self.diags.push(Diagnostic::at(
                    "value",
                    st.repeat_span,
                    format!(
                        "expected a stage of 1 to {MAX_REPEAT} blocks, found `x {}`",
                        st.repeat
                    ),
                ));
            }
            let name = &st.block.name;
            let Some(def) = self.prog.blocks.get(&name.name) else {
                let d = if primitive(&name.name).is_some() {
                    Diagnostic::at(
                        "unknown-name",
                        name.span,
                        format!("`{}` is an op, but a stage repeats a block", name.name),
                    )
                    .help("define a block that uses it: `block my_block(...) { ... }`")
                } else {
                    let d = Diagnostic::at(
                        "unknown-name",
                        name.span,
                        format!("unknown block `{}`", name.name),
                    );
                    match suggest(&name.name, self.prog.blocks.keys().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!("known blocks: {}", self.block_names())),
                    }
                };
                self.diags.push(d);
                continue;
            };
            let params: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
            let what = format!("block `{}`", def.name.name);
            match match_args(&what, &params, params.len(), &st.block.args) {
                Ok(slots) => {
                    for (p, slot) in params.iter().zip(&slots) {
                        match slot {
                            Some(a) if *p == "dilation" && st.dilation.is_some() => self.diags.push(
                                Diagnostic::at(
                                    "dilation",
                                    a.span,
                                    "the stage's `dilation` sets this block's dilation",
                                )
                                .help("remove one of the two: the stage gives its first block the previous stage's dilation and the rest its own"),
                            ),
                            Some(a) if *p == "stride" => self.diags.push(
                                Diagnostic::at(
                                    "stride",
                                    a.span,
                                    "a block's stride is set by its stage, not per call",
                                )
                                .help(format!(
                                    "write `stage {}: {}(...) x {} stride N`: the first block gets N, the rest 1",
                                    st.name.name, def.name.name, st.repeat
                                )),
                            ),
                            Some(a) => self.expr(&a.value, &HashSet::new()),
                            None => {
                                let has_default = def
                                    .params
                                    .iter()
                                    .any(|q| q.name.name == *p && q.default.is_some());
                                if !has_default && *p != "stride" && *p != "dilation" {
                                    self.diags.push(
                                        Diagnostic::at(
                                            "arity",
                                            st.block.span,
                                            format!("{what} needs its `{p}` argument"),
                                        )
                                        .label(def.name.span, "defined here"),
                                    );
                                }
                            }
                        }
                    }
                }
                Err(d) => self.diags.push(d),
            }
            if st.stride.is_some() && !params.contains(&"stride") {
                if let Some(e) = &st.stride {
                    self.diags.push(
                        Diagnostic::at(
                            "stride",
                            e.span,
                            format!(
                                "{what} has no `stride` parameter, so the stage cannot stride it"
                            ),
                        )
                        .label(def.name.span, "defined here"),
                    );
                }
            }
            if let Some(e) = &st.dilation {
                self.expr(e, &HashSet::new());
                if !params.contains(&"dilation") {
                    self.diags.push(
                        Diagnostic::at(
                            "dilation",
                            e.span,
                            format!(
                                "{what} has no `dilation` parameter, so the stage cannot dilate it"
                            ),
                        )
                        .label(def.name.span, "defined here")
                        .help("give the block a `dilation = 1` parameter and pass it to its 3x3 conv (`pad = dilation, dilation = dilation`)"),
                    );
                }
                if st.stride.is_some() {
                    self.diags.push(
                        Diagnostic::at(
                            "dilation",
                            e.span,
                            "a stage dilates instead of striding: it cannot do both",
                        )
                        .help("drop `stride`: torchvision's replace_stride_with_dilation turns the stride into dilation"),
                    );
                }
            }
        }
        if let Some(head) = &n.head {
            self.stmts(&head.body, &mut scope);
        }
    }

    fn shortcut(&mut self, s: &ShortcutSpec) {
        let params: &[&str] = match s.kind {
            ShortcutKind::A => &["pad"],
            ShortcutKind::B | ShortcutKind::C => PROJECTION_PARAMS,
            ShortcutKind::None => &[],
        };
        let what = match s.kind {
            ShortcutKind::A => "shortcut A",
            ShortcutKind::B => "shortcut B",
            ShortcutKind::C => "shortcut C",
            ShortcutKind::None => "shortcut none",
        };
        if let Err(d) = match_args(what, params, 0, &s.args) {
            self.diags.push(d);
        }
    }

    fn block_names(&self) -> String {
        let mut v: Vec<&str> = self.prog.blocks.keys().map(String::as_str).collect();
        v.sort();
        v.join(", ")
    }

    fn stmts(&mut self, body: &[Stmt], scope: &mut Scope) {
        for s in body {
            match s {
                Stmt::Let { name, value } => {
                    self.expr(value, &scope.names);
                    scope.names.insert(name.name.clone());
                }
                Stmt::AddShortcut { args, span } => {
                    if !scope.in_block {
                        self.diags.push(
                            Diagnostic::at(
                                "shortcut",
                                *span,
                                "`add shortcut` belongs in a block, found it outside one",
                            )
                            .help("a block's shortcut runs from its input to this point"),
                        );
                        continue;
                    }
                    match match_args("`add shortcut`", SHORTCUT_PARAMS, 0, args) {
                        Ok(slots) => {
                            for (p, a) in SHORTCUT_PARAMS.iter().zip(slots) {
                                let Some(a) = a else { continue };
                                if *p == "bn" || *p == "bias" {
                                    self.expr(&a.value, &scope.names);
                                } else {
                                    self.tap(&a.value, scope);
                                }
                            }
                        }
                        Err(d) => self.diags.push(d),
                    }
                }
                Stmt::Layer { call, bind, .. } => {
                    let name = &call.name;
                    match primitive(&name.name) {
                        Some(sig) => {
                            let params: Vec<&str> = sig.params.iter().map(|p| p.name).collect();
                            let what = format!("`{}`", sig.name);
                            match match_args(&what, &params, sig.positional, &call.args) {
                                Ok(_) => {
                                    for a in &call.args {
                                        self.expr(&a.value, &scope.names);
                                    }
                                }
                                Err(d) => self.diags.push(d),
                            }
                        }
                        None if self.prog.blocks.contains_key(&name.name) => self.diags.push(
                            Diagnostic::at(
                                "nesting",
                                name.span,
                                format!(
                                    "`{}` is a block; blocks are repeated by stages, not called",
                                    name.name
                                ),
                            )
                            .help(format!(
                                "use it in a stage: `stage my_stage: {}(...) x N`",
                                name.name
                            )),
                        ),
                        None => {
                            let d = Diagnostic::at(
                                "unknown-name",
                                name.span,
                                format!("unknown op `{}`", name.name),
                            );
                            let ops = PRIMITIVES.iter().map(|p| p.name);
                            self.diags.push(match suggest(&name.name, ops) {
                                Some(s) => d.help(format!("did you mean `{s}`?")),
                                None => d.help(format!(
                                    "the ops are: {}",
                                    PRIMITIVES
                                        .iter()
                                        .map(|p| p.name)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            });
                        }
                    }
                    if let Some(b) = bind {
                        scope.taps.insert(b.name.clone());
                    }
                }
            }
        }
    }

    fn tap(&mut self, e: &Expr, scope: &Scope) {
        match &e.kind {
            ExprKind::Name(n) if scope.taps.contains(n) => {}
            ExprKind::Name(n) => {
                let d = Diagnostic::at("unknown-name", e.span, format!("unknown value `{n}`"));
                self.diags
                    .push(match suggest(n, scope.taps.iter().map(String::as_str)) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(
                        "name a value with `as`, e.g. `relu as pre`; `input` is the block input",
                    ),
                });
            }
            _ => self.diags.push(
                Diagnostic::at("type", e.span, "expected the name of a value")
                    .help("name a value with `as`, e.g. `relu as pre`; `input` is the block input"),
            ),
        }
    }

    fn expr(&mut self, e: &Expr, names: &HashSet<String>) {
        match &e.kind {
            ExprKind::Name(n) if !names.contains(n) => {
                let d = Diagnostic::at("unknown-name", e.span, format!("unknown name `{n}`"));
                self.diags
                    .push(match suggest(n, names.iter().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None if names.is_empty() => d.help("no parameters are in scope here"),
                        None => {
                            let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
                            v.sort();
                            d.help(format!("names in scope: {}", v.join(", ")))
                        }
                    });
            }
            ExprKind::Neg(x) | ExprKind::Not(x) => self.expr(x, names),
            ExprKind::Binary(_, a, b) => {
                self.expr(a, names);
                self.expr(b, names);
            }
            ExprKind::Cond(c, a, b) => {
                self.expr(c, names);
                self.expr(a, names);
                self.expr(b, names);
            }
            _ => {}
        }
    }
}
