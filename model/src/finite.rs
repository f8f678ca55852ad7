//! Non-finite values (NaN, ±∞): rejected in stored weights while they are converted to f32, and in the
//! activations of a forward step as soon as an operator produces one.
//!
//! # Contract
//! - [`convert`] decodes a tensor's bytes and checks each value in the same pass (no second pass over the
//!   file); the first NaN or infinity is [`ModelError::NonFiniteWeight`] naming the tensor and its index.
//! - [`check_output`] scans one operator's (or one block's) output; the first non-finite element is
//!   [`ModelError::NonFiniteOutput`] naming the operator. The model calls it after every stage of every
//!   layer, so a step that overflows fails naming the first stage that did, and never returns
//!   non-finite logits. The scans cost one read of each activation, small beside the matrix products.

use crate::error::{ModelError, Result};
use ndarray::{ArrayBase, Data, Dimension};

/// The index, one entry per dimension, of element `flat` of a row-major array of `shape`.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[i] = flat % d;
            flat /= d;
        }
    }
    index
}

/// `bytes` as f32 values, `N` bytes each decoded by `decode`; fails on the first non-finite value.
pub(crate) fn convert<const N: usize>(
    name: &str,
    shape: &[usize],
    bytes: &[u8],
    decode: impl Fn([u8; N]) -> f32,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(bytes.len() / N);
    for (i, chunk) in bytes.chunks_exact(N).enumerate() {
        let v = decode(chunk.try_into().expect("chunks_exact yields N bytes"));
        if !v.is_finite() {
            return Err(ModelError::NonFiniteWeight {
                name: name.to_string(),
                index: unravel(i, shape),
                what: v.to_string(),
            });
        }
        out.push(v);
    }
    Ok(out)
}

/// Fails naming `op` (built only on failure) if `x` holds a NaN or an infinity.
pub(crate) fn check_output<S, D>(op: impl FnOnce() -> String, x: &ArrayBase<S, D>) -> Result<()>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    match x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((flat, &value)) => Err(ModelError::NonFiniteOutput {
            op: op(),
            index: unravel(flat, x.shape()),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(7, &[2, 3, 4]), vec![0, 1, 3]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(5, &[6]), vec![5]);
    }

    #[test]
    fn the_first_bad_value_is_named_with_its_index() {
        let bytes: Vec<u8> = [1.0f32, 2.0, f32::INFINITY, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = convert("w", &[2, 2], &bytes, f32::from_le_bytes).unwrap_err();
        assert_eq!(err.to_string(), "tensor `w` holds inf at index [1, 0]");
        let x = ndarray::arr2(&[[0.0f32, 1.0], [f32::NAN, 2.0]]);
        let err = check_output(|| "op".into(), &x.t()).unwrap_err();
        // The transposed view's first bad element in logical order is [0, 1].
        assert!(
            err.to_string()
                .starts_with("op produced NaN at index [0, 1]"),
            "{err}"
        );
    }
}
