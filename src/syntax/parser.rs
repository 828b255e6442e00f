//! From text to [`ast::File`] with pest. Syntax errors become [`Diagnostic`]s.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use pest_derive::Parser;

use super::ast::*;
use super::diag::Diagnostic;
use super::source::{FileId, Span};

#[derive(Parser)]
#[grammar = "../grammar/resnet.pest"]
struct RnParser;

/// Parse one file. Syntax errors stop at the first (pest reports one).
pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostic> {
    // Ask pest to record the literal tokens it tried, so that errors can say
    // "expected `,` or `)`" and not only rule names.
    pest::set_error_detail(true);
    let mut pairs = RnParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let mut out = File::default();
    let Some(root) = pairs.next() else {
        return Ok(out);
    };
    let b = Builder { file };
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::import => out.imports.push(b.import(item)),
            Rule::block_def => out.blocks.push(b.block_def(item)?),
            Rule::network => out.networks.push(b.network(item)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Parse a lone expression (used by tests and the `--set` style flags).
pub fn parse_expr(file: FileId, text: &str) -> Result<Expr, Diagnostic> {
    let mut pairs = RnParser::parse(Rule::expr, text).map_err(|e| syntax_error(file, text, e))?;
    let b = Builder { file };
    match pairs.next() {
        Some(p) if p.as_str().len() == text.trim_end().len() => b.expr(p),
        Some(p) => Err(Diagnostic::at(
            "syntax",
            Span::new(file, p.as_span().end(), text.len()),
            "unexpected text after the expression",
        )),
        None => Err(Diagnostic::at(
            "syntax",
            Span::new(file, 0, text.len()),
            "expected an expression",
        )),
    }
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::import => "`import`",
        Rule::block_def => "a block definition",
        Rule::network => "a network",
        Rule::params | Rule::param => "a parameter",
        Rule::body => "`{`",
        Rule::let_stmt | Rule::add_stmt | Rule::layer => "a statement",
        Rule::label => "a layer label",
        Rule::input_decl => "`input`",
        Rule::preprocess => "a preprocess section `{ resize = 256 ... }`",
        Rule::pp_item => "a preprocess setting such as `crop = 224`",
        Rule::pp_list => "a list of numbers such as `[0.485, 0.456, 0.406]`",
        Rule::number => "a number",
        Rule::shortcut_decl | Rule::stage_shortcut | Rule::kw_shortcut => "`shortcut`",
        Rule::shortcut | Rule::shortcut_kind => "a shortcut option (A, B, C or none)",
        Rule::stem | Rule::kw_stem => "`stem`",
        Rule::head | Rule::kw_head => "`head`",
        Rule::stage | Rule::kw_stage => "`stage`",
        Rule::repeat => "a repeat count such as `x 3`",
        Rule::stage_stride | Rule::kw_stride => "`stride`",
        Rule::stage_dilation | Rule::kw_dilation => "`dilation`",
        Rule::call => "an op or block call",
        Rule::call_args => "`(`",
        Rule::arg => "an argument",
        Rule::expr | Rule::cond | Rule::unary => "an expression",
        Rule::neg | Rule::sub => "`-`",
        Rule::not => "`!`",
        Rule::or => "`||`",
        Rule::and => "`&&`",
        Rule::eq => "`==`",
        Rule::ne => "`!=`",
        Rule::le => "`<=`",
        Rule::ge => "`>=`",
        Rule::lt => "`<`",
        Rule::gt => "`>`",
        Rule::add => "`+`",
        Rule::mul => "`*`",
        Rule::div => "`/`",
        Rule::rem => "`%`",
        Rule::dims => "dimensions such as `3x224x224`",
        Rule::int => "an integer",
        Rule::boolean => "`true` or `false`",
        Rule::string | Rule::string_inner => "a string",
        Rule::ident => "a name",
        Rule::kw_import => "`import`",
        Rule::kw_block => "`block`",
        Rule::kw_network => "`network`",
        Rule::kw_let => "`let`",
        Rule::kw_add => "`add`",
        Rule::kw_as => "`as`",
        Rule::kw_input => "`input`",
        _ => "something else",
    }
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Underline the token we stopped at, not an empty point.
    let end = if end > start {
        end
    } else {
        let rest = &text[start.min(text.len())..];
        let token = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || "(){},:;=".contains(*c))
            .map(|(i, c)| if i == 0 { c.len_utf8() } else { i })
            .unwrap_or(rest.len());
        start + token
    };
    let found = match text.get(start..end) {
        Some("") | None => "end of file".to_string(),
        Some(s) => format!("`{s}`"),
    };
    let punctuation: Vec<String> = e
        .parse_attempts()
        .map(|a| a.expected_tokens())
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.to_string())
        .filter(|t| PUNCTUATION.contains(&t.as_str()))
        .map(|t| format!("`{t}`"))
        .collect();
    let message = match &e.variant {
        _ if !punctuation.is_empty() => {
            let names: Vec<&str> = punctuation.iter().map(String::as_str).collect();
            format!("syntax error: expected {}, found {found}", one_of(&names))
        }
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<&str> = positives.iter().map(describe).collect();
            names.dedup();
            let mut seen = Vec::new();
            for n in names {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            format!("syntax error: expected {}, found {found}", one_of(&seen))
        }
        ErrorVariant::ParsingError { .. } => format!("syntax error: unexpected {found}"),
        ErrorVariant::CustomError { message } => format!("syntax error: {message}"),
    };
    Diagnostic::at("syntax", Span::new(file, start, end), message)
}

