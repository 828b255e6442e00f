//! The subset of ONNX's protobuf schema (`onnx/onnx.proto`) that writing and
//! reading a residual network needs, as hand-written `prost` messages.
//!
//! Field numbers were checked against `onnx/onnx.proto` in onnx/onnx
//! (IR version 9/10 era). The schema is proto2; these structs use proto3-style
//! plain fields (a default value is not written and reads back as absent),
//! which every ONNX reader accepts, except where presence changes meaning:
//! `AttributeProto::{f, i, s}` are `Option` so that `i = 0` or `f = 0.0` is
//! still written, as onnx's own serializer does.
//!
//! Packing follows the schema exactly, so our bytes match onnx's own:
//! `TensorProto.dims` and `AttributeProto.{floats, ints}` are unpacked (the
//! schema has no `[packed = true]` there); the `TensorProto.*_data` numeric
//! fields are packed. prost reads both forms for any repeated number.
//!
//! Fields left out (sparse tensors, functions, training info, segments,
//! metadata on nodes/graphs/tensors, non-tensor types) are skipped by the
//! decoder, so a decoded model that is encoded again loses them.

/// The top-level file: a graph plus the opsets it binds against.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// An opset import; an empty domain is the default `ai.onnx` set.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// ONNX's stand-in for a map entry (proto2 has no `map`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A graph: nodes in topological order, its constants, inputs and outputs.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    // Tags 3, 4, 6..9 are reserved (removed fields).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// One operator application.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// A named attribute of a node; `type` says which value field is in use.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    // Optional: a zero value must still be written (see the module docs).
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// UTF-8 text, but declared `bytes` in the schema.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    // Unpacked, as the schema declares them.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    #[prost(string, tag = "13")]
    pub doc_string: String,
    #[prost(enumeration = "attribute_proto::AttributeType", tag = "20")]
    pub r#type: i32,
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
}

/// Nested types of [`AttributeProto`].
pub mod attribute_proto {
    /// Which value field of an attribute is in use.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum AttributeType {
        Undefined = 0,
        Float = 1,
        Int = 2,
        String = 3,
        Tensor = 4,
        Graph = 5,
        Floats = 6,
        Ints = 7,
        Strings = 8,
        Tensors = 9,
        Graphs = 10,
        SparseTensor = 11,
        SparseTensors = 12,
        TypeProto = 13,
        TypeProtos = 14,
    }
}

/// A tensor value: an initializer, or a `Constant`'s `value` attribute.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorProto {
    // Unpacked, as the schema declares it.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// A [`tensor_proto::DataType`]; the schema types it as a plain int32.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, packed = "true", tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Fixed-width little-endian elements; wins over the typed `*_data` fields.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, packed = "true", tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, packed = "true", tag = "11")]
    pub uint64_data: Vec<u64>,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// Keys `location`, `offset`, `length`, `checksum` when data is external.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(enumeration = "tensor_proto::DataLocation", tag = "14")]
    pub data_location: i32,
}

/// Nested types of [`TensorProto`].
pub mod tensor_proto {
    /// Element types (also used by `TypeProto.Tensor.elem_type`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum DataType {
        Undefined = 0,
        Float = 1,
        Uint8 = 2,
        Int8 = 3,
        Uint16 = 4,
        Int16 = 5,
        Int32 = 6,
        Int64 = 7,
        String = 8,
        Bool = 9,
        Float16 = 10,
        Double = 11,
        Uint32 = 12,
        Uint64 = 13,
        Complex64 = 14,
        Complex128 = 15,
        Bfloat16 = 16,
        Float8e4m3fn = 17,
        Float8e4m3fnuz = 18,
        Float8e5m2 = 19,
        Float8e5m2fnuz = 20,
        Uint4 = 21,
        Int4 = 22,
    }

    /// Where a tensor's bytes live.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum DataLocation {
        Default = 0,
        External = 1,
    }
}

/// A named value's type: graph inputs and outputs, and optional `value_info`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// A value's type. Only tensors are modelled; a sequence (4), map (5),
/// sparse tensor (8) or optional (9) decodes as `value: None`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    #[prost(string, tag = "6")]
    pub denotation: String,
}

/// Nested types of [`TypeProto`].
pub mod type_proto {
    /// A tensor type: element type and (possibly unknown) shape.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Tensor {
        /// A [`super::tensor_proto::DataType`].
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// `None` is an unknown rank; `Some` with no dims is a scalar.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// The `value` oneof.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }
}

