//! Encoding and decoding of the packed element types: 2- and 4-bit integers (packed low bits
//! first) and the small floats (float8 e4m3fn / e4m3fnuz / e5m2 / e5m2fnuz, float4 e2m1).

use crate::{unsupported, RuntimeError};
use kvant_tensor::{DType, Tensor, TensorData};

/// Bit width and signedness of a packed integer type.
pub(super) fn packed_int(d: DType) -> Option<(u32, bool)> {
    match d {
        DType::I4 => Some((4, true)),
        DType::U4 => Some((4, false)),
        DType::I2 => Some((2, true)),
        DType::U2 => Some((2, false)),
        _ => None,
    }
}

/// Packs integers into `bits`-wide fields, element 0 in the lowest bits of byte 0; values are
/// truncated to their low bits (wrapping, like a C cast).
pub(super) fn pack_ints(values: &[i64], bits: u32) -> Vec<u8> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u16 << bits) - 1;
    values
        .chunks(per_byte)
        .map(|chunk| {
            chunk.iter().enumerate().fold(0u8, |acc, (k, &v)| {
                acc | ((((v as u16) & mask) << (k as u32 * bits)) as u8)
            })
        })
        .collect()
}

/// Unpacks `n` integers of `bits` bits, sign-extending when `signed`.
pub(super) fn unpack_ints(bytes: &[u8], n: usize, bits: u32, signed: bool) -> Vec<i64> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    (0..n)
        .map(|i| {
            let byte = bytes.get(i / per_byte).copied().unwrap_or(0);
            let raw = (byte >> ((i % per_byte) as u32 * bits)) & mask;
            if signed && raw >> (bits - 1) == 1 {
                raw as i64 - (1i64 << bits)
            } else {
                raw as i64
            }
        })
        .collect()
}

/// A small binary float format.
#[derive(Debug, Clone, Copy)]
pub(super) struct MiniFloat {
    /// Mantissa bits.
    mant: u32,
    /// Exponent bits.
    exp: u32,
    /// Exponent bias.
    bias: i32,
    /// Largest finite value.
    max: f64,
    /// "uz" formats: no negative zero, NaN is the sign bit alone.
    uz: bool,
    /// Whether the format has infinities (IEEE-like e5m2).
    inf: bool,
    /// NaN code (positive) when not `uz`; `None` when the format has no NaN.
    nan: Option<u8>,
    /// Storage bits (8, or 4 for two per byte).
    bits: u32,
}

/// The small-float format of a packed type.
pub(super) fn mini_float(d: DType) -> Option<MiniFloat> {
    let f = |mant, exp, bias, max, uz, inf, nan, bits| MiniFloat {
        mant,
        exp,
        bias,
        max,
        uz,
        inf,
        nan,
        bits,
    };
    Some(match d {
        DType::F8E4M3FN => f(3, 4, 7, 448.0, false, false, Some(0x7F), 8),
        DType::F8E4M3FNUZ => f(3, 4, 8, 240.0, true, false, None, 8),
        DType::F8E5M2 => f(2, 5, 15, 57344.0, false, true, Some(0x7E), 8),
        DType::F8E5M2FNUZ => f(2, 5, 16, 57344.0, true, false, None, 8),
        DType::F4E2M1 => f(1, 2, 1, 6.0, false, false, None, 4),
        _ => return None,
    })
}

