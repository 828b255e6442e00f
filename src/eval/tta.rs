//! Test-time views of an image (He et al. 2015, section 3.4).

use ndarray::ArrayD;

use crate::io::image;
use crate::ir::preprocess::{Preprocess, Resize};

/// The paper's scales for multi-scale testing (shorter side).
pub const SCALES: &[u32] = &[224, 256, 384, 480, 640];

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// The spec's resize and centre crop (the default).
    Center,
    /// Shorter side to the spec's resize; four corner crops and the centre
    /// crop, each also flipped: torchvision's TenCrop, Caffe's oversample.
    TenCrop,
    /// The whole image at each shorter side, run fully convolutionally.
    MultiScale(Vec<u32>),
    /// The whole image at one shorter side.
    Full(u32),
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        let scales = |v: &str| -> Result<Vec<u32>, String> {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|&s| (1..=image::MAX_SIDE).contains(&s))
                        .ok_or_else(|| {
                            format!("expected a scale of 1 to {}, found `{x}`", image::MAX_SIDE)
                        })
                })
                .collect()
        };
        match s.split_once('=') {
            None if s == "center" => Ok(Mode::Center),
            None if s == "ten-crop" => Ok(Mode::TenCrop),
            None if s == "multi-scale" => Ok(Mode::MultiScale(SCALES.to_vec())),
            Some(("multi-scale", v)) => Ok(Mode::MultiScale(scales(v)?)),
            Some(("full", v)) => match scales(v)?.as_slice() {
                [s] => Ok(Mode::Full(*s)),
                _ => Err(format!("`full=S` takes one scale, found `{v}`")),
            },
            _ => Err(format!(
                "expected center, ten-crop, multi-scale[=S,S,...] or full=S, found `{s}`"
            )),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Mode::Center => "center".into(),
            Mode::TenCrop => "ten-crop".into(),
            Mode::MultiScale(s) => format!(
                "multi-scale={}",
                s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
            Mode::Full(s) => format!("full={s}"),
        }
    }
}

/// The views of `img` under `mode` (each 1x3xHxW), with their horizontal
/// flips too where `flip` (ten-crop has them already).
pub fn views(
    img: &::image::RgbImage,
    mode: &Mode,
    flip: bool,
    pp: &Preprocess,
) -> Result<Vec<ArrayD<f32>>, String> {
    let mut out: Vec<::image::RgbImage> = Vec::new();
    let c = pp.crop;
    let resized_for_crop = || -> Result<::image::RgbImage, String> {
        let r = image::resize(img, pp.resize);
        if r.width() < c || r.height() < c {
            return Err(format!(
                "{}x{} after resizing, smaller than the {c}x{c} crop",
                r.width(),
                r.height()
            ));
        }
        Ok(r)
    };
    match mode {
        Mode::Center => {
            let r = resized_for_crop()?;
            out.push(image::crop(
                &r,
                image::centre(r.width(), c),
                image::centre(r.height(), c),
                c,
            ));
        }
        Mode::TenCrop => {
            let r = resized_for_crop()?;
            let (w, h) = r.dimensions();
            // torchvision's five_crop order: tl, tr, bl, br, centre.
            let at = [
                (0, 0),
                (w - c, 0),
                (0, h - c),
                (w - c, h - c),
                (image::centre(w, c), image::centre(h, c)),
            ];
            for (x, y) in at {
                out.push(image::crop(&r, x, y, c));
            }
        }
        Mode::MultiScale(scales) => {
            for &s in scales {
                out.push(image::resize(img, Resize::Shorter(s)));
            }
        }
        Mode::Full(s) => out.push(image::resize(img, Resize::Shorter(*s))),
    }
    if flip || *mode == Mode::TenCrop {
        let flipped: Vec<_> = out.iter().map(::image::imageops::flip_horizontal).collect();
        out.extend(flipped);
    }
    out.iter()
        .map(|v| image::normalize(v, pp).map(|a| a.into_dyn()))
        .collect()
}
