//! GGUF files (llama.cpp's format): a header of typed metadata and tensor descriptions, then the tensors'
//! bytes, each at an aligned offset. Versions 2 and 3 (little-endian) are read; version 1 used 32-bit counts
//! and is long gone.
//!
//! ```text
//! "GGUF" | version: u32 | n_tensors: u64 | n_kv: u64
//! n_kv x      key: string | value_type: u32 | value          (string = len: u64 | UTF-8 bytes)
//! n_tensors x name: string | n_dims: u32 | ne[n_dims]: u64 | type: u32 | offset: u64
//! padding to `general.alignment` (default 32) | tensor data (offsets are relative to here)
//! ```
//!
//! `ne[0]` is the innermost (fastest-moving) dimension, so a (rows, cols) matrix is stored with
//! `ne = [cols, rows]`: [`TensorInfo::dims`] gives the row-major order lowrank uses.
//!
//! The header is streamed and every count and length is checked against the bytes the file has left
//! before anything is allocated for it, so a damaged or hostile file is an error, never a huge allocation.
//! Tensors are read one at a time, on demand, and decoded to f32 ([`GgmlType::dequantize`]), or read as
//! they are stored, for a [`BlockWeight`] (`read_blocks`).

use crate::gguf_blocks::{f16_at, GgmlType};
use crate::BlockWeight;
use crate::NnError;
use lowrank_tensor::{Backend, Element, Shape, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// An integer value of any width, if it is one and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number of any type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor is and how it is encoded.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major dimensions (GGUF's `ne` reversed).
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Absolute position of the first byte in the file.
    pub start: u64,
    /// Bytes the tensor takes (`None` for a type lowrank cannot decode, whose block size it does not know).
    pub n_bytes: Option<u64>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The (out, in) of a matrix a [`BlockWeight`] can hold as it is stored: a block type (Q8_0, Q4_0,
    /// Q4_1) whose rows are whole blocks of 32; `None` for any other tensor.
    pub fn block_matrix(&self) -> Option<[usize; 2]> {
        match self.dims[..] {
            [out, d_in] if BlockWeight::holds(self.ggml_type) && d_in % 32 == 0 => {
                Some([out, d_in])
            }
            _ => None,
        }
    }
}

/// An open GGUF file: its metadata and tensor table in memory, the tensors' bytes still on disk.
pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    file: Mutex<File>,
}

/// More dimensions than ggml has (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused (each level would be a recursion).
const MAX_NESTING: usize = 4;
/// The largest tensor accepted (2^36 values): far above any model this engine loads, and a bound on what
/// a header can ask for.
const MAX_TENSOR_VALUES: u64 = 1 << 36;

