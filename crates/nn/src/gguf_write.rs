//! Writing GGUF files (version 3), the layout `gguf.rs` reads: a header of typed metadata and tensor
//! descriptions, then each tensor's bytes at an offset aligned to 32.
//!
//! Tensors are encoded as F32, F16 or Q8_0 (blocks of 32 values: `d = max|x| / 127` as f16, then
//! `q = round(x / d)` as 32 signed bytes, so `x ~ d * q`), the types llama.cpp and transformers read for
//! a model exported at full or 8-bit precision.

use crate::gguf::Value;
use crate::gguf_blocks::GgmlType;
use crate::{write_atomic, NnError};
use half::f16;
use std::path::Path;

/// Where tensor data starts and each tensor begins: a multiple of this (GGUF's default alignment).
const ALIGNMENT: usize = 32;

/// A GGUF file being put together in memory; `write` saves it atomically.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    /// (name, row-major dims, type, encoded bytes)
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry (keys are written in the order they are added).
    pub fn metadata(&mut self, key: &str, value: Value) {
        self.metadata.push((key.to_string(), value));
    }

    /// Adds a tensor of row-major `dims`, encoded as `ty` (F32, F16 or Q8_0; Q8_0 needs rows of whole
    /// blocks of 32).
    pub fn tensor(&mut self, name: &str, dims: &[usize], values: &[f32], ty: GgmlType) {
        assert_eq!(
            dims.iter().product::<usize>(),
            values.len(),
            "gguf tensor `{name}`: {} values for dims {dims:?}",
            values.len()
        );
        let bytes = match ty {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            GgmlType::Q8_0 => {
                assert!(
                    dims.last().is_some_and(|&d| d % 32 == 0),
                    "gguf tensor `{name}`: Q8_0 rows must be whole blocks of 32, dims {dims:?}"
                );
                values.chunks_exact(32).flat_map(q8_0_block).collect()
            }
            other => panic!("gguf tensor `{name}`: writing {other} is not supported"),
        };
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, bytes));
    }

    /// The whole file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            string(&mut out, key);
            out.extend_from_slice(&type_id(value).to_le_bytes());
            value_bytes(&mut out, value);
        }
        let mut offset = 0;
        for (name, dims, ty, bytes) in &self.tensors {
            string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for &d in dims.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes()); // ne[0] is the innermost axis
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        for (_, _, _, bytes) in &self.tensors {
            out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Writes the file atomically (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), NnError> {
        write_atomic(path, &self.to_bytes())
    }
}

/// One Q8_0 block: the scale `d = max|x| / 127` (f16) and 32 codes `round(x / d)`.
fn q8_0_block(x: &[f32]) -> Vec<u8> {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut block = f16::from_f32(d).to_le_bytes().to_vec();
    block.extend(
        x.iter()
            .map(|&v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
    );
    block
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's number for a value's type.
fn type_id(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn value_bytes(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            // an array holds one type: that of its first item (an empty one is written as u8s)
            let ty = items.first().map_or(0, type_id);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                assert_eq!(type_id(item), ty, "gguf: an array mixes value types");
                value_bytes(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgufFile;

    /// What is written reads back: metadata of every type, and tensors in each type (Q8_0 within half a
    /// step of its scale).
    #[test]
    fn a_written_file_reads_back() {
        let mut w = GgufWriter::new();
        let values = [
            Value::U8(1),
            Value::I8(-2),
            Value::U16(3),
            Value::I16(-4),
            Value::U32(5),
            Value::I32(-6),
            Value::U64(7),
            Value::I64(-8),
            Value::F32(0.5),
            Value::F64(-0.25),
            Value::Bool(true),
            Value::String("héllo".into()),
            Value::Array(vec![Value::String("a".into()), Value::String("b c".into())]),
        ];
        for (i, v) in values.iter().enumerate() {
            w.metadata(&format!("test.key{i}"), v.clone());
        }
        let x: Vec<f32> = (0..2 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        w.tensor("a", &[2, 64], &x, GgmlType::F32);
        w.tensor("b", &[2, 64], &x, GgmlType::F16);
        w.tensor("c", &[2, 64], &x, GgmlType::Q8_0);
        w.tensor("d", &[3], &x[..3], GgmlType::F32); // not a multiple of the alignment
        let path =
            std::env::temp_dir().join(format!("lowrank-gguf-write-{}.gguf", std::process::id()));
        w.write(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(file.get(&format!("test.key{i}")), Some(v));
        }
        let read = |name: &str| file.read_f32(name).unwrap();
        assert_eq!(read("a").0, x);
        assert_eq!(read("a").1.dims(), [2, 64]);
        for (b, v) in read("b").0.iter().zip(&x) {
            assert!((b - v).abs() <= v.abs() * 1e-3, "{b} vs {v}");
        }
        for (row, xs) in read("c").0.chunks(32).zip(x.chunks(32)) {
            let step = xs.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            for (c, v) in row.iter().zip(xs) {
                assert!((c - v).abs() <= 0.5 * step + 1e-3 * v.abs(), "{c} vs {v}");
            }
        }
        assert_eq!(read("d").0, x[..3]);
        std::fs::remove_file(&path).unwrap();
    }
}
