//! ONNX: networks out (`resnetc export`) and pretrained weights in
//! (`--weights model.onnx`, bound to a spec by the graphs' structure).

pub mod export;
pub mod import;
pub mod proto;

/// The IR version a reader expects with an opset (onnx's own table).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}
