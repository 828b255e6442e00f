//! Errors after lowering: a pass, the memory plan or a backend refusing or
//! failing on one value of the graph. They name the value and carry its span,
//! so they render against the spec like the front end's diagnostics.

use std::fmt;

use petgraph::stable_graph::NodeIndex;

use super::Graph;
use crate::syntax::{Diagnostic, Span};

/// The value an error is about: its name and where the spec made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub value: String,
    pub span: Span,
    /// The stage statement that instantiated the block, for values made in one.
    pub origin: Option<Span>,
}

impl At {
    pub fn node(g: &Graph, i: NodeIndex) -> At {
        let n = g.node(i);
        At {
            value: n.name.clone(),
            span: n.span,
            origin: n.origin,
        }
    }
}

/// Where after lowering an error arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A pass of the optimizer, by name.
    Pass(&'static str),
    /// Preparing the optimized graph for backends (legalizing, planning memory).
    Prepare,
    /// A backend checking or compiling a program, by name.
    Backend(&'static str),
    /// Running a compiled network, on the named backend.
    Run(&'static str),
    /// Checking what a run will take against the memory available.
    Memory,
}

impl Stage {
    fn code(self) -> &'static str {
        match self {
            Stage::Pass(_) => "pass",
            Stage::Prepare => "prepare",
            Stage::Backend(_) => "backend",
            Stage::Run(_) => "run",
            Stage::Memory => "memory",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Pass(p) => write!(f, "pass `{p}`"),
            Stage::Prepare => f.write_str("prepare"),
            Stage::Backend(b) => write!(f, "backend `{b}`"),
            Stage::Run(b) => write!(f, "run ({b})"),
            Stage::Memory => f.write_str("memory"),
        }
    }
}

/// Something after lowering went wrong: `stage` says where, `at` which
/// value when there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct GraphError {
    pub stage: Stage,
    /// Boxed: errors travel in `Result`s on every path, kept small.
    pub at: Option<Box<At>>,
    pub message: String,
    pub help: Option<String>,
}

impl GraphError {
    pub fn new(stage: Stage, message: impl Into<String>) -> GraphError {
        GraphError {
            stage,
            at: None,
            message: message.into(),
            help: None,
        }
    }

    /// The same error, about value `i` of `g`.
    pub fn at(mut self, g: &Graph, i: NodeIndex) -> GraphError {
        self.at = Some(Box::new(At::node(g, i)));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> GraphError {
        self.help = Some(help.into());
        self
    }

    /// As a diagnostic, labelled at the value (and the statement that made
    /// its block): render it with the spec's [`crate::syntax::SourceMap`].
    pub fn diagnostic(&self) -> Diagnostic {
        let mut d = Diagnostic::new(self.stage.code(), self.to_string());
        if let Some(at) = &self.at {
            if !at.span.is_empty() {
                d = d.label(at.span, format!("`{}` comes from here", at.value));
            }
            if let Some(o) = at.origin.filter(|o| !o.is_empty()) {
                d = d.label(o, "in the block made here");
            }
        }
        match &self.help {
            Some(h) => d.help(h.clone()),
            None => d,
        }
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.stage)?;
        if let Some(at) = &self.at {
            write!(f, "`{}`: ", at.value)?;
        }
        f.write_str(&self.message)
    }
}
