//! Arithmetic traits over the element types, with numpy's semantics: integers wrap, integer
//! division by zero gives 0 (numpy's result, and no panic), `max` / `min` propagate NaN.

use kvant_tensor::{bf16, f16, Scalar};

/// Arithmetic on every numeric element type.
pub(super) trait Arith: Scalar {
    /// `a + b` (wrapping for integers).
    fn op_add(self, o: Self) -> Self;
    /// `a - b` (wrapping for integers).
    fn op_sub(self, o: Self) -> Self;
    /// `a * b` (wrapping for integers).
    fn op_mul(self, o: Self) -> Self;
    /// `a / b`; integers truncate toward zero (C semantics) and give 0 when `b == 0`.
    fn op_div(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (numpy `mod`, ONNX `Mod` with `fmod=0`).
    fn op_mod(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod`).
    fn op_fmod(self, o: Self) -> Self;
    /// Larger of two values; NaN if either is NaN.
    fn op_max(self, o: Self) -> Self;
    /// Smaller of two values; NaN if either is NaN.
    fn op_min(self, o: Self) -> Self;
    /// `-a` (wrapping for integers).
    fn op_neg(self) -> Self;
    /// `|a|` (wrapping for integers).
    fn op_abs(self) -> Self;
    /// -1, 0 or 1 (NaN stays NaN).
    fn op_sign(self) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn op_add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn op_sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn op_mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn op_div(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_div(o) }
            }
            #[allow(unused_comparisons)]
            fn op_mod(self, o: Self) -> Self {
                if o == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(o);
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            fn op_fmod(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_rem(o) }
            }
            fn op_max(self, o: Self) -> Self { if self >= o { self } else { o } }
            fn op_min(self, o: Self) -> Self { if self <= o { self } else { o } }
            fn op_neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[allow(unused_comparisons)]
            fn op_abs(self) -> Self { if self < 0 { self.op_neg() } else { self } }
            #[allow(unused_comparisons)]
            fn op_sign(self) -> Self {
                if self > 0 { 1 } else if self < 0 { (0 as $t).wrapping_sub(1) } else { 0 }
            }
        }
    )*};
}
int_arith!(i8, u8, i16, u16, i32, u32, i64, u64);

/// numpy's float `mod`: `fmod`, moved to the divisor's sign; a zero result takes the
/// divisor's sign too.
fn float_mod(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 {
        if (r < 0.0) != (b < 0.0) {
            r + b
        } else {
            r
        }
    } else {
        0f64.copysign(b)
    }
}

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn op_add(self, o: Self) -> Self { self + o }
            fn op_sub(self, o: Self) -> Self { self - o }
            fn op_mul(self, o: Self) -> Self { self * o }
            fn op_div(self, o: Self) -> Self { self / o }
            fn op_mod(self, o: Self) -> Self { float_mod(self as f64, o as f64) as $t }
            fn op_fmod(self, o: Self) -> Self { self % o }
            fn op_max(self, o: Self) -> Self { if self > o || self.is_nan() { self } else { o } }
            fn op_min(self, o: Self) -> Self { if self < o || self.is_nan() { self } else { o } }
            fn op_neg(self) -> Self { -self }
            fn op_abs(self) -> Self { self.abs() }
            fn op_sign(self) -> Self {
                if self > 0.0 { 1.0 } else if self < 0.0 { -1.0 } else { self }
            }
        }
    )*};
}
float_arith!(f32, f64);

macro_rules! half_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn op_add(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) }
            fn op_sub(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() - o.to_f32()) }
            fn op_mul(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() * o.to_f32()) }
            fn op_div(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() / o.to_f32()) }
            fn op_mod(self, o: Self) -> Self { <$t>::from_f64(float_mod(self.to_f64(), o.to_f64())) }
            fn op_fmod(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() % o.to_f32()) }
            fn op_max(self, o: Self) -> Self { <$t>::from_f32(self.to_f32().op_max(o.to_f32())) }
            fn op_min(self, o: Self) -> Self { <$t>::from_f32(self.to_f32().op_min(o.to_f32())) }
            fn op_neg(self) -> Self { -self }
            fn op_abs(self) -> Self { <$t>::from_f32(self.to_f32().abs()) }
            fn op_sign(self) -> Self { <$t>::from_f32(self.to_f32().op_sign()) }
        }
    )*};
}
half_arith!(f16, bf16);

/// Bit operations on the integer types.
pub(super) trait Bits: Arith {
    /// `a & b`.
    fn op_and(self, o: Self) -> Self;
    /// `a | b`.
    fn op_or(self, o: Self) -> Self;
    /// `a ^ b`.
    fn op_xor(self, o: Self) -> Self;
    /// `!a`.
    fn op_not(self) -> Self;
    /// Left shift by `o` bits; shifts outside `0..BITS` give 0.
    fn op_shl(self, o: Self) -> Self;
    /// Right shift by `o` bits (arithmetic for signed types); shifts outside `0..BITS` give
    /// 0, or -1 for negative signed values.
    fn op_shr(self, o: Self) -> Self;
}

macro_rules! int_bits {
    ($($t:ty),*) => {$(
        impl Bits for $t {
            fn op_and(self, o: Self) -> Self { self & o }
            fn op_or(self, o: Self) -> Self { self | o }
            fn op_xor(self, o: Self) -> Self { self ^ o }
            fn op_not(self) -> Self { !self }
            #[allow(unused_comparisons)]
            fn op_shl(self, o: Self) -> Self {
                if o < 0 || (o as u64) >= <$t>::BITS as u64 { 0 } else { self << (o as u32) }
            }
            #[allow(unused_comparisons)]
            fn op_shr(self, o: Self) -> Self {
                if o < 0 || (o as u64) >= <$t>::BITS as u64 {
                    if self < 0 { (0 as $t).wrapping_sub(1) } else { 0 }
                } else {
                    self >> (o as u32)
                }
            }
        }
    )*};
}
int_bits!(i8, u8, i16, u16, i32, u32, i64, u64);

/// The floating-point operations the float kernels need, for f32 and f64 (f16 / bf16 run
/// through f32).
pub(super) trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Default
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// A constant.
    fn c(v: f64) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// e^x - 1.
    fn exp_m1(self) -> Self;
    /// ln(x).
    fn ln(self) -> Self;
    /// ln(1 + x).
    fn ln_1p(self) -> Self;
    /// sqrt(x).
    fn sqrt(self) -> Self;
    /// tanh(x).
    fn tanh(self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// Rounds half to even.
    fn round_even(self) -> Self;
    /// Calls one of the std math functions that take and return one value.
    fn math(self, f: MathFn) -> Self;
}

/// One-argument std math functions, for [`Real::math`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MathFn {
    /// floor(x).
    Floor,
    /// ceil(x).
    Ceil,
    /// sin(x).
    Sin,
    /// cos(x).
    Cos,
    /// tan(x).
    Tan,
    /// asin(x).
    Asin,
    /// acos(x).
    Acos,
    /// atan(x).
    Atan,
    /// sinh(x).
    Sinh,
    /// cosh(x).
    Cosh,
    /// asinh(x).
    Asinh,
    /// acosh(x).
    Acosh,
    /// atanh(x).
    Atanh,
}

macro_rules! real {
    ($t:ty, $erf:path) => {
        impl Real for $t {
            fn c(v: f64) -> Self {
                v as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            fn math(self, f: MathFn) -> Self {
                match f {
                    MathFn::Floor => self.floor(),
                    MathFn::Ceil => self.ceil(),
                    MathFn::Sin => self.sin(),
                    MathFn::Cos => self.cos(),
                    MathFn::Tan => self.tan(),
                    MathFn::Asin => self.asin(),
                    MathFn::Acos => self.acos(),
                    MathFn::Atan => self.atan(),
                    MathFn::Sinh => self.sinh(),
                    MathFn::Cosh => self.cosh(),
                    MathFn::Asinh => self.asinh(),
                    MathFn::Acosh => self.acosh(),
                    MathFn::Atanh => self.atanh(),
                }
            }
        }
    };
}
real!(f32, super::erf::erf_f32);
real!(f64, super::erf::erf_f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_semantics() {
        assert_eq!((-7i32).op_div(2), -3);
        assert_eq!(7i32.op_div(0), 0);
        assert_eq!(i32::MIN.op_div(-1), i32::MIN);
        assert_eq!((-7i32).op_mod(3), 2);
        assert_eq!(7i32.op_mod(-3), -2);
        assert_eq!((-7i32).op_fmod(3), -1);
        assert_eq!(200u8.op_add(100), 44);
        assert_eq!((-128i8).op_abs(), -128);
        assert_eq!((-5i8).op_shr(9), -1);
        assert_eq!(1i8.op_shl(7), -128);
        assert_eq!(1u8.op_shl(8), 0);
    }

    #[test]
    fn float_semantics() {
        assert_eq!((-7.0f32).op_mod(3.0), 2.0);
        assert_eq!(7.0f64.op_mod(-3.0), -2.0);
        assert!(6.0f64.op_mod(-3.0).is_sign_negative());
        assert!(f32::NAN.op_max(1.0).is_nan());
        assert!(1.0f32.op_max(f32::NAN).is_nan());
        assert!(1.0f32.op_min(f32::NAN).is_nan());
    }
}
