//! The IR: a graph of typed ops with a shape on every value.

pub mod cost;
pub mod dot;
pub mod error;
pub mod graph;
pub mod liveness;
pub mod op;
pub mod plan;
pub mod preprocess;
pub mod shape;
pub mod text;
pub mod yaml;

pub use error::{At, GraphError, Stage};
pub use graph::{Graph, Node, StageInfo};
pub use op::{Op, ParamKind, ParamSpec};
pub use shape::Shape;