/// A shape: one entry per axis.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One axis: a size, a symbolic name, or neither (unknown).
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        #[prost(string, tag = "3")]
        pub denotation: String,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// The `value` oneof; a set variant is written even when it is 0.
        #[derive(Clone, PartialEq, ::prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

use attribute_proto::AttributeType;
use tensor_proto::{DataLocation, DataType};
use tensor_shape_proto::dimension;

impl OperatorSetIdProto {
    /// The default (`ai.onnx`) opset at `version`.
    pub fn onnx(version: i64) -> Self {
        OperatorSetIdProto {
            domain: String::new(),
            version,
        }
    }
}

impl NodeProto {
    /// A node of the default domain.
    pub fn new<I, O>(
        op_type: &str,
        name: &str,
        inputs: I,
        outputs: O,
        attribute: Vec<AttributeProto>,
    ) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        O: IntoIterator,
        O::Item: Into<String>,
    {
        NodeProto {
            input: inputs.into_iter().map(Into::into).collect(),
            output: outputs.into_iter().map(Into::into).collect(),
            name: name.to_owned(),
            op_type: op_type.to_owned(),
            attribute,
            ..Default::default()
        }
    }
}

impl AttributeProto {
    fn typed(name: &str, ty: AttributeType) -> Self {
        AttributeProto {
            name: name.to_owned(),
            r#type: ty as i32,
            ..Default::default()
        }
    }

    pub fn int(name: &str, v: i64) -> Self {
        AttributeProto {
            i: Some(v),
            ..Self::typed(name, AttributeType::Int)
        }
    }

    pub fn ints(name: &str, v: &[i64]) -> Self {
        AttributeProto {
            ints: v.to_vec(),
            ..Self::typed(name, AttributeType::Ints)
        }
    }

    pub fn float(name: &str, v: f32) -> Self {
        AttributeProto {
            f: Some(v),
            ..Self::typed(name, AttributeType::Float)
        }
    }

    pub fn floats(name: &str, v: &[f32]) -> Self {
        AttributeProto {
            floats: v.to_vec(),
            ..Self::typed(name, AttributeType::Floats)
        }
    }

    pub fn string(name: &str, v: &str) -> Self {
        AttributeProto {
            s: Some(v.as_bytes().to_vec()),
            ..Self::typed(name, AttributeType::String)
        }
    }

    pub fn tensor(name: &str, t: TensorProto) -> Self {
        AttributeProto {
            t: Some(t),
            ..Self::typed(name, AttributeType::Tensor)
        }
    }
}

impl TensorProto {
    /// An f32 tensor, stored in `raw_data` (smaller and faster than `float_data`).
    ///
    /// Panics if `data` does not have the element count that `dims` says.
    pub fn f32(name: &str, dims: &[i64], data: &[f32]) -> Self {
        Self::raw(
            name,
            dims,
            DataType::Float,
            data.len(),
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// An i64 tensor (shapes for `Reshape`, axes), stored in `raw_data`.
    ///
    /// Panics if `data` does not have the element count that `dims` says.
    pub fn i64(name: &str, dims: &[i64], data: &[i64]) -> Self {
        Self::raw(
            name,
            dims,
            DataType::Int64,
            data.len(),
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    fn raw(
        name: &str,
        dims: &[i64],
        ty: DataType,
        len: usize,
        bytes: impl Iterator<Item = u8>,
    ) -> Self {
        let t = TensorProto {
            dims: dims.to_vec(),
            data_type: ty as i32,
            name: name.to_owned(),
            raw_data: bytes.collect(),
            ..Default::default()
        };
        debug_assert_eq!(
            t.numel(),
            Some(len),
            "tensor {name}: dims {dims:?} do not fit {len} elements"
        );
        t
    }

    /// The element count that `dims` gives (1 for a scalar); `None` for a
    /// negative size or an overflow.
    pub fn numel(&self) -> Option<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
    }

    /// The elements of a FLOAT tensor, from `raw_data` or `float_data`;
    /// `None` for another type, external data, or a count that disagrees
    /// with `dims`.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let v = self.elements(DataType::Float, &self.float_data, f32::from_le_bytes)?;
        (Some(v.len()) == self.numel()).then_some(v)
    }

    /// The elements of an INT64 tensor, as [`TensorProto::to_f32`].
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let v = self.elements(DataType::Int64, &self.int64_data, i64::from_le_bytes)?;
        (Some(v.len()) == self.numel()).then_some(v)
    }

    fn elements<T: Copy, const N: usize>(
        &self,
        ty: DataType,
        typed: &[T],
        from_le: fn([u8; N]) -> T,
    ) -> Option<Vec<T>> {
        if self.data_type != ty as i32 || self.data_location == DataLocation::External as i32 {
            return None;
        }
        if self.raw_data.is_empty() {
            return Some(typed.to_vec());
        }
        if !self.raw_data.len().is_multiple_of(N) {
            return None;
        }
        let chunks = self.raw_data.chunks_exact(N);
        Some(
            chunks
                .map(|c| from_le(c.try_into().expect("chunks_exact yields N bytes")))
                .collect(),
        )
    }
}

/// One axis of a value's shape, for building and reading [`ValueInfoProto`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Value(i64),
    /// A symbolic size such as `"N"`; an empty name is an unknown size.
    Param(String),
}

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Value(v)
    }
}

