//! Diagnostics: errors as values, rendered with the source line underlined.
//!
//! A [`Diagnostic`] holds spans into a [`SourceMap`]; rendering goes through
//! miette so every message shows `file:line:col` and the offending text.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use super::source::{SourceMap, Span};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One error about user input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// A stable short code, e.g. `shape`, `syntax`, `unknown-name`.
    pub code: &'static str,
    pub message: String,
    /// The first label is the primary location.
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn at(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        let message = message.into();
        Diagnostic::new(code, message).label(span, "")
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn primary(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }

    /// Render as text: `colour` adds ANSI colours for a terminal.
    pub fn render(&self, sources: &SourceMap, colour: bool) -> String {
        let theme = if colour {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let report = Report::build(self, sources);
        let mut out = String::new();
        if handler.render_report(&mut out, &report).is_err() {
            // Fall back to a plain line; rendering must never hide an error.
            out = format!("error: {}\n", self.message);
        }
        out
    }
}

/// Several diagnostics, as returned by a stage that collects all it finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn render(&self, sources: &SourceMap, colour: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(sources, colour));
        }
        out
    }
    /// Ok when no diagnostic was collected.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A diagnostic bound to its source text, in the shape miette wants. Labels in
/// the primary file are drawn under its snippet; labels in other files (a block
/// defined in the prelude, used in a spec) become related notes.
#[derive(Debug)]
struct Report {
    code: &'static str,
    message: String,
    help: Option<String>,
    source: Option<NamedSource<String>>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report>,
    is_note: bool,
}

impl Report {
    fn build(d: &Diagnostic, sources: &SourceMap) -> Report {
        let Some(first) = d.labels.first() else {
            return Report {
                code: d.code,
                message: d.message.clone(),
                help: d.help.clone(),
                source: None,
                labels: Vec::new(),
                related: Vec::new(),
                is_note: false,
            };
        };
        let file = first.span.file;
        let mut labels = Vec::new();
        let mut related = Vec::new();
        for (i, l) in d.labels.iter().enumerate() {
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            if l.span.file == file {
                let span = SourceSpan::new(l.span.start.into(), l.span.len());
                labels.push(if i == 0 {
                    LabeledSpan::new_primary_with_span(text, span)
                } else {
                    LabeledSpan::new_with_span(text, span)
                });
            } else {
                let f = sources.get(l.span.file);
                related.push(Report {
                    code: "",
                    message: format!("note: {}", l.text),
                    help: None,
                    source: Some(
                        NamedSource::new(&f.name, f.text.clone()).with_language("resnetc"),
                    ),
                    labels: vec![LabeledSpan::new_primary_with_span(
                        None,
                        SourceSpan::new(l.span.start.into(), l.span.len()),
                    )],
                    related: Vec::new(),
                    is_note: true,
                });
            }
        }
        let f = sources.get(file);
        Report {
            code: d.code,
            message: d.message.clone(),
            help: d.help.clone(),
            source: Some(NamedSource::new(&f.name, f.text.clone())),
            labels,
            related,
            is_note: false,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.code.is_empty()).then(|| Box::new(format!("resnetc::{}", self.code)) as _)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(if self.is_note {
            miette::Severity::Advice
        } else {
            miette::Severity::Error
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as _)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as _)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|r| r as &dyn miette::Diagnostic),
            ))
        }
    }
}
