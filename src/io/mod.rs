//! Data in and out of `resnetc run`: `.npy` arrays and images.

pub mod image;
pub mod npy;
pub mod scores;

/// The 1000 ImageNet class names, in torchvision's index order.
pub const IMAGENET_CLASSES: &str = include_str!("../../data/imagenet_classes.txt");

/// The name of class `i` for a classifier of `classes` outputs.
pub fn class_name(i: usize, classes: usize) -> String {
    if classes == 1000 {
        if let Some(name) = IMAGENET_CLASSES.lines().nth(i) {
            return name.to_string();
        }
    }
    format!("class {i}")
}
