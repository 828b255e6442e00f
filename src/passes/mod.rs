//! The optimizer: named passes in a printable pipeline, run to a capped
//! fixpoint, with the graph's invariants checked after every pass; then
//! [`prepare`] legalizes and plans memory, and hands out the [`Prepared`]
//! graph that every backend takes.
//!
//! A pass takes a [`Module`] (the graph, and the weights when there are any)
//! and says whether it changed anything. Rewrites keep weights and graph in
//! step; a failed invariant names the pass that broke it and the value.

pub mod dce;
pub mod fold_bn;
pub mod fuse_relu;
pub mod fuse_residual;
pub mod legalize;
pub mod plan_memory;
pub mod remove_identity;

use std::time::{Duration, Instant};

use crate::ir::plan::MemoryPlan;
use crate::ir::{text, Graph, GraphError, Stage};
use crate::weights::BoundWeights;

/// What the passes rewrite: the graph, and its weights if it has any.
#[derive(Clone, Debug)]
pub struct Module {
    pub graph: Graph,
    pub weights: Option<BoundWeights>,
}

/// Whether the pass changed anything; an error names the value it is about
/// (the pass manager fills in the pass's name).
pub type PassFn = fn(&mut Module) -> Result<bool, GraphError>;

/// A pass's error about value `i` (the pass manager sets the stage).
pub(crate) fn fail(g: &Graph, i: petgraph::stable_graph::NodeIndex, msg: String) -> GraphError {
    GraphError::new(Stage::Prepare, msg).at(g, i)
}

#[derive(Clone, Copy)]
pub struct Pass {
    pub name: &'static str,
    pub run: PassFn,
    /// One line on what it does, for `--print-passes` style listings.
    pub about: &'static str,
}

pub const FOLD_BN: Pass = Pass {
    name: "fold-bn",
    run: fold_bn::run,
    about: "fold BN into the conv or fc before it; other BNs become scale-shifts",
};
pub const FUSE_RESIDUAL: Pass = Pass {
    name: "fuse-residual",
    run: fuse_residual::run,
    about: "move residual adds (and option A padding) into the epilogue of a conv",
};
pub const FUSE_RELU: Pass = Pass {
    name: "fuse-relu",
    run: fuse_relu::run,
    about: "move ReLUs into the epilogue of the conv or scale-shift before them",
};
pub const DCE: Pass = Pass {
    name: "dce",
    run: dce::run,
    about: "remove values the output does not need",
};
pub const REMOVE_IDENTITY: Pass = Pass {
    name: "remove-identity",
    run: remove_identity::run,
    about: "remove ops that return their input (1x1 pooling, relu of relu...)",
};
pub const LEGALIZE: Pass = Pass {
    name: "legalize",
    run: legalize::run,
    about: "every batch norm left becomes a scale-shift: no backend sees batch_norm",
};
/// Not a rewrite: the stage that computes the [`MemoryPlan`] (listed, timed
/// and printed like the passes).
pub const PLAN_MEMORY: &str = "plan-memory";

/// The rewrites run to a fixpoint at each level; [`prepare`] then runs
/// [`LEGALIZE`] and plans memory at every level.
pub fn rewrites(level: u8) -> Vec<Pass> {
    match level {
        0 => vec![],
        1 => vec![FOLD_BN, DCE, REMOVE_IDENTITY],
        _ => vec![FOLD_BN, FUSE_RESIDUAL, FUSE_RELU, DCE, REMOVE_IDENTITY],
    }
}

/// The names of a level's whole pipeline, in the order it runs.
pub fn pipeline(level: u8) -> Vec<&'static str> {
    let mut p: Vec<&str> = rewrites(level).iter().map(|p| p.name).collect();
    p.push(LEGALIZE.name);
    p.push(PLAN_MEMORY);
    p
}

pub fn pass_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = [
        FOLD_BN,
        FUSE_RESIDUAL,
        FUSE_RELU,
        DCE,
        REMOVE_IDENTITY,
        LEGALIZE,
    ]
    .iter()
    .map(|p| p.name)
    .collect();
    v.push(PLAN_MEMORY);
    v
}

/// The rewrite loop stops after this many rounds even if passes still change things.
pub const MAX_ROUNDS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub level: u8,
    /// Print the IR after these passes (every time they run).
    pub print_after: Vec<String>,
    pub print_after_all: bool,
    pub time_passes: bool,
}

/// What the pass manager did: per pass, how often it ran, changed and how long.
#[derive(Clone, Debug, Default)]
pub struct Log {
    pub runs: Vec<(&'static str, usize, usize, Duration)>,
    pub rounds: usize,
    /// IR listings asked for with --print-after.
    pub printed: String,
}

impl Log {
    fn record(&mut self, name: &'static str, changed: bool, t: Duration) {
        match self.runs.iter_mut().find(|r| r.0 == name) {
            Some(r) => {
                r.1 += 1;
                r.2 += usize::from(changed);
                r.3 += t;
            }
            None => self.runs.push((name, 1, usize::from(changed), t)),
        }
    }

