//! Values and expression evaluation: the width arithmetic of block parameters.

use std::collections::HashMap;
use std::fmt;

use crate::syntax::ast::{BinOp, Expr, ExprKind};
use crate::syntax::Diagnostic;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

pub type Env = HashMap<String, Value>;

/// Evaluate with checked arithmetic: overflow and division by zero are errors.
pub fn eval(e: &Expr, env: &Env) -> Result<Value, Diagnostic> {
    let err = |msg: String| Diagnostic::at("eval", e.span, msg);
    match &e.kind {
        ExprKind::Int(i) => Ok(Value::Int(*i)),
        ExprKind::Bool(b) => Ok(Value::Bool(*b)),
        ExprKind::Str(s) => Ok(Value::Str(s.clone())),
        ExprKind::Name(n) => env.get(n).cloned().ok_or_else(|| {
            let mut names: Vec<&String> = env.keys().collect();
            names.sort();
            let d = Diagnostic::at("unknown-name", e.span, format!("unknown name `{n}`"));
            match suggest(n, names.iter().map(|s| s.as_str())) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if names.is_empty() => d.help("no parameters are in scope here"),
                None => d.help(format!(
                    "names in scope: {}",
                    names
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }),
        ExprKind::Neg(x) => match eval(x, env)? {
            Value::Int(i) => i
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| err("integer overflow".into())),
            v => Err(err(format!(
                "expected an integer after `-`, found {}",
                v.type_name()
            ))),
        },
        ExprKind::Not(x) => match eval(x, env)? {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            v => Err(err(format!(
                "expected a boolean after `!`, found {}",
                v.type_name()
            ))),
        },
        ExprKind::Cond(c, a, b) => match eval(c, env)? {
            Value::Bool(true) => eval(a, env),
            Value::Bool(false) => eval(b, env),
            v => Err(Diagnostic::at(
                "type",
                c.span,
                format!("expected a boolean condition, found {}", v.type_name()),
            )),
        },
        ExprKind::Binary(op, l, r) => {
            let (a, b) = (eval(l, env)?, eval(r, env)?);
            binary(*op, a, b).map_err(err)
        }
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, String> {
    use Value::*;
    let overflow = || format!("integer overflow in `{}`", op.symbol());
    Ok(match (op, &a, &b) {
        (BinOp::Eq, _, _) => Bool(a == b),
        (BinOp::Ne, _, _) => Bool(a != b),
        (BinOp::And, Bool(x), Bool(y)) => Bool(*x && *y),
        (BinOp::Or, Bool(x), Bool(y)) => Bool(*x || *y),
        (BinOp::Lt, Int(x), Int(y)) => Bool(x < y),
        (BinOp::Le, Int(x), Int(y)) => Bool(x <= y),
        (BinOp::Gt, Int(x), Int(y)) => Bool(x > y),
        (BinOp::Ge, Int(x), Int(y)) => Bool(x >= y),
        (BinOp::Add, Int(x), Int(y)) => Int(x.checked_add(*y).ok_or_else(overflow)?),
        (BinOp::Sub, Int(x), Int(y)) => Int(x.checked_sub(*y).ok_or_else(overflow)?),
        (BinOp::Mul, Int(x), Int(y)) => Int(x.checked_mul(*y).ok_or_else(overflow)?),
        (BinOp::Div | BinOp::Rem, Int(_), Int(0)) => return Err("division by zero".into()),
        (BinOp::Div, Int(x), Int(y)) => Int(x.checked_div(*y).ok_or_else(overflow)?),
        (BinOp::Rem, Int(x), Int(y)) => Int(x.checked_rem(*y).ok_or_else(overflow)?),
        (BinOp::And | BinOp::Or, _, _) => {
            return Err(format!(
                "`{}` takes two booleans, found {} and {}",
                op.symbol(),
                a.type_name(),
                b.type_name()
            ))
        }
        _ => {
            return Err(format!(
                "`{}` takes two integers, found {} and {}",
                op.symbol(),
                a.type_name(),
                b.type_name()
            ))
        }
    })
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parser::parse_expr;
    use crate::syntax::FileId;

    fn run(src: &str, env: &[(&str, i64)]) -> Result<Value, String> {
        let e = parse_expr(FileId(0), src).map_err(|d| d.message)?;
        let env: Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Int(*v)))
            .collect();
        eval(&e, &env).map_err(|d| d.message)
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(run("planes * 4", &[("planes", 64)]), Ok(Value::Int(256)));
        assert_eq!(run("1 + 2 * 3 - 4 / 2", &[]), Ok(Value::Int(5)));
        assert_eq!(run("(1 + 2) * 3 % 5", &[]), Ok(Value::Int(4)));
        assert_eq!(run("-3 + 10", &[]), Ok(Value::Int(7)));
        assert_eq!(run("w * 64 / 64 * 32", &[("w", 4)]), Ok(Value::Int(128)));
    }

    #[test]
    fn conditionals() {
        assert_eq!(run("s == 2 ? 1 : s", &[("s", 2)]), Ok(Value::Int(1)));
        assert_eq!(run("s == 2 ? 1 : s", &[("s", 3)]), Ok(Value::Int(3)));
        assert_eq!(run("true && !false ? 7 : 8", &[]), Ok(Value::Int(7)));
        assert_eq!(run("1 < 2 == true", &[]), Ok(Value::Bool(true)));
    }

    #[test]
    fn errors_are_values() {
        assert_eq!(run("1 / 0", &[]), Err("division by zero".into()));
        assert!(run("9223372036854775807 + 1", &[])
            .unwrap_err()
            .contains("overflow"));
        assert!(run("true + 1", &[]).unwrap_err().contains("two integers"));
        assert!(run("plane * 4", &[("planes", 1)])
            .unwrap_err()
            .contains("unknown name `plane`"));
        assert!(run("1 ? 2 : 3", &[]).unwrap_err().contains("boolean"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("botleneck", ["basic", "bottleneck"].into_iter()),
            Some("bottleneck")
        );
        assert_eq!(suggest("xyz", ["basic", "bottleneck"].into_iter()), None);
    }
}
