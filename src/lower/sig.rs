//! Signatures of the primitive ops, and binding call arguments to parameters.

use super::eval::{eval, suggest, Env, Value};
use crate::syntax::ast::Arg;
use crate::syntax::{Diagnostic, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Int,
    Bool,
    Str,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Bool => "a boolean",
            Ty::Str => "a string",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Default {
    Required,
    Int(i64),
    Bool(bool),
    /// Defaults to the value of another parameter (pooling stride = kernel).
    Same(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct ParamSig {
    pub name: &'static str,
    pub ty: Ty,
    pub default: Default,
}

/// A primitive op: its parameters, the first `positional` of which may be
/// given without a name.
#[derive(Debug)]
pub struct OpSig {
    pub name: &'static str,
    pub params: &'static [ParamSig],
    pub positional: usize,
    pub doc: &'static str,
}

const fn p(name: &'static str, ty: Ty, default: Default) -> ParamSig {
    ParamSig { name, ty, default }
}

const POOL: &[ParamSig] = &[
    p("k", Ty::Int, Default::Required),
    p("stride", Ty::Int, Default::Same("k")),
    p("pad", Ty::Int, Default::Int(0)),
    p("ceil", Ty::Bool, Default::Bool(false)),
];

pub static PRIMITIVES: &[OpSig] = &[
    OpSig {
        name: "conv",
        params: &[
            p("out", Ty::Int, Default::Required),
            p("k", Ty::Int, Default::Required),
            p("stride", Ty::Int, Default::Int(1)),
            p("pad", Ty::Int, Default::Int(0)),
            p("groups", Ty::Int, Default::Int(1)),
            p("bias", Ty::Bool, Default::Bool(false)),
            p("dilation", Ty::Int, Default::Int(1)),
        ],
        positional: 2,
        doc: "2-d convolution, square kernel: conv(out, k, stride=1, pad=0, groups=1, bias=false, dilation=1)",
    },
    OpSig {
        name: "bn",
        params: &[],
        positional: 0,
        doc: "batch normalization over channels (eps 1e-5)",
    },
    OpSig {
        name: "relu",
        params: &[],
        positional: 0,
        doc: "rectified linear unit",
    },
    OpSig {
        name: "max_pool",
        params: POOL,
        positional: 1,
        doc: "max pooling: max_pool(k, stride=k, pad=0, ceil=false); ceil rounds the output size up, as PyTorch's ceil_mode",
    },
    OpSig {
        name: "avg_pool",
        params: POOL,
        positional: 1,
        doc: "average pooling: avg_pool(k, stride=k, pad=0, ceil=false); ceil rounds the output size up, as PyTorch's ceil_mode",
    },
    OpSig {
        name: "global_avg_pool",
        params: &[],
        positional: 0,
        doc: "average over all pixels: NxCxHxW -> NxCx1x1",
    },
    OpSig {
        name: "flatten",
        params: &[],
        positional: 0,
        doc: "NxCxHxW -> Nx(C*H*W)",
    },
    OpSig {
        name: "fc",
        params: &[
            p("out", Ty::Int, Default::Required),
            p("bias", Ty::Bool, Default::Bool(true)),
        ],
        positional: 1,
        doc: "fully connected layer: fc(out, bias=true)",
    },
    OpSig {
        name: "softmax",
        params: &[],
        positional: 0,
        doc: "softmax over features",
    },
];

pub fn primitive(name: &str) -> Option<&'static OpSig> {
    PRIMITIVES.iter().find(|s| s.name == name)
}

/// Match `args` to `params` by position then by name, without evaluating.
/// Returns, for each parameter, the argument that sets it.
pub fn match_args<'a>(
    what: &str,
    params: &[&str],
    positional: usize,
    args: &'a [Arg],
) -> Result<Vec<Option<&'a Arg>>, Diagnostic> {
    let mut slots: Vec<Option<&Arg>> = vec![None; params.len()];
    let mut pos = 0;
    for a in args {
        let i = match &a.name {
            None => {
                if pos >= positional.min(params.len()) {
                    let expected = if positional == 0 {
                        "no positional arguments".to_string()
                    } else {
                        format!(
                            "at most {positional} positional argument{} ({})",
                            if positional == 1 { "" } else { "s" },
                            params[..positional.min(params.len())].join(", ")
                        )
                    };
                    return Err(Diagnostic::at(
                        "arity",
                        a.span,
                        format!("{what} takes {expected}, found another"),
                    )
                    .help(if params.len() > positional {
                        format!(
                            "name the others: {}",
                            params[positional..]
                                .iter()
                                .map(|p| format!("{p} = ..."))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else {
                        "remove the extra argument".into()
                    }));
                }
                pos += 1;
                pos - 1
            }
            Some(n) => match params.iter().position(|p| *p == n.name) {
                Some(i) => i,
                None => {
                    let d = Diagnostic::at(
                        "unknown-name",
                        n.span,
                        format!("{what} has no parameter `{}`", n.name),
                    );
                    return Err(match suggest(&n.name, params.iter().copied()) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None if params.is_empty() => d.help(format!("{what} takes no arguments")),
                        None => d.help(format!("its parameters are: {}", params.join(", "))),
                    });
                }
            },
        };
        if let Some(prev) = slots[i] {
            return Err(Diagnostic::at(
                "duplicate",
                a.span,
                format!("`{}` of {what} is given twice", params[i]),
            )
            .label(prev.span, "first given here"));
        }
        slots[i] = Some(a);
    }
    Ok(slots)
}

/// A bound primitive call: each parameter's value, and the span to blame for it.
pub struct Bound {
    pub values: Env,
    pub spans: std::collections::HashMap<&'static str, Span>,
}

impl Bound {
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }
}

