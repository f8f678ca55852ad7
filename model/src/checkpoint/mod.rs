//! Memory-mapped safetensors checkpoints: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`.
//!
//! # Contract
//! - [`Checkpoint::open`] maps every file and validates each header (via the `safetensors` crate: JSON form,
//!   offsets contiguous and inside the file, byte counts matching dtype × shape). A corrupt header is
//!   [`ModelError::Safetensors`] naming the file; an index naming a tensor its shard lacks, or a tensor in two
//!   shards, is [`ModelError::Checkpoint`].
//! - Reads convert to `f32`: F32, BF16 and F16 exactly; F8_E4M3 by dequantizing with the tensor's
//!   `<name>_scale_inv` block scales (see [`fp8`]). Other dtypes are [`ModelError::TensorDType`].
//!   [`Checkpoint::read_fp8_raw`] returns an FP8 weight's codes and scales as stored, after the same
//!   checks (for weights that stay FP8 on the device).
//! - [`Checkpoint::matrix`] / [`Checkpoint::vector`] check the stored shape against the one the caller expects
//!   and name the tensor on mismatch; a missing tensor is [`ModelError::MissingTensor`].
//! - Every file (the index, each shard, `model.safetensors`) must be a regular file after following symlinks:
//!   a directory, FIFO, device or dangling link is [`ModelError::NotAFile`] saying what was found, checked
//!   before opening (a FIFO never blocks).
//! - Every value is checked for NaN/∞ as it is converted (FP8: the NaN bytes 0x7F/0xFF, and products with
//!   the block scale that overflow), in the same pass; the first bad one is [`ModelError::NonFiniteWeight`]
//!   naming the tensor and the element's index.
//! - Trusted: that the files are not modified or truncated while mapped (see the SAFETY note in `map_file`).

pub mod fp8;

use crate::error::{ModelError, Result};
use crate::files;
use crate::finite::convert;
use memmap2::Mmap;
use ndarray::{Array1, Array2, ArrayView2};
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct MappedFile {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    info: TensorInfo,
}

