//! [`Tensor`]: an n-d array that knows its element type and where it lives — host memory or a runtime
//! [`DeviceBuffer`] on a [`Stream`] — in the spirit of candle's `Tensor`/`Storage`.
//!
//! # Contract
//! - Moving data is explicit: [`Tensor::to_device`] and [`Tensor::to_host`] are the only calls that copy
//!   between host and device, and the runtime counts every byte they move (`dsnpu_runtime::transfer_stats`).
//!   Nothing else in this module touches the other side.
//! - The element count always equals the product of the shape (checked at construction).
//! - Typed access ([`Tensor::device`], [`Tensor::host`]) fails with a typed error naming both dtypes
//!   rather than reinterpreting bytes.
//! - FP8 (e4m3) weights are consumed as they are, with their f32 128×128 block scales attached
//!   ([`Tensor::with_block_scale`]): the `*_fp8` GEMM kernels dequantize them tile by tile (see
//!   `device::weights`). int8 is a storage type only. f16 and bf16 weights are consumed as they are.

use dsnpu_runtime::{DeviceBuffer, DeviceRepr, Stream};
use half::{bf16, f16};

use crate::error::{invalid_input, Result};

/// Element types a tensor can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I8,
    /// FP8 e4m3 codes (one byte each).
    F8E4M3,
    I32,
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::F8E4M3 => 1,
            DType::I64 => 8,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::F8E4M3 => "f8e4m3",
            DType::I32 => "i32",
            DType::I64 => "i64",
        };
        f.write_str(s)
    }
}

/// A Rust element type with its [`DType`] and its place in [`DeviceData`] / [`HostData`].
pub trait Elem: DeviceRepr + Default {
    const DTYPE: DType;
    fn wrap_device(b: DeviceBuffer<Self>) -> DeviceData;
    fn device_of(d: &DeviceData) -> Option<&DeviceBuffer<Self>>;
    fn device_of_mut(d: &mut DeviceData) -> Option<&mut DeviceBuffer<Self>>;
    fn wrap_host(v: Vec<Self>) -> HostData;
    fn host_of(h: &HostData) -> Option<&[Self]>;
}

