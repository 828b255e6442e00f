//! The syntax tree of a `.rn` file. Every node carries its [`Span`].

use super::source::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Bool(bool),
    Str(String),
    Name(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `cond ? then : else`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// `name = value` or a positional `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// `name(args)`; the parentheses are optional when there are no arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = expr`
    Let { name: Ident, value: Expr },
    /// `[label:] op(args) [as name]`
    Layer {
        label: Option<Ident>,
        call: Call,
        bind: Option<Ident>,
        span: Span,
    },
    /// `add shortcut[(args)]`
    AddShortcut { args: Vec<Arg>, span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortcutKind {
    A,
    B,
    C,
    None,
}

/// `shortcut B`, `shortcut A(pad = "after")`
#[derive(Debug, Clone, PartialEq)]
pub struct ShortcutSpec {
    pub kind: ShortcutKind,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// `stage layer2: basic(128) x 2 stride 2 shortcut C`
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: Ident,
    pub block: Call,
    pub repeat: u64,
    pub repeat_span: Span,
    pub stride: Option<Expr>,
    /// `dilation D`: the stage's blocks dilate by D instead of striding
    /// (torchvision's `replace_stride_with_dilation`).
    pub dilation: Option<Expr>,
    pub shortcut: Option<ShortcutSpec>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: Ident,
    /// Channels, height, width.
    pub input: Option<([u64; 3], Span)>,
    /// `input 3x224x224 { resize = 256 ... }`: key, value, span.
    pub preprocess: Vec<(Ident, PpValue, Span)>,
    pub shortcut: Option<ShortcutSpec>,
    pub stem: Option<Section>,
    pub stages: Vec<Stage>,
    pub head: Option<Section>,
    pub span: Span,
}

/// A preprocessing value: a number, a list of numbers or a string.
#[derive(Debug, Clone, PartialEq)]
pub enum PpValue {
    Number(f64),
    List(Vec<f64>),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub imports: Vec<Import>,
    pub blocks: Vec<BlockDef>,
    pub networks: Vec<Network>,
}
