//! HCCL element types and the element-wise reductions of AllReduce.
//!
//! Integer reductions wrap (as the hardware adders do); float16/bfloat16 are reduced in f32 and
//! rounded once at the end (the real ring reduction rounds after every step, so results may differ
//! in the last bit); 8-bit floats and int128 can be moved but not reduced.
use dsnpu_ffi::sys::{HcclDataType as dt, HcclReduceOp as rop};
use half::{bf16, f16};

use crate::error::SimError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    Bf16,
    F32,
    F64,
    /// Moved, never reduced: int128, HiF8 and the FP8 formats (size in bytes).
    Opaque(usize),
}

impl Elem {
    pub(crate) fn from_hccl(t: dt::Type) -> Result<Elem, SimError> {
        Ok(match t {
            dt::HCCL_DATA_TYPE_INT8 => Elem::I8,
            dt::HCCL_DATA_TYPE_INT16 => Elem::I16,
            dt::HCCL_DATA_TYPE_INT32 => Elem::I32,
            dt::HCCL_DATA_TYPE_INT64 => Elem::I64,
            dt::HCCL_DATA_TYPE_UINT8 => Elem::U8,
            dt::HCCL_DATA_TYPE_UINT16 => Elem::U16,
            dt::HCCL_DATA_TYPE_UINT32 => Elem::U32,
            dt::HCCL_DATA_TYPE_UINT64 => Elem::U64,
            dt::HCCL_DATA_TYPE_FP16 => Elem::F16,
            dt::HCCL_DATA_TYPE_BFP16 => Elem::Bf16,
            dt::HCCL_DATA_TYPE_FP32 => Elem::F32,
            dt::HCCL_DATA_TYPE_FP64 => Elem::F64,
            dt::HCCL_DATA_TYPE_INT128 => Elem::Opaque(16),
            dt::HCCL_DATA_TYPE_HIF8
            | dt::HCCL_DATA_TYPE_FP8E4M3
            | dt::HCCL_DATA_TYPE_FP8E5M2
            | dt::HCCL_DATA_TYPE_FP8E8M0 => Elem::Opaque(1),
            other => {
                return Err(SimError::InvalidParam(format!(
                    "unknown HcclDataType {other}"
                )))
            }
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 => 1,
            Elem::I16 | Elem::U16 | Elem::F16 | Elem::Bf16 => 2,
            Elem::I32 | Elem::U32 | Elem::F32 => 4,
            Elem::I64 | Elem::U64 | Elem::F64 => 8,
            Elem::Opaque(n) => n,
        }
    }

    /// Bytes of `count` elements.
    pub(crate) fn bytes(self, count: u64) -> Result<usize, SimError> {
        usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(self.size()))
            .ok_or_else(|| {
                SimError::InvalidParam(format!(
                    "{count} elements of {self:?} overflow the address space"
                ))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

impl ReduceOp {
    pub(crate) fn from_hccl(op: rop::Type) -> Result<ReduceOp, SimError> {
        Ok(match op {
            rop::HCCL_REDUCE_SUM => ReduceOp::Sum,
            rop::HCCL_REDUCE_PROD => ReduceOp::Prod,
            rop::HCCL_REDUCE_MAX => ReduceOp::Max,
            rop::HCCL_REDUCE_MIN => ReduceOp::Min,
            other => {
                return Err(SimError::InvalidParam(format!(
                    "unknown HcclReduceOp {other}"
                )))
            }
        })
    }
}

/// Little-endian element codec.
trait Le: Copy {
    const N: usize;
    fn decode(b: &[u8]) -> Self;
    fn encode(self, out: &mut Vec<u8>);
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const N: usize = std::mem::size_of::<$t>();
            fn decode(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap_or_default())
            }
            fn encode(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

/// Folds equally long inputs element-wise with `f`, decoding with `dec` and encoding with `enc`.
fn fold<T: Copy, W: Le>(
    inputs: &[Vec<u8>],
    dec: fn(W) -> T,
    enc: fn(T) -> W,
    f: fn(T, T) -> T,
) -> Result<Vec<u8>, SimError> {
    let Some((first, rest)) = inputs.split_first() else {
        return Ok(Vec::new());
    };
    let n = first.len() / W::N;
    let mut acc: Vec<T> = Vec::new();
    acc.try_reserve_exact(n)
        .map_err(|_| SimError::HostAlloc(n.saturating_mul(std::mem::size_of::<T>())))?;
    acc.extend(first.chunks_exact(W::N).map(|c| dec(W::decode(c))));
    for input in rest {
        for (a, c) in acc.iter_mut().zip(input.chunks_exact(W::N)) {
            *a = f(*a, dec(W::decode(c)));
        }
    }
    let mut out = crate::memory::try_bytes(first.len())?;
    acc.into_iter().for_each(|a| enc(a).encode(&mut out));
    Ok(out)
}

macro_rules! int_fold {
    ($t:ty, $op:expr, $inputs:expr) => {{
        let f: fn($t, $t) -> $t = match $op {
            ReduceOp::Sum => |a, b| a.wrapping_add(b),
            ReduceOp::Prod => |a, b| a.wrapping_mul(b),
            ReduceOp::Max => |a, b| a.max(b),
            ReduceOp::Min => |a, b| a.min(b),
        };
        fold::<$t, $t>($inputs, |x| x, |x| x, f)
    }};
}

fn float_op<T: num_like::Float>(op: ReduceOp) -> fn(T, T) -> T {
    match op {
        ReduceOp::Sum => |a, b| a + b,
        ReduceOp::Prod => |a, b| a * b,
        ReduceOp::Max => T::max,
        ReduceOp::Min => T::min,
    }
}

mod num_like {
    pub trait Float: Copy + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
        fn max(self, other: Self) -> Self;
        fn min(self, other: Self) -> Self;
    }
    impl Float for f32 {
        fn max(self, other: Self) -> Self {
            f32::max(self, other)
        }
        fn min(self, other: Self) -> Self {
            f32::min(self, other)
        }
    }
    impl Float for f64 {
        fn max(self, other: Self) -> Self {
            f64::max(self, other)
        }
        fn min(self, other: Self) -> Self {
            f64::min(self, other)
        }
    }
}

/// Reduces equally long `inputs` (one per rank, in rank order) element-wise.
pub(crate) fn reduce(elem: Elem, op: ReduceOp, inputs: &[Vec<u8>]) -> Result<Vec<u8>, SimError> {
    match elem {
        Elem::I8 => int_fold!(i8, op, inputs),
        Elem::I16 => int_fold!(i16, op, inputs),
        Elem::I32 => int_fold!(i32, op, inputs),
        Elem::I64 => int_fold!(i64, op, inputs),
        Elem::U8 => int_fold!(u8, op, inputs),
        Elem::U16 => int_fold!(u16, op, inputs),
        Elem::U32 => int_fold!(u32, op, inputs),
        Elem::U64 => int_fold!(u64, op, inputs),
        Elem::F32 => fold::<f32, f32>(inputs, |x| x, |x| x, float_op(op)),
        Elem::F64 => fold::<f64, f64>(inputs, |x| x, |x| x, float_op(op)),
        Elem::F16 => fold::<f32, u16>(
            inputs,
            |b| f16::from_bits(b).to_f32(),
            |x| f16::from_f32(x).to_bits(),
            float_op(op),
        ),
        Elem::Bf16 => fold::<f32, u16>(
            inputs,
            |b| bf16::from_bits(b).to_f32(),
            |x| bf16::from_f32(x).to_bits(),
            float_op(op),
        ),
        Elem::Opaque(_) => Err(SimError::Unsupported(format!(
            "{elem:?} data cannot be reduced, only moved"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Le>(v: &[T]) -> Vec<u8> {
        let mut out = Vec::new();
        v.iter().for_each(|x| x.encode(&mut out));
        out
    }

    #[test]
    fn integer_reductions_wrap() {
        let r = reduce(
            Elem::I32,
            ReduceOp::Sum,
            &[bytes(&[i32::MAX, 5]), bytes(&[1, -7])],
        )
        .unwrap();
        assert_eq!(r, bytes(&[i32::MIN, -2]));
        let r = reduce(
            Elem::U8,
            ReduceOp::Prod,
            &[bytes(&[16u8, 3]), bytes(&[16u8, 5])],
        )
        .unwrap();
        assert_eq!(r, bytes(&[0u8, 15]), "256 wraps to 0");
        let r = reduce(
            Elem::I64,
            ReduceOp::Min,
            &[bytes(&[3i64, -9]), bytes(&[-4i64, 2]), bytes(&[0i64, 0])],
        )
        .unwrap();
        assert_eq!(r, bytes(&[-4i64, -9]));
    }

    #[test]
    fn half_precision_reduces_in_f32_and_rounds_once() {
        // bf16 bits: 1.5 = 0x3fc0, 2.25 = 0x4010, 3.75 = 0x4070; 1.0 = 0x3f80, -2.0 = 0xc000.
        let a = bytes(&[0x3fc0u16, 0x3f80]);
        let b = bytes(&[0x4010u16, 0xc000]);
        assert_eq!(
            reduce(Elem::Bf16, ReduceOp::Sum, &[a.clone(), b.clone()]).unwrap(),
            bytes(&[0x4070u16, 0xbf80])
        );
        assert_eq!(
            reduce(Elem::Bf16, ReduceOp::Max, &[a, b]).unwrap(),
            bytes(&[0x4010u16, 0x3f80])
        );
        // f16: 2048 + 1 + 1 = 2050 in f32, while f16 steps would give 2048 (2049 is not representable).
        // 2048 = 0x6800, 1 = 0x3c00, 2050 = 0x6801.
        let r = reduce(
            Elem::F16,
            ReduceOp::Sum,
            &[
                bytes(&[0x6800u16]),
                bytes(&[0x3c00u16]),
                bytes(&[0x3c00u16]),
            ],
        )
        .unwrap();
        assert_eq!(r, bytes(&[0x6801u16]));
    }

    #[test]
    fn types_and_ops_map_from_hccl_numbering() {
        assert_eq!(Elem::from_hccl(3).unwrap(), Elem::F16);
        assert_eq!(Elem::from_hccl(4).unwrap(), Elem::F32);
        assert_eq!(Elem::from_hccl(11).unwrap(), Elem::Bf16);
        assert_eq!(Elem::from_hccl(12).unwrap().size(), 16);
        assert!(Elem::from_hccl(13).is_err());
        assert_eq!(ReduceOp::from_hccl(2).unwrap(), ReduceOp::Max);
        assert!(ReduceOp::from_hccl(255).is_err());
        assert!(reduce(Elem::Opaque(1), ReduceOp::Sum, &[vec![1]]).is_err());
        assert!(Elem::F32.bytes(u64::MAX).is_err());
    }
}