/// Bind and evaluate a primitive call's arguments, filling in defaults.
pub fn bind_primitive(
    sig: &OpSig,
    args: &[Arg],
    call_span: Span,
    env: &Env,
) -> Result<Bound, Diagnostic> {
    let names: Vec<&str> = sig.params.iter().map(|p| p.name).collect();
    let what = format!("`{}`", sig.name);
    let slots = match_args(&what, &names, sig.positional, args)?;
    let mut values = Env::new();
    let mut spans = std::collections::HashMap::new();
    for (ps, slot) in sig.params.iter().zip(&slots) {
        if let Some(a) = slot {
            let v = eval(&a.value, env)?;
            check_type(&v, ps.ty, ps.name, a.value.span)?;
            values.insert(ps.name.to_string(), v);
            spans.insert(ps.name, a.value.span);
        }
    }
    for ps in sig.params {
        if values.contains_key(ps.name) {
            continue;
        }
        let v = match ps.default {
            Default::Required => {
                return Err(Diagnostic::at(
                    "arity",
                    call_span,
                    format!("{what} needs its `{}` argument", ps.name),
                )
                .help(sig.doc))
            }
            Default::Int(i) => Value::Int(i),
            Default::Bool(b) => Value::Bool(b),
            Default::Same(other) => values.get(other).cloned().unwrap_or(Value::Int(1)),
        };
        spans.insert(ps.name, spans.get(ps.name).copied().unwrap_or(call_span));
        values.insert(ps.name.to_string(), v);
    }
    Ok(Bound { values, spans })
}

pub fn check_type(v: &Value, ty: Ty, name: &str, span: Span) -> Result<(), Diagnostic> {
    let ok = matches!(
        (v, ty),
        (Value::Int(_), Ty::Int) | (Value::Bool(_), Ty::Bool) | (Value::Str(_), Ty::Str)
    );
    if ok {
        Ok(())
    } else {
        Err(Diagnostic::at(
            "type",
            span,
            format!(
                "expected {} for `{name}`, found {} ({v})",
                ty.name(),
                v.type_name()
            ),
        ))
    }
}

/// Largest channel count or spatial size we accept (16M): larger is a typo.
pub const MAX_DIM: i64 = 1 << 24;

/// An integer argument used as a size: `min..=MAX_DIM`.
pub fn as_size(v: i64, min: i64, what: &str, span: Span) -> Result<usize, Diagnostic> {
    if v < min {
        return Err(Diagnostic::at(
            "value",
            span,
            format!("expected {what} of at least {min}, found {v}"),
        ));
    }
    if v > MAX_DIM {
        return Err(Diagnostic::at(
            "value",
            span,
            format!("expected {what} of at most {MAX_DIM}, found {v}"),
        )
        .help("sizes this large are almost certainly a mistake in the spec"));
    }
    Ok(v as usize)
}