macro_rules! elems {
    ($($t:ty => $variant:ident, $dtype:ident;)*) => {
        /// Device storage, one variant per element type.
        #[derive(Debug)]
        pub enum DeviceData { $($variant(DeviceBuffer<$t>),)* }
        /// Host storage, one variant per element type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum HostData { $($variant(Vec<$t>),)* }
        $(
            impl Elem for $t {
                const DTYPE: DType = DType::$dtype;
                fn wrap_device(b: DeviceBuffer<Self>) -> DeviceData { DeviceData::$variant(b) }
                fn device_of(d: &DeviceData) -> Option<&DeviceBuffer<Self>> {
                    match d { DeviceData::$variant(b) => Some(b), #[allow(unreachable_patterns)] _ => None }
                }
                fn device_of_mut(d: &mut DeviceData) -> Option<&mut DeviceBuffer<Self>> {
                    match d { DeviceData::$variant(b) => Some(b), #[allow(unreachable_patterns)] _ => None }
                }
                fn wrap_host(v: Vec<Self>) -> HostData { HostData::$variant(v) }
                fn host_of(h: &HostData) -> Option<&[Self]> {
                    match h { HostData::$variant(v) => Some(v), #[allow(unreachable_patterns)] _ => None }
                }
            }
        )*
        impl DeviceData {
            fn len(&self) -> usize { match self { $(DeviceData::$variant(b) => b.len(),)* } }
            fn num_bytes(&self) -> usize { match self { $(DeviceData::$variant(b) => b.num_bytes(),)* } }
            fn to_host(&self) -> dsnpu_runtime::Result<HostData> {
                Ok(match self { $(DeviceData::$variant(b) => HostData::$variant(b.to_vec()?),)* })
            }
        }
        impl HostData {
            fn len(&self) -> usize { match self { $(HostData::$variant(v) => v.len(),)* } }
            fn to_device(&self, s: &Stream) -> dsnpu_runtime::Result<DeviceData> {
                Ok(match self { $(HostData::$variant(v) => DeviceData::$variant(s.upload(v)?),)* })
            }
        }
    };
}

elems! {
    f32 => F32, F32;
    f16 => F16, F16;
    bf16 => BF16, BF16;
    i8 => I8, I8;
    u8 => F8E4M3, F8E4M3;
    i32 => I32, I32;
    i64 => I64, I64;
}

/// Where a tensor's elements are.
#[derive(Debug)]
pub enum Storage {
    Host(HostData),
    /// On the device, ordered on `stream`.
    Device {
        data: DeviceData,
        stream: Stream,
    },
}

/// An n-d array with a dtype and a storage (see the module docs).
#[derive(Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
    /// FP8 weights: the f32 `weight_scale_inv` block scales (`[.., ceil(n/128), ceil(k/128)]`).
    block_scale: Option<Box<Tensor>>,
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(len) {
        return Err(invalid_input(format!(
            "a tensor of shape {shape:?} cannot hold {len} elements"
        )));
    }
    Ok(())
}

impl Tensor {
    /// A host tensor owning `data`.
    pub fn from_vec<T: Elem>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype: T::DTYPE,
            storage: Storage::Host(T::wrap_host(data)),
            block_scale: None,
        })
    }

    /// A device tensor owning `buf` (ordered on `stream`).
    pub fn from_device<T: Elem>(
        shape: &[usize],
        buf: DeviceBuffer<T>,
        stream: &Stream,
    ) -> Result<Tensor> {
        check_len(shape, buf.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype: T::DTYPE,
            storage: Storage::Device {
                data: T::wrap_device(buf),
                stream: stream.clone(),
            },
            block_scale: None,
        })
    }

    /// This FP8 tensor with its f32 block scales `scale` (`[.., ceil(n/128), ceil(k/128)]` for a
    /// `[.., n, k]` tensor, the leading dimensions equal, in the same storage).
    pub fn with_block_scale(mut self, scale: Tensor) -> Result<Tensor> {
        let (s, sc) = (&self.shape, scale.shape());
        let fits = self.dtype == DType::F8E4M3
            && scale.dtype == DType::F32
            && s.len() >= 2
            && sc.len() == s.len()
            && s[..s.len() - 2] == sc[..sc.len() - 2]
            && sc[sc.len() - 2] == s[s.len() - 2].div_ceil(128)
            && sc[sc.len() - 1] == s[s.len() - 1].div_ceil(128)
            && self.is_on_device() == scale.is_on_device();
        if !fits {
            return Err(invalid_input(format!(
                "block scales {} {sc:?} for a {} tensor of shape {s:?}",
                scale.dtype, self.dtype
            )));
        }
        self.block_scale = Some(Box::new(scale));
        Ok(self)
    }

    /// The block scales of an FP8 tensor.
    pub fn block_scale(&self) -> Option<&Tensor> {
        self.block_scale.as_deref()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Host(h) => h.len(),
            Storage::Device { data, .. } => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements take where they are.
    pub fn num_bytes(&self) -> usize {
        self.len() * self.dtype.size()
    }

    pub fn is_on_device(&self) -> bool {
        matches!(self.storage, Storage::Device { .. })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A device copy on `stream` (a host-to-device copy, counted by the runtime); a device tensor is
    /// refused rather than silently copied.
    pub fn to_device(&self, stream: &Stream) -> Result<Tensor> {
        match &self.storage {
            Storage::Host(h) => Ok(Tensor {
                shape: self.shape.clone(),
                dtype: self.dtype,
                storage: Storage::Device {
                    data: h.to_device(stream)?,
                    stream: stream.clone(),
                },
                block_scale: match &self.block_scale {
                    Some(b) => Some(Box::new(b.to_device(stream)?)),
                    None => None,
                },
            }),
            Storage::Device { .. } => {
                Err(invalid_input("to_device of a tensor already on the device"))
            }
        }
    }

    /// A host copy (a device-to-host copy, counted by the runtime, after the tensor's queued work).
    pub fn to_host(&self) -> Result<Tensor> {
        match &self.storage {
            Storage::Device { data, .. } => Ok(Tensor {
                shape: self.shape.clone(),
                dtype: self.dtype,
                storage: Storage::Host(data.to_host()?),
                block_scale: match &self.block_scale {
                    Some(b) => Some(Box::new(b.to_host()?)),
                    None => None,
                },
            }),
            Storage::Host(h) => Ok(Tensor {
                shape: self.shape.clone(),
                dtype: self.dtype,
                storage: Storage::Host(h.clone()),
                block_scale: match &self.block_scale {
                    Some(b) => Some(Box::new(b.to_host()?)),
                    None => None,
                },
            }),
        }
    }

    /// The device buffer of a device tensor of element type `T`.
    pub fn device<T: Elem>(&self) -> Result<&DeviceBuffer<T>> {
        match &self.storage {
            Storage::Device { data, .. } => {
                T::device_of(data).ok_or_else(|| self.wrong_type(T::DTYPE))
            }
            Storage::Host(_) => Err(invalid_input(format!(
                "a host tensor of shape {:?} used where a device tensor is needed",
                self.shape
            ))),
        }
    }

    /// The device buffer of a device tensor of element type `T`, for writing (a cache).
    pub fn device_mut<T: Elem>(&mut self) -> Result<&mut DeviceBuffer<T>> {
        let (dtype, shape) = (self.dtype, self.shape.clone());
        match &mut self.storage {
            Storage::Device { data, .. } => T::device_of_mut(data).ok_or_else(|| {
                invalid_input(format!(
                    "a {dtype} tensor of shape {shape:?} read as {}",
                    T::DTYPE
                ))
            }),
            Storage::Host(_) => Err(invalid_input(format!(
                "a host tensor of shape {shape:?} used where a device tensor is needed"
            ))),
        }
    }

    /// The elements of a host tensor of element type `T`.
    pub fn host<T: Elem>(&self) -> Result<&[T]> {
        match &self.storage {
            Storage::Host(h) => T::host_of(h).ok_or_else(|| self.wrong_type(T::DTYPE)),
            Storage::Device { .. } => Err(invalid_input(format!(
                "a device tensor of shape {:?} read on the host without to_host",
                self.shape
            ))),
        }
    }

    fn wrong_type(&self, wanted: DType) -> crate::ModelError {
        invalid_input(format!(
            "a {} tensor of shape {:?} read as {wanted}",
            self.dtype, self.shape
        ))
    }

    /// Bytes held on the device (0 for a host tensor), block scales included.
    pub fn device_bytes(&self) -> usize {
        let own = match &self.storage {
            Storage::Device { data, .. } => data.num_bytes(),
            Storage::Host(_) => 0,
        };
        own + self.block_scale.as_ref().map_or(0, |b| b.device_bytes())
    }
}
