//! The optimizer: named passes in a printable pipeline, run to a capped
//! fixpoint, with the graph's invariants checked after every pass.
//!
//! A pass takes a [`Module`] (the graph, and the weights when there are any)
//! and says whether it changed anything. Rewrites keep weights and graph in
//! step; a failed invariant names the pass that broke it.

pub mod dce;
pub mod fold_bn;
pub mod fuse_relu;
pub mod fuse_residual;
pub mod plan_memory;
pub mod remove_identity;

use std::time::{Duration, Instant};

use crate::ir::{text, Graph};
use crate::weights::BoundWeights;

/// What the passes rewrite: the graph, and its weights if it has any.
#[derive(Clone, Debug)]
pub struct Module {
    pub graph: Graph,
    pub weights: Option<BoundWeights>,
}

pub type PassFn = fn(&mut Module) -> Result<bool, String>;

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
pub const PLAN_MEMORY: Pass = Pass {
    name: "plan-memory",
    run: plan_memory::run,
    about: "schedule, liveness, in-place reuse and arena offsets",
};

/// The rewrites run to a fixpoint at each level; memory planning runs once after.
pub fn rewrites(level: u8) -> Vec<Pass> {
    match level {
        0 => vec![],
        1 => vec![FOLD_BN, DCE, REMOVE_IDENTITY],
        _ => vec![FOLD_BN, FUSE_RESIDUAL, FUSE_RELU, DCE, REMOVE_IDENTITY],
    }
}

/// The whole pipeline of a level, in the order it runs.
pub fn pipeline(level: u8) -> Vec<Pass> {
    let mut p = rewrites(level);
    p.push(PLAN_MEMORY);
    p
}

pub fn pass_names() -> Vec<&'static str> {
    [
        FOLD_BN,
        FUSE_RESIDUAL,
        FUSE_RELU,
        DCE,
        REMOVE_IDENTITY,
        PLAN_MEMORY,
    ]
    .iter()
    .map(|p| p.name)
    .collect()
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
pub fn verify(m: &Module) -> Result<(), String> {
    m.graph.check()?;
    for (_, n) in m.graph.nodes() {
        if n.span.end <= n.span.start && n.name != "input" {
            return Err(format!("`{}` lost its source span", n.name));
        }
    }
    if let Some(w) = &m.weights {
        w.fits(&m.graph)?;
    }
    if let Some(p) = &m.graph.plan {
        crate::ir::plan::check(&m.graph, p)?;
    }
    Ok(())
}

fn run_pass(p: &Pass, m: &mut Module, opts: &Options, log: &mut Log) -> Result<bool, String> {
    let t = Instant::now();
    let changed = (p.run)(m).map_err(|e| format!("pass `{}` failed: {e}", p.name))?;
    log.record(p.name, changed, t.elapsed());
    if changed && p.name != PLAN_MEMORY.name {
        m.graph.plan = None;
    }
    verify(m).map_err(|e| format!("pass `{}` broke the graph: {e}", p.name))?;
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

/// Run the pipeline of `opts.level`.
pub fn optimize(m: Module, opts: &Options) -> Result<(Module, Log), String> {
    run_pipeline(m, &rewrites(opts.level), opts)
}

/// Run `rewrites` to a capped fixpoint, then plan memory.
pub fn run_pipeline(
    mut m: Module,
    rewrites: &[Pass],
    opts: &Options,
) -> Result<(Module, Log), String> {
    let mut log = Log::default();
    verify(&m).map_err(|e| format!("the input graph is broken: {e}"))?;
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
    run_pass(&PLAN_MEMORY, &mut m, opts, &mut log)?;
    Ok((m, log))
}

/// The schedule position of every value.
pub(crate) fn positions(
    g: &Graph,
) -> std::collections::HashMap<petgraph::stable_graph::NodeIndex, usize> {
    g.order.iter().enumerate().map(|(p, &i)| (i, p)).collect()
}
