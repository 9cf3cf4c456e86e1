use crate::{shape_size, DType, Element, Scalar, TensorError};
use half::{bf16, f16};

/// The elements of a tensor, in row-major order, in one typed vector.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// f32 values.
    F32(Vec<f32>),
    /// f64 values.
    F64(Vec<f64>),
    /// f16 values.
    F16(Vec<f16>),
    /// bf16 values.
    BF16(Vec<bf16>),
    /// i8 values.
    I8(Vec<i8>),
    /// u8 values.
    U8(Vec<u8>),
    /// i16 values.
    I16(Vec<i16>),
    /// u16 values.
    U16(Vec<u16>),
    /// i32 values.
    I32(Vec<i32>),
    /// u32 values.
    U32(Vec<u32>),
    /// i64 values.
    I64(Vec<i64>),
    /// u64 values.
    U64(Vec<u64>),
    /// bool values.
    Bool(Vec<bool>),
    /// Byte strings.
    String(Vec<Vec<u8>>),
    /// Types without a typed representation, as ONNX stores them in `raw_data`.
    Packed {
        /// The element type.
        dtype: DType,
        /// Little-endian packed bytes.
        bytes: Vec<u8>,
    },
}

/// Runs `$body` with the type alias `$T` bound to the Rust type of a numeric [`DType`]
/// (f32, f64, f16, bf16 and the eight integer types); other types run `$fallback`.
#[macro_export]
macro_rules! dispatch_numeric {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::bf16;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            _ => $fallback,
        }
    };
}

/// Like [`dispatch_numeric!`] but bool is included too.
#[macro_export]
macro_rules! dispatch_typed {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        match $dtype {
            $crate::DType::Bool => {
                type $T = bool;
                $body
            }
            other => $crate::dispatch_numeric!(other, $T => $body, _ => $fallback),
        }
    };
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::I32(_) => DType::I32,
            TensorData::U32(_) => DType::U32,
            TensorData::I64(_) => DType::I64,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
            TensorData::Packed { dtype, .. } => *dtype,
        }
    }

    /// Number of elements, or for packed data the number of bytes.
    fn stored_len(&self) -> usize {
        match self {
            TensorData::String(v) => v.len(),
            TensorData::Packed { bytes, .. } => bytes.len(),
            other => {
                crate::dispatch_typed!(other.dtype(), T => T::slice(other).map_or(0, |s| s.len()), _ => 0)
            }
        }
    }

    /// `n` default (zero / false / empty) elements of a type; packed types get zero bytes.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::String => TensorData::String(vec![Vec::new(); n]),
            d if d.is_packed() => TensorData::Packed {
                dtype: d,
                bytes: vec![0; d.storage_bytes(n)],
            },
            d => {
                crate::dispatch_typed!(d, T => T::into_data(vec![T::default(); n]), _ => unreachable!("all typed dtypes are handled"))
            }
        }
    }
}

