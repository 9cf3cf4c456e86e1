use std::fmt;

/// Element type of a tensor. The discriminants are ONNX's `TensorProto.DataType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DType {
    /// 32-bit IEEE float.
    F32 = 1,
    /// Unsigned 8-bit integer.
    U8 = 2,
    /// Signed 8-bit integer.
    I8 = 3,
    /// Unsigned 16-bit integer.
    U16 = 4,
    /// Signed 16-bit integer.
    I16 = 5,
    /// Signed 32-bit integer.
    I32 = 6,
    /// Signed 64-bit integer.
    I64 = 7,
    /// Byte strings (ONNX STRING).
    String = 8,
    /// Boolean.
    Bool = 9,
    /// IEEE half precision.
    F16 = 10,
    /// 64-bit IEEE float.
    F64 = 11,
    /// Unsigned 32-bit integer.
    U32 = 12,
    /// Unsigned 64-bit integer.
    U64 = 13,
    /// Complex of two f32 (kept packed).
    Complex64 = 14,
    /// Complex of two f64 (kept packed).
    Complex128 = 15,
    /// Brain float 16.
    BF16 = 16,
    /// float8 e4m3fn (kept packed).
    F8E4M3FN = 17,
    /// float8 e4m3fnuz (kept packed).
    F8E4M3FNUZ = 18,
    /// float8 e5m2 (kept packed).
    F8E5M2 = 19,
    /// float8 e5m2fnuz (kept packed).
    F8E5M2FNUZ = 20,
    /// Unsigned 4-bit integer, two per byte (kept packed).
    U4 = 21,
    /// Signed 4-bit integer, two per byte (kept packed).
    I4 = 22,
    /// float4 e2m1, two per byte (kept packed).
    F4E2M1 = 23,
    /// float8 e8m0 scale type (kept packed).
    F8E8M0 = 24,
    /// Unsigned 2-bit integer, four per byte (kept packed).
    U2 = 25,
    /// Signed 2-bit integer, four per byte (kept packed).
    I2 = 26,
}

impl DType {
    /// Every element type, in ONNX code order.
    pub const ALL: [DType; 26] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::String,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
        DType::Complex64,
        DType::Complex128,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::U4,
        DType::I4,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::U2,
        DType::I2,
    ];

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        self as i32
    }

    /// Looks up an ONNX data type code; `None` for UNDEFINED (0) and unknown codes.
    pub fn from_onnx_code(code: i32) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.onnx_code() == code)
    }

    /// ONNX's upper-case name (`FLOAT`, `INT8` ...).
    pub fn onnx_name(self) -> &'static str {
        match self {
            DType::F32 => "FLOAT",
            DType::U8 => "UINT8",
            DType::I8 => "INT8",
            DType::U16 => "UINT16",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::String => "STRING",
            DType::Bool => "BOOL",
            DType::F16 => "FLOAT16",
            DType::F64 => "DOUBLE",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::Complex64 => "COMPLEX64",
            DType::Complex128 => "COMPLEX128",
            DType::BF16 => "BFLOAT16",
            DType::F8E4M3FN => "FLOAT8E4M3FN",
            DType::F8E4M3FNUZ => "FLOAT8E4M3FNUZ",
            DType::F8E5M2 => "FLOAT8E5M2",
            DType::F8E5M2FNUZ => "FLOAT8E5M2FNUZ",
            DType::U4 => "UINT4",
            DType::I4 => "INT4",
            DType::F4E2M1 => "FLOAT4E2M1",
            DType::F8E8M0 => "FLOAT8E8M0",
            DType::U2 => "UINT2",
            DType::I2 => "INT2",
        }
    }

    /// Storage bits per element (0 for strings).
    pub fn bits(self) -> usize {
        match self {
            DType::String => 0,
            DType::Bool | DType::U8 | DType::I8 => 8,
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => 8,
            DType::F8E8M0 => 8,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 16,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 | DType::Complex64 => 64,
            DType::Complex128 => 128,
            DType::U4 | DType::I4 | DType::F4E2M1 => 4,
            DType::U2 | DType::I2 => 2,
        }
    }

    /// Bytes needed to store `n` elements (packed types round up to whole bytes).
    pub fn storage_bytes(self, n: usize) -> usize {
        (n * self.bits()).div_ceil(8)
    }

    /// Whether kvant keeps this type as packed bytes rather than a typed vector.
    pub fn is_packed(self) -> bool {
        matches!(
            self,
            DType::Complex64
                | DType::Complex128
                | DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::U4
                | DType::I4
                | DType::F4E2M1
                | DType::F8E8M0
                | DType::U2
                | DType::I2
        )
    }

    /// Floating-point types with a typed representation (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// Integer types with a typed representation.
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I8
                | DType::U8
                | DType::I16
                | DType::U16
                | DType::I32
                | DType::U32
                | DType::I64
                | DType::U64
        )
    }

    /// Signed integer types with a typed representation.
    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::String => "string",
            DType::Bool => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::BF16 => "bf16",
            other => return f.write_str(&other.onnx_name().to_ascii_lowercase()),
        };
        f.write_str(name)
    }
}