/// Dtype and shape of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// An open checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<MappedFile>,
    tensors: BTreeMap<String, Entry>,
    fp8_block: [usize; 2],
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Open `dir/model.safetensors.index.json` if present, else `dir/model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let file_names: Vec<String> = if files::exists(&index_path) {
            files::require_regular_file(&index_path)?;
            let index = read_index(&index_path)?;
            let mut names: Vec<String> = index.values().cloned().collect();
            names.sort();
            names.dedup();
            let mut ckpt = Checkpoint::from_files(&dir, &names)?;
            // The index is the authority on where each tensor lives.
            for (tensor, file) in &index {
                let in_file = ckpt
                    .tensors
                    .get(tensor)
                    .map(|e| ckpt.files[e.file].path.ends_with(file));
                if in_file != Some(true) {
                    return Err(ModelError::Checkpoint {
                        dir,
                        reason: format!("{INDEX_FILE} places tensor `{tensor}` in `{file}`, which does not hold it"),
                    });
                }
            }
            ckpt.tensors.retain(|name, _| index.contains_key(name));
            return Ok(ckpt);
        } else if files::exists(&single_path) {
            // A directory, FIFO, device or dangling link under the name is reported as such by `map_file`.
            vec![SINGLE_FILE.to_string()]
        } else if !dir.is_dir() {
            return Err(ModelError::Checkpoint {
                dir,
                reason: "not a directory".into(),
            });
        } else {
            return Err(ModelError::Checkpoint {
                dir,
                reason: format!("holds neither {SINGLE_FILE} nor {INDEX_FILE}"),
            });
        };
        Checkpoint::from_files(&dir, &file_names)
    }

    fn from_files(dir: &Path, names: &[String]) -> Result<Self> {
        let mut files = Vec::with_capacity(names.len());
        let mut tensors = BTreeMap::new();
        for name in names {
            if Path::new(name).components().count() != 1 {
                return Err(ModelError::Checkpoint {
                    dir: dir.to_path_buf(),
                    reason: format!("shard name `{name}` is not a plain file name"),
                });
            }
            let path = dir.join(name);
            let map = map_file(&path)?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    reason: match e {
                        safetensors::SafeTensorError::InvalidHeaderDeserialization => {
                            explain_header(&map).unwrap_or_else(|| describe(&e))
                        }
                        _ => describe(&e),
                    },
                })?;
            let file = files.len();
            for (tensor, info) in metadata.tensors() {
                if let Some(prev) = tensors.insert(
                    tensor.clone(),
                    Entry {
                        file,
                        info: info.clone(),
                    },
                ) {
                    let first: &MappedFile = &files[prev.file];
                    return Err(ModelError::Checkpoint {
                        dir: dir.to_path_buf(),
                        reason: format!(
                            "tensor `{tensor}` is in both {} and {name}",
                            first.path.display()
                        ),
                    });
                }
            }
            files.push(MappedFile {
                path,
                map,
                data_start: 8 + header_len,
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            tensors,
            fp8_block: [128, 128],
        })
    }

    /// Use `block` (rows, columns) for FP8 `weight_scale_inv` instead of 128×128.
    pub fn with_fp8_block(mut self, block: [usize; 2]) -> Self {
        self.fp8_block = block;
        self
    }

    /// Rows × columns of weight per FP8 `weight_scale_inv` entry.
    pub fn fp8_block(&self) -> [usize; 2] {
        self.fp8_block
    }

    /// FP8 e4m3 weight `name` (a `[rows, cols]` matrix) as stored: its codes, row-major, and its f32
    /// block scales `[ceil(rows / br), ceil(cols / bc)]` for the checkpoint's block `[br, bc]`, after the
    /// same checks as [`Checkpoint::read_f32`] (shape, scales present and finite, no NaN byte, no code
    /// whose product with its scale overflows). Any other stored dtype is [`ModelError::TensorDType`].
    pub fn read_fp8_raw(&self, name: &str, shape: &[usize]) -> Result<(Vec<u8>, Vec<f32>)> {
        let r = self.read_fp8_raw_mapped(name, shape);
        self.release(name);
        r
    }

    fn read_fp8_raw_mapped(&self, name: &str, shape: &[usize]) -> Result<(Vec<u8>, Vec<f32>)> {
        let (bytes, info) = self.bytes(name)?;
        if info.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                got: info.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        if info.dtype != Dtype::F8_E4M3 {
            return Err(ModelError::TensorDType {
                name: name.to_string(),
                reason: format!(
                    "expected F8_E4M3 like the other weights it is loaded with, got {}",
                    dtype_name(info.dtype)
                ),
            });
        }
        let (rows, cols, scale) = self.fp8_scales(name, shape)?;
        let q = ArrayView2::from_shape((rows, cols), bytes)
            .expect("byte count validated by read_metadata");
        let s = ArrayView2::from_shape(
            (
                rows.div_ceil(self.fp8_block[0]),
                cols.div_ceil(self.fp8_block[1]),
            ),
            &scale[..],
        )
        .expect("shape checked by fp8_scales");
        fp8::check_blocks(q, s, self.fp8_block).map_err(|bad| Self::fp8_error(name, bad))?;
        Ok((bytes.to_vec(), scale))
    }

    /// The block scales of FP8 matrix `name` of `shape` (read and checked like any tensor).
    fn fp8_scales(&self, name: &str, shape: &[usize]) -> Result<(usize, usize, Vec<f32>)> {
        let &[rows, cols] = shape else {
            return Err(ModelError::TensorDType {
                name: name.to_string(),
                reason: format!(
                    "F8_E4M3 is supported for matrices only, this one has shape {}",
                    crate::error::fmt_index(shape)
                ),
            });
        };
        let scale_name = format!("{name}_scale_inv");
        if !self.contains(&scale_name) {
            return Err(ModelError::TensorDType {
                name: name.to_string(),
                reason: format!("F8_E4M3 weight without its block scales `{scale_name}`"),
            });
        }
        let [br, bc] = self.fp8_block;
        let scale_shape = [rows.div_ceil(br), cols.div_ceil(bc)];
        // Non-finite scales are rejected while they are read, like any tensor.
        let scale = self.read_f32(&scale_name, &scale_shape)?;
        Ok((rows, cols, scale))
    }

    fn fp8_error(name: &str, bad: fp8::NonFinite) -> ModelError {
        ModelError::NonFiniteWeight {
            name: name.to_string(),
            index: vec![bad.row, bad.col],
            what: if bad.byte & 0x7f == 0x7f {
                format!("NaN (e4m3 byte 0x{:02X})", bad.byte)
            } else {
                format!(
                    "{} (e4m3 byte 0x{:02X} times block scale {})",
                    bad.value, bad.byte, bad.scale
                )
            },
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of all stored tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.tensors.get(name).map(|e| TensorMeta {
            dtype: e.info.dtype,
            shape: e.info.shape.clone(),
        })
    }

    /// Raw stored bytes of `name`.
    fn bytes(&self, name: &str) -> Result<(&[u8], &TensorInfo)> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let file = &self.files[entry.file];
        let (s, e) = entry.info.data_offsets;
        // read_metadata checked that the offsets lie inside the mapped file.
        Ok((
            &file.map[file.data_start + s..file.data_start + e],
            &entry.info,
        ))
    }

    /// `name` as f32 in row-major order, after checking that it has `shape`. The tensor's mapped pages
    /// are released once it is converted (see [`Checkpoint::release`]).
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let r = self.read_f32_mapped(name, shape);
        self.release(name);
        r
    }

    /// Drops this process's resident pages of `name`'s stored bytes (`MADV_DONTNEED`): a load that reads
    /// the checkpoint tensor by tensor then holds one tensor's pages at a time, not every shard it has
    /// read (file pages stay in the page cache; a later read faults them back in unchanged). Best
    /// effort: a failed advice only leaves the pages resident.
    pub fn release(&self, name: &str) {
        let Some(entry) = self.tensors.get(name) else {
            return;
        };
        let file = &self.files[entry.file];
        let (s, e) = entry.info.data_offsets;
        #[cfg(unix)]
        // SAFETY: the mapping is read-only and never written through, so MADV_DONTNEED only drops the
        // page-table entries of file-backed pages; the next access reads the same bytes from the file
        // (the module's trust that the file is not modified while mapped covers that). No reference into
        // the range is invalidated: its contents do not change.
        unsafe {
            let _ = file.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                file.data_start + s,
                e - s,
            );
        }
    }

    fn read_f32_mapped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (bytes, info) = self.bytes(name)?;
        if info.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                got: info.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        match info.dtype {
            Dtype::F32 => convert(name, shape, bytes, f32::from_le_bytes),
            Dtype::BF16 => convert(name, shape, bytes, |b| {
                half::bf16::from_le_bytes(b).to_f32()
            }),
            Dtype::F16 => convert(name, shape, bytes, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::F8_E4M3 => self.read_fp8(name, bytes, shape),
            other => Err(ModelError::TensorDType {
                name: name.to_string(),
                reason: format!(
                    "dtype {} is not supported (expected F32, BF16, F16 or F8_E4M3)",
                    dtype_name(other)
                ),
            }),
        }
    }

    fn read_fp8(&self, name: &str, bytes: &[u8], shape: &[usize]) -> Result<Vec<f32>> {
        let (rows, cols, scale) = self.fp8_scales(name, shape)?;
        let q = ArrayView2::from_shape((rows, cols), bytes)
            .expect("byte count validated by read_metadata");
        let s = ArrayView2::from_shape(
            (
                rows.div_ceil(self.fp8_block[0]),
                cols.div_ceil(self.fp8_block[1]),
            ),
            &scale[..],
        )
        .expect("shape checked by fp8_scales");
        fp8::dequantize_blocks(q, s, self.fp8_block)
            .map(|w| w.into_raw_vec_and_offset().0)
            .map_err(|bad| Self::fp8_error(name, bad))
    }

    /// `name` as an f32 `[rows, cols]` matrix.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        let data = self.read_f32(name, &[rows, cols])?;
        Ok(Array2::from_shape_vec((rows, cols), data).expect("length checked against the shape"))
    }

    /// `name` as an f32 vector of `len`.
    pub fn vector(&self, name: &str, len: usize) -> Result<Array1<f32>> {
        Ok(Array1::from_vec(self.read_f32(name, &[len])?))
    }
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "shorter than the 8-byte header length".into(),
        E::HeaderTooLarge => "header length too large".into(),
        E::InvalidHeaderLength => "header length runs past the end of the file".into(),
        E::InvalidHeader => "header is not UTF-8".into(),
        E::InvalidHeaderDeserialization => "header is not a valid safetensors JSON header".into(),
        E::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's byte size does not match its dtype and shape".into(),
        E::MetadataIncompleteBuffer => "the tensors' data does not cover the file exactly".into(),
        E::ValidationOverflow => "a tensor's size overflows".into(),
        E::InvalidHeaderStart => "header does not start with `{`".into(),
        E::TensorNotFound(name) => format!("no tensor `{name}`"),
        E::IoError(e) => e.to_string(),
        E::JsonError(e) => format!("header is not valid JSON: {e}"),
        E::InvalidTensorView(dtype, shape, len) => format!(
            "{len} bytes do not hold a {} tensor of shape {}",
            dtype_name(*dtype),
            crate::error::fmt_index(shape)
        ),
        // A variant added by a later safetensors.
        #[allow(unreachable_patterns)]
        _ => "header is not a valid safetensors header".into(),
    }
}

/// Why a header that is valid JSON is still no safetensors header (safetensors only says that it is not):
/// the first entry that is not an object, has no known dtype, or whose shape or data offsets are not
/// non-negative integers (two offsets). None when the header is not JSON at all or nothing is found.
fn explain_header(file: &[u8]) -> Option<String> {
    use serde_json::Value;
    let len = usize::try_from(u64::from_le_bytes(file.get(..8)?.try_into().ok()?)).ok()?;
    let header: Value = serde_json::from_slice(file.get(8..8usize.checked_add(len)?)?).ok()?;
    let Some(entries) = header.as_object() else {
        return Some("header is JSON but not an object of tensors".into());
    };
    let naturals = |v: Option<&Value>| {
        v.and_then(Value::as_array)
            .map(|a| a.iter().all(|x| x.as_u64().is_some()).then_some(a.len()))
    };
    for (name, entry) in entries.iter().filter(|(name, _)| *name != "__metadata__") {
        let Some(entry) = entry.as_object() else {
            return Some(format!("tensor `{name}` is not a JSON object"));
        };
        match entry.get("dtype").and_then(Value::as_str) {
            None => return Some(format!("tensor `{name}` has no dtype")),
            Some(d) if serde_json::from_value::<Dtype>(Value::from(d)).is_err() => {
                return Some(format!("tensor `{name}` has an unknown dtype `{d}`"))
            }
            Some(_) => {}
        }
        if naturals(entry.get("shape")).flatten().is_none() {
            return Some(format!(
                "tensor `{name}`: its shape is not a list of non-negative integers"
            ));
        }
        if naturals(entry.get("data_offsets")).flatten() != Some(2) {
            return Some(format!(
                "tensor `{name}`: its data_offsets are not two non-negative integers"
            ));
        }
    }
    None
}

/// A dtype as safetensors headers spell it (`F8_E4M3`, `I32`): the name of its unit variant.
pub fn dtype_name(dtype: Dtype) -> String {
    format!("{dtype:?}")
}

fn map_file(path: &Path) -> Result<Mmap> {
    files::require_regular_file(path)?;
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the mapping is read-only and private to this process; the contract of this module is that the
    // checkpoint files are not modified or truncated while the checkpoint is open (as for any loader that
    // maps weights). Every slice taken from it is bounds-checked against the mapped length.
    let map = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(map)
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = files::read_json_text(path)?;
    let json_err = |reason: String| ModelError::Json {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| json_err(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| json_err("no `weight_map` object".into()))?;
    map.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|f| (k.clone(), f.to_string()))
                .ok_or_else(|| json_err(format!("weight_map entry `{k}` is not a file name")))
        })
        .collect()
}