impl Dim {
    pub fn to_proto(&self) -> tensor_shape_proto::Dimension {
        let value = match self {
            Dim::Value(v) => dimension::Value::DimValue(*v),
            Dim::Param(p) if p.is_empty() => return tensor_shape_proto::Dimension::default(),
            Dim::Param(p) => dimension::Value::DimParam(p.clone()),
        };
        tensor_shape_proto::Dimension {
            value: Some(value),
            denotation: String::new(),
        }
    }

    pub fn from_proto(d: &tensor_shape_proto::Dimension) -> Self {
        match &d.value {
            Some(dimension::Value::DimValue(v)) => Dim::Value(*v),
            Some(dimension::Value::DimParam(p)) => Dim::Param(p.clone()),
            None => Dim::Param(String::new()),
        }
    }
}

impl ValueInfoProto {
    /// A tensor value of element type `elem_type` and shape `dims`.
    pub fn tensor(name: &str, elem_type: DataType, dims: &[Dim]) -> Self {
        let tensor = type_proto::Tensor {
            elem_type: elem_type as i32,
            shape: Some(TensorShapeProto {
                dim: dims.iter().map(Dim::to_proto).collect(),
            }),
        };
        ValueInfoProto {
            name: name.to_owned(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(tensor)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn tensor_f32(name: &str, dims: &[Dim]) -> Self {
        Self::tensor(name, DataType::Float, dims)
    }

    /// The element type and shape of a tensor value (`None` for the shape
    /// when the rank is unknown); `None` when the value is not a tensor.
    pub fn tensor_type(&self) -> Option<(i32, Option<Vec<Dim>>)> {
        match self.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => {
                let dims = t
                    .shape
                    .as_ref()
                    .map(|s| s.dim.iter().map(Dim::from_proto).collect());
                Some((t.elem_type, dims))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn tiny_model() -> ModelProto {
        let w: Vec<f32> = (0..2 * 3 * 3 * 3).map(|i| i as f32 * 0.5 - 3.0).collect();
        let shape = TensorProto::i64("shape", &[2], &[1, -1]);
        let graph = GraphProto {
            name: "tiny".into(),
            node: vec![
                NodeProto::new(
                    "Conv",
                    "conv1",
                    ["x", "w"],
                    ["y"],
                    vec![
                        AttributeProto::ints("kernel_shape", &[3, 3]),
                        AttributeProto::ints("pads", &[1, 1, 1, 1]),
                        AttributeProto::int("group", 1),
                        AttributeProto::string("auto_pad", "NOTSET"),
                    ],
                ),
                NodeProto::new(
                    "Constant",
                    "c",
                    Vec::<String>::new(),
                    ["shape"],
                    vec![AttributeProto::tensor("value", shape)],
                ),
                NodeProto::new(
                    "Reshape",
                    "flat",
                    ["y", "shape"],
                    ["z"],
                    vec![AttributeProto::int("allowzero", 0)],
                ),
                NodeProto::new(
                    "LeakyRelu",
                    "act",
                    ["z"],
                    ["out"],
                    vec![AttributeProto::float("alpha", 0.0)],
                ),
            ],
            initializer: vec![TensorProto::f32("w", &[2, 3, 3, 3], &w)],
            input: vec![ValueInfoProto::tensor_f32(
                "x",
                &[Dim::Param("N".into()), 3.into(), 8.into(), 8.into()],
            )],
            output: vec![ValueInfoProto::tensor_f32(
                "out",
                &[Dim::Param("N".into()), 128.into()],
            )],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto::onnx(17)],
            producer_name: "resnetc".into(),
            producer_version: "0.1.0".into(),
            graph: Some(graph),
            metadata_props: vec![StringStringEntryProto {
                key: "net".into(),
                value: "tiny".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn model_round_trips() {
        let model = tiny_model();
        let bytes = model.encode_to_vec();
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, model);

        let g = back.graph.as_ref().unwrap();
        let w = g.initializer[0].to_f32().unwrap();
        assert_eq!(w.len(), 54);
        assert_eq!((w[0], w[53]), (-3.0, 23.5));
        assert_eq!(
            g.node[1].attribute[0].t.as_ref().unwrap().to_i64(),
            Some(vec![1, -1])
        );
        // Zero-valued attributes are present, not dropped.
        assert_eq!(g.node[2].attribute[0].i, Some(0));
        assert_eq!(g.node[3].attribute[0].f, Some(0.0));
        assert_eq!(g.node[0].attribute[3].r#type(), AttributeType::String);
        let (ty, dims) = g.input[0].tensor_type().unwrap();
        assert_eq!(ty, DataType::Float as i32);
        assert_eq!(
            dims.unwrap(),
            vec![
                Dim::Param("N".into()),
                Dim::Value(3),
                Dim::Value(8),
                Dim::Value(8)
            ]
        );
    }

    #[test]
    fn wire_format_matches_onnx_schema() {
        // version = 2, varint; an empty domain is not written.
        assert_eq!(OperatorSetIdProto::onnx(13).encode_to_vec(), [0x10, 13]);
        // dims (1) unpacked: one key per element.
        let t = TensorProto {
            dims: vec![2, 3],
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), [0x08, 2, 0x08, 3]);
        // float_data (4) packed: one length-delimited run.
        let t = TensorProto {
            float_data: vec![1.0],
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), [0x22, 4, 0x00, 0x00, 0x80, 0x3f]);
        // name (1), i = 0 (3) still written, type = INT (20, a two-byte key).
        assert_eq!(
            AttributeProto::int("a", 0).encode_to_vec(),
            [0x0a, 1, b'a', 0x18, 0, 0xa0, 0x01, 2]
        );
        // ints (8) unpacked, type = INTS.
        assert_eq!(
            AttributeProto::ints("k", &[1, 2]).encode_to_vec(),
            [0x0a, 1, b'k', 0x40, 1, 0x40, 2, 0xa0, 0x01, 7]
        );
        // A set oneof member is written even when 0.
        assert_eq!(Dim::Value(0).to_proto().encode_to_vec(), [0x08, 0]);
        assert_eq!(
            Dim::Param("N".into()).to_proto().encode_to_vec(),
            [0x12, 1, b'N']
        );
    }

    #[test]
    fn reads_packed_dims_and_typed_data() {
        // Another writer may pack dims; prost reads it either way.
        let t = TensorProto::decode(&[0x0a, 2, 2, 3][..]).unwrap();
        assert_eq!(t.dims, [2, 3]);

        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Float as i32,
            float_data: vec![1.5, -2.0],
            ..Default::default()
        };
        assert_eq!(t.to_f32(), Some(vec![1.5, -2.0]));
        assert_eq!(t.to_i64(), None);
        let short = TensorProto {
            dims: vec![3],
            ..t.clone()
        };
        assert_eq!(short.to_f32(), None);
        let external = TensorProto {
            data_location: DataLocation::External as i32,
            ..t
        };
        assert_eq!(external.to_f32(), None);
        // A scalar has no dims and one element.
        assert_eq!(TensorProto::f32("s", &[], &[4.0]).to_f32(), Some(vec![4.0]));
    }

    // The count is checked with debug_assert: the exporter's callers build
    // the data from the dims, so a release build does not pay for it.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "do not fit")]
    fn f32_checks_element_count() {
        TensorProto::f32("w", &[2, 2], &[1.0, 2.0, 3.0]);
    }
}
