//! Images as the paper tests them: shorter side resized to 256, centre crop
//! 224, ImageNet mean/std normalization; NCHW f32.

use ndarray::Array4;

pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Load and preprocess one image to 1x3xCROPxCROP.
pub fn load(path: &std::path::Path, resize: u32, crop: u32) -> Result<Array4<f32>, String> {
    let img = image::open(path)
        .map_err(|e| format!("cannot read image `{}`: {e}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image `{}` is empty", path.display()));
    }
    // torchvision's Resize(256): the shorter side becomes 256, the longer
    // keeps the aspect ratio (truncated), bilinear with antialiasing.
    let (nw, nh) = if w <= h {
        (resize, ((resize as u64 * h as u64) / w as u64) as u32)
    } else {
        (((resize as u64 * w as u64) / h as u64) as u32, resize)
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
    Ok(Array4::from_shape_fn((1, 3, c, c), |(_, ch, y, x)| {
        let p = resized.get_pixel(left + x as u32, top + y as u32);
        (p[ch] as f32 / 255.0 - MEAN[ch]) / STD[ch]
    }))
}