/// A dense n-dimensional array in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the data fits the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = match data.dtype() {
            d if d.is_packed() => d.storage_bytes(shape_size(&shape)),
            _ => shape_size(&shape),
        };
        let actual = data.stored_len();
        if expected != actual {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                actual,
            });
        }
        Ok(Tensor { shape, data })
    }

    /// Builds a tensor from a typed vector.
    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, T::into_data(values))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: T::into_data(vec![value]),
        }
    }

    /// A tensor of zeros (false, empty strings).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape_size(&shape);
        Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        shape_size(&self.shape)
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The data, mutably (the length must not change).
    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    /// Splits into shape and data.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Bytes the data occupies in memory (strings count their bytes).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            TensorData::String(v) => v.iter().map(Vec::len).sum(),
            TensorData::Packed { bytes, .. } => bytes.len(),
            _ => self.dtype().storage_bytes(self.len()),
        }
    }

    /// Borrows the elements as `&[T]`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TensorError> {
        T::slice(&self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            actual: self.dtype(),
        })
    }

    /// Borrows the elements as `&mut [T]`.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], TensorError> {
        let actual = self.dtype();
        T::slice_mut(&mut self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            actual,
        })
    }

    /// Takes the elements out as `Vec<T>`.
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>, TensorError> {
        let actual = self.dtype();
        T::from_data(self.data).map_err(|_| TensorError::WrongDType {
            expected: T::DTYPE,
            actual,
        })
    }

    /// The same data with another shape of the same size.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        if shape_size(&shape) != self.len() {
            return Err(TensorError::LengthMismatch {
                expected: shape_size(&shape),
                shape,
                actual: self.len(),
            });
        }
        Ok(Tensor {
            shape,
            data: self.data,
        })
    }

    /// Converts every element to another type (C-cast semantics: floats to integers truncate
    /// toward zero and saturate, integers wrap, anything non-zero becomes `true`).
    pub fn cast(&self, to: DType) -> Result<Tensor, TensorError> {
        if to == self.dtype() {
            return Ok(self.clone());
        }
        let from = self.dtype();
        let unsupported = || TensorError::Unsupported {
            op: format!("cast to {to}"),
            dtype: from,
        };
        let data = crate::dispatch_typed!(from, S => {
            let src = self.as_slice::<S>()?;
            crate::dispatch_typed!(to, D => D::into_data(convert_slice::<S, D>(src)), _ => return Err(unsupported()))
        }, _ => return Err(unsupported()));
        Ok(Tensor {
            shape: self.shape.clone(),
            data,
        })
    }

    /// The elements converted to f32 (any numeric type).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TensorError> {
        match &self.data {
            TensorData::F32(v) => Ok(v.clone()),
            _ => self.cast(DType::F32)?.into_vec::<f32>(),
        }
    }

    /// The elements converted to i64 (any integer or bool type; floats truncate).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, TensorError> {
        match &self.data {
            TensorData::I64(v) => Ok(v.clone()),
            _ => self.cast(DType::I64)?.into_vec::<i64>(),
        }
    }
}

fn convert_slice<S: Scalar, D: Scalar>(src: &[S]) -> Vec<D> {
    if D::IS_FLOAT || S::IS_FLOAT {
        if D::IS_FLOAT {
            src.iter().map(|&v| D::from_f64(v.to_f64())).collect()
        } else if D::DTYPE == DType::Bool {
            src.iter().map(|&v| D::from_f64(v.to_f64())).collect()
        } else {
            // float -> integer goes through i64 so that e.g. -1.7 -> u8 behaves like C
            // (truncate to -1, then wrap) rather than saturating at 0.
            src.iter()
                .map(|&v| {
                    let f = v.to_f64();
                    if D::DTYPE == DType::U64 && f >= 9.223_372_036_854_776e18 {
                        D::from_f64(f)
                    } else {
                        D::from_i64(f as i64)
                    }
                })
                .collect()
        }
    } else if D::DTYPE == DType::Bool {
        src.iter()
            .map(|&v| D::from_i64((v.to_i64() != 0) as i64))
            .collect()
    } else if S::DTYPE == DType::U64 {
        // u64 above i64::MAX must wrap, not saturate.
        src.iter().map(|&v| D::from_f64(v.to_f64())).collect()
    } else {
        src.iter().map(|&v| D::from_i64(v.to_i64())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 5]).is_err());
        let t = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t.dtype(), DType::F32);
    }

    #[test]
    fn cast_truncates_and_wraps_like_c() {
        let t = Tensor::from_vec(vec![4], vec![1.9f32, -1.9, 300.0, 0.0]).unwrap();
        assert_eq!(
            t.cast(DType::I32).unwrap().into_vec::<i32>().unwrap(),
            vec![1, -1, 300, 0]
        );
        assert_eq!(
            t.cast(DType::U8).unwrap().into_vec::<u8>().unwrap(),
            vec![1, 255, 44, 0]
        );
        assert_eq!(
            t.cast(DType::Bool).unwrap().into_vec::<bool>().unwrap(),
            vec![true, true, true, false]
        );
        let i = Tensor::from_vec(vec![2], vec![-1i64, 70000]).unwrap();
        assert_eq!(
            i.cast(DType::I16).unwrap().into_vec::<i16>().unwrap(),
            vec![-1, 4464]
        );
    }

    #[test]
    fn packed_types_count_bytes() {
        let t = Tensor::new(
            vec![3],
            TensorData::Packed {
                dtype: DType::I4,
                bytes: vec![0x21, 0x03],
            },
        )
        .unwrap();
        assert_eq!(t.byte_size(), 2);
        assert!(t.cast(DType::F32).is_err());
    }
}
