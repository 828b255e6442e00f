//! The front end: source files, the syntax tree, the parser and diagnostics.

pub mod ast;
pub mod diag;
pub mod parser;
pub mod source;

pub use diag::{Diagnostic, Diagnostics};
pub use source::{FileId, SourceMap, Span};
