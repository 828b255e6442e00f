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

/// Read and decode an image file within the limits.
pub fn read(path: &std::path::Path) -> Result<image::RgbImage, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read image `{name}`: {e}"))?;
    let img = decode(&bytes).map_err(|e| format!("cannot read image `{name}`: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!("image `{name}` is empty"));
    }
    Ok(img)
}

/// torchvision's `Resize`: the shorter side to `s`, the longer keeping the
/// aspect ratio (truncated), bilinear with antialiasing; or exactly W x H.
pub fn resize(img: &image::RgbImage, r: Resize) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = match r {
        Resize::Exact(rw, rh) => (rw, rh),
        Resize::Shorter(s) => {
            let long = |a: u32, b: u32| {
                ((s as u64 * a as u64) / b as u64).clamp(1, MAX_SIDE as u64) as u32
            };
            if w <= h {
                (s, long(h, w))
            } else {
                (long(w, h), s)
            }
        }
    };
    image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
}

/// A `size` x `size` crop at (left, top); torchvision's CenterCrop rounds
/// the offset.
pub fn crop(img: &image::RgbImage, left: u32, top: u32, size: u32) -> image::RgbImage {
    image::imageops::crop_imm(img, left, top, size, size).to_image()
}

/// The centre crop's offset along a side.
pub fn centre(side: u32, size: u32) -> u32 {
    ((side - size) as f64 / 2.0).round() as u32
}

/// The network's input for an image: channel order, scale, mean and std
/// as the spec says; 1x3xHxW.
pub fn normalize(img: &image::RgbImage, pp: &Preprocess) -> Result<Array4<f32>, String> {
    let (mean, std) = (&pp.mean, &pp.std);
    if mean.len() < 3 || std.len() < 3 {
        return Err(format!(
            "a 3-channel image needs 3 means and stds, the spec has {} and {}",
            mean.len(),
            std.len()
        ));
    }
    let bgr = pp.order == "bgr";
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok(Array4::from_shape_fn((1, 3, h, w), |(_, ch, y, x)| {
        let p = img.get_pixel(x as u32, y as u32);
        let src = if bgr { 2 - ch } else { ch };
        (p[src] as f32 / 255.0 * pp.scale - mean[ch]) / std[ch]
    }))
}

/// Load and preprocess one image as a spec's preprocess section says:
/// resize, centre crop, normalize.
pub fn load_with(path: &std::path::Path, pp: &Preprocess) -> Result<Array4<f32>, String> {
    let img = read(path)?;
    let resized = resize(&img, pp.resize);
    let (nw, nh) = resized.dimensions();
    let c = pp.crop;
    if nw < c || nh < c {
        return Err(format!(
            "image `{}` is {nw}x{nh} after resizing, smaller than the {c}x{c} crop",
            path.display()
        ));
    }
    let view = crop(&resized, centre(nw, c), centre(nh, c), c);
    normalize(&view, pp).map_err(|e| format!("image `{}`: {e}", path.display()))
}