impl GgufFile {
    /// Opens `path` and reads its header. Only a regular file is read.
    pub fn open(path: &Path) -> Result<Self, NnError> {
        let io = |e| NnError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(NnError::gguf(path, "not a regular file"));
        }
        let mut r = HeaderReader {
            inner: BufReader::new(&file),
            pos: 0,
            len: meta.len(),
            path,
        };
        let magic = r.bytes(4, "the magic number")?;
        if magic != b"GGUF" {
            return Err(r.error(format!(
                "starts with {magic:?}, not the magic \"GGUF\" (is it a GGUF file?)"
            )));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(r.error(format!("version {version} is not supported (2 and 3 are)")));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        // a key-value pair takes at least 12 bytes (key length, value type), a tensor info at least 24
        r.fits(n_kv, 12, "metadata entries")?;
        r.fits(n_tensors, 24, "tensor infos")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("a metadata key")?;
            let ty = r.u32(&format!("the type of `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.error(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => return Err(r.error(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            infos.push(r.tensor_info()?);
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, ggml_type, offset) in infos {
            if !names.insert(name.clone()) {
                return Err(r.error(format!("tensor `{name}` appears twice")));
            }
            if offset % alignment != 0 {
                return Err(r.error(format!(
                    "tensor `{name}` starts at data offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            let numel: u64 = dims.iter().map(|&d| d as u64).product();
            let n_bytes = match ggml_type.block() {
                None => None,
                Some((values, size)) => {
                    let inner = *dims.last().unwrap_or(&1);
                    if inner % values != 0 {
                        return Err(r.error(format!(
                            "tensor `{name}` ({ggml_type}, shape {}) has rows of {inner} values, not whole blocks of {values}",
                            Shape::from(dims.clone())
                        )));
                    }
                    Some(numel / values as u64 * size as u64)
                }
            };
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(n_bytes.unwrap_or(0)));
            match (start, end) {
                (Some(start), Some(end)) if end <= r.len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    start,
                    n_bytes,
                }),
                _ => {
                    return Err(r.error(format!(
                        "tensor `{name}` ({ggml_type}, {numel} values) at data offset {offset} ends past \
                         the end of the file ({} bytes, data from byte {data_start})",
                        r.len
                    )))
                }
            }
        }
        drop(r);
        Ok(GgufFile {
            path: path.into(),
            version,
            metadata,
            tensors,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required non-negative integer from the metadata.
    pub fn usize(&self, key: &str) -> Result<usize, NnError> {
        let v = self.required(key)?;
        v.as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                self.error(format!(
                    "metadata `{key}` is {v:?}, not a non-negative integer"
                ))
            })
    }

    /// A required number from the metadata.
    pub fn f64(&self, key: &str) -> Result<f64, NnError> {
        let v = self.required(key)?;
        v.as_f64()
            .ok_or_else(|| self.error(format!("metadata `{key}` is {v:?}, not a number")))
    }

    /// A required string from the metadata.
    pub fn str(&self, key: &str) -> Result<&str, NnError> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| self.error(format!("metadata `{key}` is not a string")))
    }

    /// A required array from the metadata.
    pub fn array(&self, key: &str) -> Result<&[Value], NnError> {
        let v = self.required(key)?;
        v.as_array()
            .ok_or_else(|| self.error(format!("metadata `{key}` is not an array")))
    }

    fn required(&self, key: &str) -> Result<&Value, NnError> {
        self.get(key)
            .ok_or_else(|| self.error(format!("metadata `{key}` is missing")))
    }

    pub fn error(&self, message: impl Into<String>) -> NnError {
        NnError::gguf(&self.path, message)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads tensor `name` and decodes it to f32 values, row-major. Fails on a missing tensor, a type
    /// lowrank does not decode, a read error, or a value that is not finite.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Shape), NnError> {
        let (info, bytes) = self.read_bytes(name)?;
        let mut values = vec![0f32; info.numel()];
        info.ggml_type.dequantize(&bytes, &mut values);
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(NnError::NotFinite {
                path: self.path.clone(),
                name: name.into(),
                index,
                value: values[index].into(),
            });
        }
        Ok((values, Shape::from(info.dims.clone())))
    }

    /// Reads matrix `name`, stored in one of the block types (Q8_0, Q4_0, Q4_1), as it is: its type, dims
    /// and bytes, ready for [`BlockWeight::new`] (no f32 copy). Fails like `read_f32`, and on a tensor that
    /// is not such a matrix ([`TensorInfo::block_matrix`]). Every block's scale (and minimum) is checked
    /// finite, which makes each of its values finite.
    pub fn read_blocks(&self, name: &str) -> Result<(GgmlType, [usize; 2], Vec<u8>), NnError> {
        let (info, bytes) = self.read_bytes(name)?;
        let ty = info.ggml_type;
        let Some(dims) = info.block_matrix() else {
            return Err(self.error(format!(
                "tensor `{name}` ({ty}, dims {:?}) is not a matrix of whole Q8_0, Q4_0 or Q4_1 blocks",
                info.dims
            )));
        };
        let size = ty.block().expect("a block type").1;
        let scales = if ty == GgmlType::Q4_1 { 2 } else { 1 }; // f16s at the start of each block
        for (b, block) in bytes.chunks_exact(size).enumerate() {
            for at in (0..scales).map(|k| 2 * k) {
                let value = f16_at(block, at);
                if !value.is_finite() {
                    return Err(NnError::NotFinite {
                        path: self.path.clone(),
                        name: name.into(),
                        index: b * 32,
                        value: value.into(),
                    });
                }
            }
        }
        Ok((ty, dims, bytes))
    }

