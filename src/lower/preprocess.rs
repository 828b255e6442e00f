//! Checking a spec's preprocess section against what it can mean.

use crate::ir::preprocess::{Preprocess, Resize};
use crate::syntax::ast::{Ident, PpValue};
use crate::syntax::{Diagnostic, Span};

const KEYS: &[&str] = &["resize", "crop", "mean", "std", "order", "scale"];

/// The preprocessing of a network with `channels` input channels.
pub fn preprocess(
    items: &[(Ident, PpValue, Span)],
    channels: usize,
) -> Result<Preprocess, Diagnostic> {
    let mut p = Preprocess::default();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for (key, value, span) in items {
        let k = key.name.as_str();
        if let Some((_, prev)) = seen.iter().find(|(s, _)| *s == k) {
            return Err(
                Diagnostic::at("duplicate", key.span, format!("`{k}` is set twice"))
                    .label(*prev, "first set here"),
            );
        }
        let bad = |what: &str| {
            Diagnostic::at(
                "value",
                *span,
                format!("`{k}`: expected {what}, found {}", show(value)),
            )
        };
        let size = |v: f64| -> Option<u32> {
            (v.fract() == 0.0 && (1.0..=16384.0).contains(&v)).then_some(v as u32)
        };
        match (k, value) {
            ("resize", PpValue::Number(v)) => {
                p.resize = Resize::Shorter(size(*v).ok_or_else(|| bad("a size of 1 to 16384"))?)
            }
            ("resize", PpValue::List(v)) if v.len() == 2 => {
                let (w, h) = (size(v[0]), size(v[1]));
                match (w, h) {
                    (Some(w), Some(h)) => p.resize = Resize::Exact(w, h),
                    _ => return Err(bad("[width, height] of 1 to 16384 each")),
                }
            }
            ("resize", _) => {
                return Err(bad("the shorter side (`resize = 256`) or [width, height]"))
            }
            ("crop", PpValue::Number(v)) => {
                p.crop = size(*v).ok_or_else(|| bad("a crop size of 1 to 16384"))?
            }
            ("crop", _) => return Err(bad("one size (a square centre crop)")),
            ("mean" | "std", PpValue::List(v)) if v.len() == channels => {
                let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                if k == "std" {
                    if v.iter().any(|&x| x <= 0.0 || !x.is_finite()) {
                        return Err(bad("positive values"));
                    }
                    p.std = v;
                } else {
                    p.mean = v;
                }
            }
            ("mean" | "std", _) => {
                return Err(bad(&format!(
                    "a list of {channels} numbers, one per input channel"
                )))
            }
            ("order", PpValue::Str(s)) if s == "rgb" || s == "bgr" => p.order = s.clone(),
            ("order", _) => return Err(bad("\"rgb\" or \"bgr\"")),
            ("scale", PpValue::Number(v)) if *v > 0.0 && v.is_finite() => p.scale = *v as f32,
            ("scale", _) => return Err(bad("a positive number (1: pixels in 0..1, 255: 0..255)")),
            _ => {
                let d = Diagnostic::at(
                    "unknown-name",
                    key.span,
                    format!("unknown preprocess setting `{k}`"),
                );
                return Err(match super::eval::suggest(k, KEYS.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("the settings are: {}", KEYS.join(", "))),
                });
            }
        }
        seen.push((k, key.span));
    }
    if channels != 3 && (p.mean.len() != channels || p.std.len() != channels) {
        return Err(Diagnostic::at(
            "value",
            items.first().map_or(Span::default(), |i| i.2),
            format!("a network of {channels} input channels needs its own `mean` and `std`"),
        ));
    }
    Ok(p)
}

fn show(v: &PpValue) -> String {
    match v {
        PpValue::Number(n) => format!("{n}"),
        PpValue::List(l) => format!("a list of {}", l.len()),
        PpValue::Str(s) => format!("\"{s}\""),
    }
}
