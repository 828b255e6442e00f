//! `run --check-finite`: where non-finite logits come from. The interpreter
//! walks the network and names the first value that holds a NaN or an
//! infinity (its inputs do not), with its place in the spec.

use ndarray::ArrayD;

use crate::backend::{interp, Program};
use crate::ir::{GraphError, Stage};
use crate::syntax::SourceMap;

pub fn explain(p: &Program, x: &ArrayD<f32>, sources: &SourceMap) {
    let g = p.prepared().graph();
    let Some(w) = p.prepared().weights() else {
        return;
    };
    let finite_input = x.iter().all(|v| v.is_finite());
    match interp::first_non_finite(g, w, x.clone()) {
        Ok(Some((i, nan, inf))) if i == g.input => {
            eprintln!("  the input itself holds {nan} NaN and {inf} infinite values");
        }
        Ok(Some((i, nan, inf))) => {
            let len = g.node(i).shape.numel();
            let e = GraphError::new(
                Stage::Run("check-finite"),
                format!("the first value to become non-finite: {nan} NaN and {inf} infinite of its {len} values, from finite inputs"),
            )
            .at(g, i)
            .help(if finite_input {
                "its weights, or values too large for f32: the values before it are finite"
            } else {
                "the input is not finite"
            });
            eprint!("{}", e.diagnostic().render(sources, super::colour()));
        }
        Ok(None) => eprintln!(
            "  the interpreter finds every value finite: the backend and the reference differ here"
        ),
        Err(e) => super::report(&e, sources),
    }
}