    /// Tensor `name`'s info and its bytes, read from the file. Fails on a missing tensor, a type lowrank
    /// does not decode, or a read error.
    fn read_bytes(&self, name: &str) -> Result<(&TensorInfo, Vec<u8>), NnError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| NnError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
                expected: Shape::default(),
            })?;
        let n_bytes = info.n_bytes.ok_or_else(|| {
            self.error(format!(
                "tensor `{name}` has type {}, which lowrank does not decode (it reads F32, F16, BF16, \
                 Q8_0, Q4_0 and Q4_1)",
                info.ggml_type
            ))
        })?;
        let mut bytes = vec![0u8; n_bytes as usize];
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(info.start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| NnError::io(&self.path, e))?;
        Ok((info, bytes))
    }

    /// Reads tensor `name` onto `backend`, checking its shape against `expected` if given.
    pub fn tensor<B: Backend>(
        &self,
        name: &str,
        expected: Option<&Shape>,
        backend: &B,
    ) -> Result<Tensor<B>, NnError> {
        if let (Some(expected), Some(info)) = (expected, self.tensor_info(name)) {
            let found = Shape::from(info.dims.clone());
            if *expected != found {
                return Err(NnError::ShapeMismatch {
                    path: self.path.clone(),
                    name: name.into(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
        let (values, shape) = self.read_f32(name)?;
        let values = values
            .into_iter()
            .map(|v| B::Elem::from_f64(v.into()))
            .collect();
        Tensor::from_vec(values, shape, backend).map_err(|source| NnError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            source,
        })
    }
}

/// Reads the header's little-endian fields, knowing how many bytes the file has left.
struct HeaderReader<'a> {
    inner: BufReader<&'a File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl HeaderReader<'_> {
    fn error(&self, message: impl Into<String>) -> NnError {
        NnError::gguf(self.path, message)
    }

    /// Fails unless `count` items of at least `each` bytes fit in what is left of the file.
    fn fits(&self, count: u64, each: u64, what: &str) -> Result<(), NnError> {
        let left = self.len - self.pos;
        match count.checked_mul(each) {
            Some(n) if n <= left => Ok(()),
            _ => Err(self.error(format!(
                "header claims {count} {what} at byte {}, but only {left} bytes follow (truncated or damaged)",
                self.pos
            ))),
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, NnError> {
        self.fits(n, 1, what)?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.error(format!("reading {what} at byte {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], NnError> {
        let bytes = self.bytes(N as u64, what)?;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, NnError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, NnError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, NnError> {
        let len = self.u64(what)?;
        let at = self.pos;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes)
            .map_err(|_| self.error(format!("{what} at byte {at} is not UTF-8")))
    }

    /// A value of GGUF type `ty` for metadata `key`, inside `depth` arrays.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, NnError> {
        let what = &format!("the value of `{key}`");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.error(format!("`{key}`: bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(
                        self.error(format!("`{key}`: arrays nested deeper than {MAX_NESTING}"))
                    );
                }
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                let each = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => {
                        return Err(
                            self.error(format!("`{key}`: array of unknown value type {elem}"))
                        )
                    }
                };
                self.fits(count, each, &format!("elements of `{key}`"))?;
                let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            _ => return Err(self.error(format!("`{key}` has unknown value type {ty}"))),
        })
    }

    /// One tensor description: (name, row-major dims, type, data offset).
    fn tensor_info(&mut self) -> Result<(String, Vec<usize>, GgmlType, u64), NnError> {
        let name = self.string("a tensor name")?;
        let n_dims = self.u32(&format!("the rank of `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(self.error(format!(
                "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(self.u64(&format!("the dimensions of `{name}`"))?);
        }
        let numel = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if numel.is_none_or(|n| n > MAX_TENSOR_VALUES) {
            return Err(self.error(format!(
                "tensor `{name}` has dimensions {ne:?}: more than {MAX_TENSOR_VALUES} values"
            )));
        }
        let ggml_type = GgmlType::from_id(self.u32(&format!("the type of `{name}`"))?);
        let offset = self.u64(&format!("the offset of `{name}`"))?;
        let dims = ne.iter().rev().map(|&d| d as usize).collect();
        Ok((name, dims, ggml_type, offset))
    }
}

impl NnError {
    pub fn gguf(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        NnError::Gguf {
            path: path.into(),
            message: message.into(),
        }
    }
}