    /// The `--time-passes` table.
    pub fn timing(&self) -> String {
        let mut s = format!(
            "{:<16} {:>5} {:>8} {:>10}\n",
            "pass", "runs", "changed", "time"
        );
        let mut total = Duration::ZERO;
        for (name, runs, changed, t) in &self.runs {
            s.push_str(&format!(
                "{name:<16} {runs:>5} {changed:>8} {:>8.3}ms\n",
                t.as_secs_f64() * 1e3
            ));
            total += *t;
        }
        s.push_str(&format!(
            "{:<16} {:>5} {:>8} {:>8.3}ms  ({} rounds)\n",
            "total",
            "",
            "",
            total.as_secs_f64() * 1e3,
            self.rounds
        ));
        s
    }
}

/// Check what every pass must keep true; `Err` names what broke.
pub fn verify(m: &Module) -> Result<(), GraphError> {
    m.graph.check()?;
    for (i, n) in m.graph.nodes() {
        if n.span.end <= n.span.start && n.name != "input" {
            return Err(fail(&m.graph, i, "lost its source span".into()));
        }
    }
    if let Some(w) = &m.weights {
        w.fits(&m.graph)
            .map_err(|e| GraphError::new(Stage::Prepare, e))?;
    }
    Ok(())
}

fn run_pass(p: &Pass, m: &mut Module, opts: &Options, log: &mut Log) -> Result<bool, GraphError> {
    let stage = |mut e: GraphError| {
        e.stage = Stage::Pass(p.name);
        e
    };
    let t = Instant::now();
    let changed = (p.run)(m).map_err(stage)?;
    log.record(p.name, changed, t.elapsed());
    verify(m).map_err(|e| {
        let mut e = stage(e);
        e.message = format!("broke the graph: {}", e.message);
        e
    })?;
    if opts.print_after_all || opts.print_after.iter().any(|n| n == p.name) {
        log.printed.push_str(&format!(
            "# after {} (round {}{})\n{}",
            p.name,
            log.rounds,
            if changed { "" } else { ", no change" },
            text::render(&m.graph)
        ));
    }
    Ok(changed)
}

/// The graph as every backend takes it: optimized, legalized (no
/// `batch_norm` at any level), memory-planned and checked, with its weights
/// rewritten to match when it has them. Only [`prepare`] makes one, so no
/// backend can be handed a graph that skipped a step.
#[derive(Clone, Debug)]
pub struct Prepared {
    graph: Graph,
    plan: MemoryPlan,
    weights: Option<BoundWeights>,
    level: u8,
}

impl Prepared {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }
    /// The weights, rewritten by the passes (BN folded); `None` when the
    /// graph was prepared without them (`compile --emit`, reports).
    pub fn weights(&self) -> Option<&BoundWeights> {
        self.weights.as_ref()
    }
    /// The weights, given up (a backend that packs them frees each as it
    /// goes).
    pub fn take_weights(&mut self) -> Option<BoundWeights> {
        self.weights.take()
    }
    /// The optimization level it was prepared at.
    pub fn level(&self) -> u8 {
        self.level
    }
}

/// Optimize at `opts.level`, legalize and plan memory.
pub fn prepare(m: Module, opts: &Options) -> Result<(Prepared, Log), GraphError> {
    prepare_with(m, &rewrites(opts.level), opts)
}

/// Legalize and plan a rewritten module.
fn finish(mut m: Module, opts: &Options, log: &mut Log) -> Result<Prepared, GraphError> {
    run_pass(&LEGALIZE, &mut m, opts, log)?;
    let t = Instant::now();
    let plan = plan_memory::plan(&m.graph, opts.level >= 2);
    log.record(PLAN_MEMORY, true, t.elapsed());
    crate::ir::plan::check(&m.graph, &plan).map_err(|mut e| {
        e.stage = Stage::Pass(PLAN_MEMORY);
        e
    })?;
    if opts.print_after_all || opts.print_after.iter().any(|n| n == PLAN_MEMORY) {
        log.printed.push_str(&format!(
            "# after {PLAN_MEMORY}\n{}",
            text::render_planned(&m.graph, &plan)
        ));
    }
    Ok(Prepared {
        graph: m.graph,
        plan,
        weights: m.weights,
        level: opts.level,
    })
}

/// Run `rewrites` to a capped fixpoint (and nothing else: tests of single
/// passes use this).
pub fn rewrite(
    mut m: Module,
    rewrites: &[Pass],
    opts: &Options,
) -> Result<(Module, Log), GraphError> {
    let mut log = Log::default();
    verify(&m).map_err(|mut e| {
        e.message = format!("the input graph is broken: {}", e.message);
        e
    })?;
    while !rewrites.is_empty() && log.rounds < MAX_ROUNDS {
        log.rounds += 1;
        let mut changed = false;
        for p in rewrites {
            changed |= run_pass(p, &mut m, opts, &mut log)?;
        }
        if !changed {
            break;
        }
    }
    Ok((m, log))
}

/// Run `rewrites` to a fixpoint, then legalize and plan: [`prepare`] with a
/// pipeline of one's own (experiments, tests).
pub fn prepare_with(
    m: Module,
    rewrites: &[Pass],
    opts: &Options,
) -> Result<(Prepared, Log), GraphError> {
    let (m, mut log) = rewrite(m, rewrites, opts)?;
    let p = finish(m, opts, &mut log)?;
    Ok((p, log))
}

/// The schedule position of every value.
pub(crate) fn positions(
    g: &Graph,
) -> std::collections::HashMap<petgraph::stable_graph::NodeIndex, usize> {
    g.order.iter().enumerate().map(|(p, &i)| (i, p)).collect()
}
