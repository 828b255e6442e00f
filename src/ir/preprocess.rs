//! How an image becomes a network's input: what a spec's `input ... { }`
//! section says, torchvision's ImageNet transform where it says nothing.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// The shorter side to this many pixels, aspect kept (torchvision's `Resize(256)`).
    Shorter(u32),
    /// Exactly width x height (Caffe's `Resize((256, 256))`).
    Exact(u32, u32),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preprocess {
    pub resize: Resize,
    /// A centre crop of crop x crop pixels.
    pub crop: u32,
    /// Subtracted per input channel, in the network's channel order, after scaling.
    pub mean: Vec<f32>,
    /// Divided per input channel after the mean.
    pub std: Vec<f32>,
    /// Channel order the network reads: "rgb" or "bgr".
    pub order: String,
    /// Pixel values run 0..=scale before the mean (1: torchvision, 255: Caffe).
    pub scale: f32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: Resize::Shorter(256),
            crop: 224,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            order: "rgb".into(),
            scale: 1.0,
        }
    }
}

impl Preprocess {
    /// The JSON an export carries as metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
