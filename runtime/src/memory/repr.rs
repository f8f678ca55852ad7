//! [`DeviceRepr`]: element types that may live in device memory and cross the host boundary.

/// Plain data that can be copied byte-for-byte between host and device.
///
/// # Safety
/// Implementors must be `Copy`, contain no pointers or references the device could not follow, have
/// **no padding bytes** (their bytes are read as `u8` when uploaded), and accept **every bit pattern**
/// as a valid value (device memory, which the host cannot vouch for, is read back as `Self`). A
/// `#[repr(C)]` tiling struct of integers and floats laid out without gaps qualifies.
pub unsafe trait DeviceRepr: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: primitive numbers have no padding and every bit pattern is a valid value.
        unsafe impl DeviceRepr for $t {}
    )* };
}
plain!(
    u8,
    i8,
    u16,
    i16,
    u32,
    i32,
    u64,
    i64,
    u128,
    i128,
    usize,
    isize,
    f32,
    f64,
    half::f16,
    half::bf16
);

// SAFETY: arrays of padding-free, all-bit-patterns-valid elements have neither padding nor invalid
// bit patterns.
unsafe impl<T: DeviceRepr, const N: usize> DeviceRepr for [T; N] {}

/// The bytes of `values`.
pub(crate) fn as_bytes<T: DeviceRepr>(values: &[T]) -> &[u8] {
    // SAFETY: `T: DeviceRepr` has no padding, so every byte of the slice is initialized; the length
    // is the slice's own size in bytes and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// `len` elements of `T` in bytes, or `SizeOverflow`.
pub(crate) fn byte_len<T>(len: usize) -> crate::Result<usize> {
    len.checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or(crate::RuntimeError::SizeOverflow {
            len,
            elem_size: std::mem::size_of::<T>(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_little_endian_element_bytes() {
        assert_eq!(
            as_bytes(&[0x0403_0201u32, 0x0807_0605]),
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(as_bytes::<u64>(&[]), &[] as &[u8]);
    }

    #[test]
    fn byte_len_rejects_overflow() {
        assert_eq!(byte_len::<f32>(10).unwrap(), 40);
        assert!(matches!(
            byte_len::<u64>(usize::MAX / 4),
            Err(crate::RuntimeError::SizeOverflow { elem_size: 8, .. })
        ));
    }
}
