//! resnetc: a declarative compiler for residual networks.
//!
//! The stages are types: [`syntax`] parses `.rn` text, [`lower`] checks it and
//! builds the [`ir::Graph`], and reports and backends take that graph.

pub mod backend;
pub mod cli;
pub mod eval;
pub mod io;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod pages;
pub mod passes;
pub mod report;
pub mod syntax;
pub mod weights;