/// floor(log2(a)) for a finite, positive, normal f64.
fn exponent_of(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

impl MiniFloat {
    fn sign_bit(&self) -> u8 {
        1 << (self.bits - 1)
    }

    fn nan_code(&self, sign: u8) -> u8 {
        if self.uz {
            self.sign_bit()
        } else {
            self.nan.map_or(self.sign_bit(), |n| n | sign)
        }
    }

    /// Code of a finite magnitude that is exactly representable.
    fn encode_exact(&self, q: f64) -> u8 {
        let emin = 1 - self.bias;
        if q == 0.0 {
            return 0;
        }
        let e = exponent_of(q);
        if e < emin {
            (q / 2f64.powi(emin - self.mant as i32)) as u8
        } else {
            let m = q / 2f64.powi(e - self.mant as i32) - 2f64.powi(self.mant as i32);
            (((e + self.bias) as u8) << self.mant) | m as u8
        }
    }

    /// Rounds to nearest even; out-of-range values saturate to ±max, or (`saturate` off)
    /// become ±inf where the format has it, else NaN.
    pub(super) fn encode(&self, x: f64, saturate: bool) -> u8 {
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if x.is_nan() {
            return self.nan_code(sign);
        }
        let overflow = || {
            if saturate || self.nan.is_none() && !self.uz {
                sign | self.encode_exact(self.max)
            } else if self.inf {
                sign | (((1u8 << self.exp) - 1) << self.mant)
            } else {
                self.nan_code(sign)
            }
        };
        let a = x.abs();
        if a.is_infinite() {
            return overflow();
        }
        let emin = 1 - self.bias;
        let e = if a == 0.0 {
            emin
        } else {
            exponent_of(a).max(emin)
        };
        let step = 2f64.powi(e - self.mant as i32);
        let q = (a / step).round_ties_even() * step;
        if q > self.max {
            return overflow();
        }
        if q == 0.0 && self.uz {
            return 0;
        }
        sign | self.encode_exact(q)
    }

    /// The value of a code.
    pub(super) fn decode(&self, code: u8) -> f64 {
        let sign_bit = self.sign_bit();
        let body = code & (sign_bit - 1);
        if self.uz && code == sign_bit {
            return f64::NAN;
        }
        let expf = (body >> self.mant) as i32;
        let mant = (body & ((1 << self.mant) - 1)) as f64;
        if !self.uz {
            if let Some(n) = self.nan {
                if self.inf && expf == (1 << self.exp) - 1 {
                    return if mant == 0.0 {
                        if code & sign_bit != 0 {
                            f64::NEG_INFINITY
                        } else {
                            f64::INFINITY
                        }
                    } else {
                        f64::NAN
                    };
                }
                if !self.inf && body == n {
                    return f64::NAN;
                }
            }
        }
        let scale = 2f64.powi(self.mant as i32);
        let v = if expf == 0 {
            mant / scale * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + mant / scale) * 2f64.powi(expf - self.bias)
        };
        if code & sign_bit != 0 {
            -v
        } else {
            v
        }
    }
}

/// Encodes values into a packed tensor of type `to` (integers wrap to their low bits).
pub(super) fn encode(
    shape: Vec<usize>,
    values: &[f64],
    to: DType,
    saturate: bool,
) -> Result<Tensor, RuntimeError> {
    let bytes = if let Some((bits, _)) = packed_int(to) {
        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        pack_ints(&ints, bits)
    } else if let Some(f) = mini_float(to) {
        let codes: Vec<u8> = values.iter().map(|&v| f.encode(v, saturate)).collect();
        if f.bits == 4 {
            let wide: Vec<i64> = codes.iter().map(|&c| c as i64).collect();
            pack_ints(&wide, 4)
        } else {
            codes
        }
    } else {
        return Err(unsupported(format!("conversion to {to}")));
    };
    Ok(Tensor::new(shape, TensorData::Packed { dtype: to, bytes })?)
}

/// Decodes a packed tensor's values.
pub(super) fn decode(t: &Tensor) -> Result<Vec<f64>, RuntimeError> {
    let TensorData::Packed { dtype, bytes } = t.data() else {
        return Err(unsupported(format!("decoding {}", t.dtype())));
    };
    let n = t.len();
    if let Some((bits, signed)) = packed_int(*dtype) {
        return Ok(unpack_ints(bytes, n, bits, signed)
            .into_iter()
            .map(|v| v as f64)
            .collect());
    }
    let Some(f) = mini_float(*dtype) else {
        return Err(unsupported(format!("conversion from {dtype}")));
    };
    let codes: Vec<u8> = if f.bits == 4 {
        unpack_ints(bytes, n, 4, false)
            .into_iter()
            .map(|c| c as u8)
            .collect()
    } else {
        bytes.clone()
    };
    Ok(codes.into_iter().map(|c| f.decode(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packs_low_nibble_first() {
        assert_eq!(pack_ints(&[7, -8, 1], 4), vec![0x87, 0x01]);
        assert_eq!(unpack_ints(&[0x87, 0x01], 3, 4, true), vec![7, -8, 1]);
        assert_eq!(pack_ints(&[-3, -2, -1, 0], 2), vec![57]);
    }

    #[test]
    fn float8_round_trips() {
        let f = mini_float(DType::F8E4M3FN).unwrap();
        for code in 0..=255u8 {
            let v = f.decode(code);
            if v.is_nan() {
                continue;
            }
            assert_eq!(f.encode(v, true), code, "code {code:#x} value {v}");
        }
        assert_eq!(f.encode(f64::INFINITY, true), 0x7E);
        assert_eq!(f.encode(f64::NAN, true), 0x7F);
        let e5 = mini_float(DType::F8E5M2).unwrap();
        assert_eq!(e5.encode(f64::INFINITY, false), 0x7C);
        assert_eq!(e5.encode(1e9, true), 0x7B);
        let fp4 = mini_float(DType::F4E2M1).unwrap();
        assert_eq!(fp4.encode(-3.5, true), 0xE);
        assert_eq!(fp4.encode(0.25, true), 0);
    }
}
