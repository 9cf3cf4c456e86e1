use crate::{DType, TensorData};
use half::{bf16, f16};

/// A Rust type that a [`TensorData`] variant stores.
pub trait Element: Copy + Send + Sync + PartialEq + std::fmt::Debug + Default + 'static {
    /// The element type this Rust type represents.
    const DTYPE: DType;
    /// Borrows the data if it holds this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Mutably borrows the data if it holds this type.
    fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]>;
    /// Wraps a vector.
    fn into_data(values: Vec<Self>) -> TensorData;
    /// Unwraps a vector, giving the data back if it holds another type.
    fn from_data(data: TensorData) -> Result<Vec<Self>, TensorData>;
}

/// Numeric element types, with the conversions that `Cast`-like code needs.
///
/// Integers convert through `i64`/`u64` and floats through `f64` so that no precision is lost
/// for any pair of types that can represent the value.
pub trait Scalar: Element + PartialOrd {
    /// Whether this is a floating-point type.
    const IS_FLOAT: bool;
    /// Value as f64 (may round for 64-bit integers).
    fn to_f64(self) -> f64;
    /// Value as i64 (floats truncate toward zero and saturate, NaN gives 0).
    fn to_i64(self) -> i64;
    /// Nearest value from f64 (integers truncate toward zero and saturate).
    fn from_f64(v: f64) -> Self;
    /// Value from i64 (integers wrap like a C cast).
    fn from_i64(v: i64) -> Self;
    /// Value as f32.
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    /// Nearest value from f32.
    fn from_f32(v: f32) -> Self {
        Self::from_f64(v as f64)
    }
    /// Zero.
    fn zero() -> Self {
        Self::from_i64(0)
    }
    /// One.
    fn one() -> Self {
        Self::from_i64(1)
    }
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_data(values: Vec<Self>) -> TensorData {
                TensorData::$variant(values)
            }
            fn from_data(data: TensorData) -> Result<Vec<Self>, TensorData> {
                match data {
                    TensorData::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}

element!(f32, F32);
element!(f64, F64);
element!(f16, F16);
element!(bf16, BF16);
element!(i8, I8);
element!(u8, U8);
element!(i16, I16);
element!(u16, U16);
element!(i32, I32);
element!(u32, U32);
element!(i64, I64);
element!(u64, U64);
element!(bool, Bool);

macro_rules! int_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const IS_FLOAT: bool = false;
            fn to_f64(self) -> f64 { self as f64 }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_f64(v: f64) -> Self { v as Self }
            fn from_i64(v: i64) -> Self { v as Self }
        }
    )*};
}
int_scalar!(i8, u8, i16, u16, i32, u32, i64, u64);

impl Scalar for f32 {
    const IS_FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Scalar for f64 {
    const IS_FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        self
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
}

macro_rules! half_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const IS_FLOAT: bool = true;
            fn to_f64(self) -> f64 { self.to_f64() }
            fn to_i64(self) -> i64 { self.to_f64() as i64 }
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            fn from_i64(v: i64) -> Self { <$t>::from_f64(v as f64) }
            fn to_f32(self) -> f32 { self.to_f32() }
            fn from_f32(v: f32) -> Self { <$t>::from_f32(v) }
        }
    )*};
}
half_scalar!(f16, bf16);

impl Scalar for bool {
    const IS_FLOAT: bool = false;
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}