/// Tokens worth naming in an error: a missing one is the usual mistake.
const PUNCTUATION: &[&str] = &["(", ")", "{", "}", ",", ":", "="];

fn one_of(items: &[&str]) -> String {
    match items {
        [] => "something else".into(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

struct Builder {
    file: FileId,
}

type R<T> = Result<T, Diagnostic>;

impl Builder {
    /// The pair's span without the whitespace pest's implicit rule leaves at its end.
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(
            self.file,
            s.start(),
            s.start() + p.as_str().trim_end().len(),
        )
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn int(&self, p: &Pair<Rule>) -> R<i64> {
        let digits: String = p.as_str().chars().filter(|c| *c != '_').collect();
        digits.parse::<i64>().map_err(|_| {
            Diagnostic::at(
                "overflow",
                self.span(p),
                format!("integer `{}` is too large", p.as_str()),
            )
            .help(format!("integers are limited to {}", i64::MAX))
        })
    }

    fn import(&self, p: Pair<Rule>) -> Import {
        let span = self.span(&p);
        let path = p
            .into_inner()
            .find(|q| q.as_rule() == Rule::string)
            .and_then(|s| s.into_inner().next())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        Import { path, span }
    }

    fn block_def(&self, p: Pair<Rule>) -> R<BlockDef> {
        let span = self.span(&p);
        let mut name = None;
        let mut params = Vec::new();
        let mut body = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::ident => name = Some(self.ident(q)),
                Rule::params => {
                    for param in q.into_inner() {
                        let mut it = param.into_inner();
                        let pname = it.next().map(|i| self.ident(i));
                        let default = it.next().map(|e| self.expr(e)).transpose()?;
                        if let Some(pname) = pname {
                            params.push(Param {
                                name: pname,
                                default,
                            });
                        }
                    }
                }
                Rule::body => body = self.body(q)?,
                _ => {}
            }
        }
        Ok(BlockDef {
            name: name.unwrap_or_else(|| self.missing(span)),
            params,
            body,
            span,
        })
    }

    fn missing(&self, span: Span) -> Ident {
        Ident {
            name: String::new(),
            span,
        }
    }

    fn body(&self, p: Pair<Rule>) -> R<Vec<Stmt>> {
        p.into_inner().map(|s| self.stmt(s)).collect()
    }

    fn stmt(&self, p: Pair<Rule>) -> R<Stmt> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::let_stmt => {
                let mut it = p.into_inner().filter(|q| q.as_rule() != Rule::kw_let);
                let name = it.next().map(|q| self.ident(q));
                let value = it.next().map(|q| self.expr(q)).transpose()?;
                match (name, value) {
                    (Some(name), Some(value)) => Ok(Stmt::Let { name, value }),
                    _ => Err(Diagnostic::at("syntax", span, "malformed `let`")),
                }
            }
            Rule::add_stmt => {
                let args = match p.into_inner().find(|q| q.as_rule() == Rule::call_args) {
                    Some(a) => self.args(a)?,
                    None => Vec::new(),
                };
                Ok(Stmt::AddShortcut { args, span })
            }
            _ => {
                let mut label = None;
                let mut call = None;
                let mut bind = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::label => label = Some(self.ident(q)),
                        Rule::call => call = Some(self.call(q)?),
                        Rule::ident => bind = Some(self.ident(q)),
                        _ => {}
                    }
                }
                let call =
                    call.ok_or_else(|| Diagnostic::at("syntax", span, "expected an op call"))?;
                Ok(Stmt::Layer {
                    label,
                    call,
                    bind,
                    span,
                })
            }
        }
    }

    fn call(&self, p: Pair<Rule>) -> R<Call> {
        let span = self.span(&p);
        let mut name = self.missing(span);
        let mut args = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::ident => name = self.ident(q),
                Rule::call_args => args = self.args(q)?,
                _ => {}
            }
        }
        Ok(Call { name, args, span })
    }

    fn args(&self, p: Pair<Rule>) -> R<Vec<Arg>> {
        p.into_inner()
            .map(|a| {
                let span = self.span(&a);
                let mut name = None;
                let mut value = None;
                for q in a.into_inner() {
                    match q.as_rule() {
                        Rule::ident => name = Some(self.ident(q)),
                        Rule::expr => value = Some(self.expr(q)?),
                        _ => {}
                    }
                }
                let value =
                    value.ok_or_else(|| Diagnostic::at("syntax", span, "expected a value"))?;
                Ok(Arg { name, value, span })
            })
            .collect()
    }

    fn network(&self, p: Pair<Rule>) -> R<Network> {
        let span = self.span(&p);
        let mut net = Network {
            name: self.missing(span),
            input: None,
            preprocess: Vec::new(),
            shortcut: None,
            stem: None,
            stages: Vec::new(),
            head: None,
            span,
        };
        for q in p.into_inner() {
            let qspan = self.span(&q);
            match q.as_rule() {
                Rule::ident => net.name = self.ident(q),
                Rule::input_decl => {
                    let parts: Vec<_> = q.into_inner().collect();
                    if let Some(pp) = parts.iter().find(|d| d.as_rule() == Rule::preprocess) {
                        net.preprocess = self.preprocess(pp.clone())?;
                    }
                    let dims = parts.into_iter().find(|d| d.as_rule() == Rule::dims);
                    if let Some(d) = dims {
                        let dspan = self.span(&d);
                        let mut v = [0u64; 3];
                        for (i, part) in d.as_str().split('x').take(3).enumerate() {
                            let digits: String = part.chars().filter(|c| *c != '_').collect();
                            v[i] = digits.parse().map_err(|_| {
                                Diagnostic::at(
                                    "overflow",
                                    dspan,
                                    format!("input dimension `{part}` is too large"),
                                )
                            })?;
                        }
                        if net.input.is_some() {
                            return Err(Diagnostic::at(
                                "duplicate",
                                qspan,
                                "the input is declared twice",
                            ));
                        }
                        net.input = Some((v, dspan));
                    }
                }
                Rule::shortcut_decl => {
                    if net.shortcut.is_some() {
                        return Err(Diagnostic::at(
                            "duplicate",
                            qspan,
                            "the network's shortcut option is declared twice",
                        ));
                    }
                    let s = q.into_inner().find(|s| s.as_rule() == Rule::shortcut);
                    net.shortcut = s.map(|s| self.shortcut(s)).transpose()?;
                }
                Rule::stem | Rule::head => {
                    let is_stem = q.as_rule() == Rule::stem;
                    let body = match q.into_inner().find(|b| b.as_rule() == Rule::body) {
                        Some(b) => self.body(b)?,
                        None => Vec::new(),
                    };
                    let section = Some(Section { body, span: qspan });
                    let slot = if is_stem {
                        &mut net.stem
                    } else {
                        &mut net.head
                    };
                    if slot.is_some() {
                        let what = if is_stem { "stem" } else { "head" };
                        return Err(Diagnostic::at(
                            "duplicate",
                            qspan,
                            format!("the {what} is declared twice"),
                        ));
                    }
                    *slot = section;
                }
                Rule::stage => net.stages.push(self.stage(q)?),
                _ => {}
            }
        }
        Ok(net)
    }

    fn preprocess(&self, p: Pair<Rule>) -> R<Vec<(Ident, PpValue, Span)>> {
        let mut items = Vec::new();
        for item in p.into_inner().filter(|q| q.as_rule() == Rule::pp_item) {
            let span = self.span(&item);
            let mut key = self.missing(span);
            let mut value = PpValue::List(Vec::new());
            for q in item.into_inner() {
                let qspan = self.span(&q);
                let num = |t: &str| {
                    t.parse::<f64>().map_err(|_| {
                        Diagnostic::at("value", qspan, format!("`{t}` is not a number"))
                    })
                };
                match q.as_rule() {
                    Rule::ident => key = self.ident(q),
                    Rule::number => value = PpValue::Number(num(q.as_str())?),
                    Rule::pp_list => {
                        let v: R<Vec<f64>> = q.into_inner().map(|n| num(n.as_str())).collect();
                        value = PpValue::List(v?);
                    }
                    Rule::string => {
                        let inner = q.into_inner().next().map_or("", |s| s.as_str());
                        value = PpValue::Str(inner.to_string());
                    }
                    _ => {}
                }
            }
            items.push((key, value, span));
        }
        Ok(items)
    }

    fn shortcut(&self, p: Pair<Rule>) -> R<ShortcutSpec> {
        let span = self.span(&p);
        let mut kind = ShortcutKind::B;
        let mut args = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::shortcut_kind => {
                    kind = match q.as_str() {
                        "A" => ShortcutKind::A,
                        "B" => ShortcutKind::B,
                        "C" => ShortcutKind::C,
                        _ => ShortcutKind::None,
                    }
                }
                Rule::call_args => args = self.args(q)?,
                _ => {}
            }
        }
        Ok(ShortcutSpec { kind, args, span })
    }

    fn stage(&self, p: Pair<Rule>) -> R<Stage> {
        let span = self.span(&p);
        let mut name = self.missing(span);
        let mut block = None;
        let mut repeat = (1, span);
        let mut stride = None;
        let mut dilation = None;
        let mut shortcut = None;
        for q in p.into_inner() {
            let qspan = self.span(&q);
            match q.as_rule() {
                Rule::ident => name = self.ident(q),
                Rule::call => block = Some(self.call(q)?),
                Rule::repeat => {
                    if let Some(n) = q.into_inner().next() {
                        let v = self.int(&n)?;
                        repeat = (v as u64, qspan);
                    }
                }
                Rule::stage_stride => {
                    if let Some(e) = q.into_inner().find(|e| e.as_rule() == Rule::expr) {
                        stride = Some(self.expr(e)?);
                    }
                }
                Rule::stage_dilation => {
                    if let Some(e) = q.into_inner().find(|e| e.as_rule() == Rule::expr) {
                        dilation = Some(self.expr(e)?);
                    }
                }
                Rule::stage_shortcut => {
                    if let Some(s) = q.into_inner().find(|s| s.as_rule() == Rule::shortcut) {
                        shortcut = Some(self.shortcut(s)?);
                    }
                }
                _ => {}
            }
        }
        let block = block.ok_or_else(|| Diagnostic::at("syntax", span, "expected a block"))?;
        Ok(Stage {
            name,
            block,
            repeat: repeat.0,
            repeat_span: repeat.1,
            stride,
            dilation,
            shortcut,
            span,
        })
    }

    fn expr(&self, p: Pair<Rule>) -> R<Expr> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr => {
                let mut it = p.into_inner();
                let cond = match it.next() {
                    Some(c) => self.expr(c)?,
                    None => return Err(Diagnostic::at("syntax", span, "expected an expression")),
                };
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok(Expr {
                        kind: ExprKind::Cond(
                            Box::new(cond),
                            Box::new(self.expr(a)?),
                            Box::new(self.expr(b)?),
                        ),
                        span,
                    }),
                    _ => Ok(cond),
                }
            }
            Rule::cond => PRATT
                .map_primary(|q| self.expr(q))
                .map_infix(|l, op, r| {
                    let (l, r) = (l?, r?);
                    let op = match op.as_rule() {
                        Rule::or => BinOp::Or,
                        Rule::and => BinOp::And,
                        Rule::eq => BinOp::Eq,
                        Rule::ne => BinOp::Ne,
                        Rule::lt => BinOp::Lt,
                        Rule::le => BinOp::Le,
                        Rule::gt => BinOp::Gt,
                        Rule::ge => BinOp::Ge,
                        Rule::add => BinOp::Add,
                        Rule::sub => BinOp::Sub,
                        Rule::mul => BinOp::Mul,
                        Rule::div => BinOp::Div,
                        _ => BinOp::Rem,
                    };
                    let span = Span::new(self.file, l.span.start, r.span.end);
                    Ok(Expr {
                        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
                        span,
                    })
                })
                .parse(p.into_inner()),
            Rule::unary => {
                let parts: Vec<Pair<Rule>> = p.into_inner().collect();
                let Some((last, prefixes)) = parts.split_last() else {
                    return Err(Diagnostic::at("syntax", span, "expected an expression"));
                };
                let mut e = self.expr(last.clone())?;
                for pre in prefixes.iter().rev() {
                    let kind = if pre.as_rule() == Rule::neg {
                        ExprKind::Neg(Box::new(e))
                    } else {
                        ExprKind::Not(Box::new(e))
                    };
                    e = Expr {
                        kind,
                        span: Span::new(self.file, self.span(pre).start, span.end),
                    };
                }
                Ok(e)
            }
            Rule::int => Ok(Expr {
                kind: ExprKind::Int(self.int(&p)?),
                span,
            }),
            Rule::boolean => Ok(Expr {
                kind: ExprKind::Bool(p.as_str() == "true"),
                span,
            }),
            Rule::string => Ok(Expr {
                kind: ExprKind::Str(
                    p.into_inner()
                        .next()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                ),
                span,
            }),
            Rule::ident => Ok(Expr {
                kind: ExprKind::Name(p.as_str().to_string()),
                span,
            }),
            _ => Err(Diagnostic::at("syntax", span, "expected an expression")),
        }
    }
}

static PRATT: std::sync::LazyLock<PrattParser<Rule>> = std::sync::LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::infix(Rule::eq, Assoc::Left) | Op::infix(Rule::ne, Assoc::Left))
        .op(Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left))
});
