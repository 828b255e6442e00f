//! Images as the paper tests them: shorter side resized to 256, centre crop
//! 224, ImageNet mean/std normalization; NCHW f32. Decoding is bounded: a
//! header that claims a huge image (a decompression bomb) or a truncated
//! file is an error, never an allocation the machine cannot make.

use ndarray::Array4;

use crate::ir::preprocess::{Preprocess, Resize};

/// The largest side accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most a decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decode JPEG or PNG bytes (the format guessed from them) within the limits.
pub fn decode(bytes: &[u8]) -> Result<image::RgbImage, String> {
    let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    r.limits(limits);
    Ok(r.decode().map_err(|e| e.to_string())?.to_rgb8())
}

/// Load and preprocess one image to 1x3xCROPxCROP (torchvision's ImageNet
/// transform with this resize and crop).
pub fn load(path: &std::path::Path, resize: u32, crop: u32) -> Result<Array4<f32>, String> {
    let p = Preprocess {
        resize: Resize::Shorter(resize),
        crop,
        ..Preprocess::default()
    };
    load_with(path, &p)
}

/// Load and preprocess one image as a spec's preprocess section says.
pub fn load_with(path: &std::path::Path, pp: &Preprocess) -> Result<Array4<f32>, String> {
    let name = path.display();
    let crop = pp.crop;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read image `{name}`: {e}"))?;
    let img = decode(&bytes).map_err(|e| format!("cannot read image `{name}`: {e}"))?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image `{}` is empty", path.display()));
    }
    // torchvision's Resize(256): the shorter side becomes 256, the longer
    // keeps the aspect ratio (truncated), bilinear with antialiasing.
    let (nw, nh) = match pp.resize {
        Resize::Exact(rw, rh) => (rw, rh),
        Resize::Shorter(resize) => {
            let long = |a: u32, b: u32| {
                ((resize as u64 * a as u64) / b as u64).min(MAX_SIDE as u64) as u32
            };
            if w <= h {
                (resize, long(h, w))
            } else {
                (long(w, h), resize)
            }
        }
    };
    let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    if nw < crop || nh < crop {
        return Err(format!(
            "image `{}` is {nw}x{nh} after resizing, smaller than the {crop}x{crop} crop",
            path.display()
        ));
    }
    // torchvision's CenterCrop rounds the offset.
    let top = ((nh - crop) as f64 / 2.0).round() as u32;
    let left = ((nw - crop) as f64 / 2.0).round() as u32;
    let c = crop as usize;
    let bgr = pp.order == "bgr";
    let (mean, std) = (&pp.mean, &pp.std);
    if mean.len() < 3 || std.len() < 3 {
        return Err(format!(
            "image `{name}`: a 3-channel image needs 3 means and stds, the spec has {} and {}",
            mean.len(),
            std.len()
        ));
    }
    Ok(Array4::from_shape_fn((1, 3, c, c), |(_, ch, y, x)| {
        let p = resized.get_pixel(left + x as u32, top + y as u32);
        let src = if bgr { 2 - ch } else { ch };
        (p[src] as f32 / 255.0 * pp.scale - mean[ch]) / std[ch]
    }))
}
