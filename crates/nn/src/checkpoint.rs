//! Named tensors in safetensors files (the `safetensors` crate), written atomically and read with checks.
//!
//! Atomic: bytes go to a temporary file beside the target, which is then renamed over it, so a crash never
//! leaves a half-written checkpoint. Loading into a module checks every name, shape and dtype, and reports
//! missing and unexpected tensors by name.

use crate::save_dir::{parent_and_name, remove_leftovers};
use crate::{Module, NnError};
use lowrank_autograd::Var;
use lowrank_tensor::{Backend, DType, Element, Shape, Tensor};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` via a temporary file and a rename: readers see the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NnError> {
    let (dir, name) = parent_and_name(path)?;
    // temporary files of earlier writes of this file that were killed before their rename
    remove_leftovers(&dir, |entry| temp_file_of(entry) == Some(name.as_str()));
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        NnError::io(path, e)
    })
}

/// For the name of a temporary file of `write_atomic` (`.{name}.tmp{pid}`), the name of the file it was
/// writing.
pub(crate) fn temp_file_of(file_name: &str) -> Option<&str> {
    let (name, pid) = file_name.strip_prefix('.')?.rsplit_once(".tmp")?;
    pid.bytes().all(|b| b.is_ascii_digit()).then_some(name)
}

fn dtype_of<E: Element>() -> Dtype {
    match E::DTYPE {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

/// Saves named tensors (with optional string metadata) as one safetensors file, atomically.
pub fn save_tensors<B: Backend>(
    path: &Path,
    tensors: &[(String, Tensor<B>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), NnError> {
    let data: Vec<(String, Vec<B::Elem>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec(), t.dims().to_vec()))
        .collect();
    let views = data
        .iter()
        .map(|(n, v, s)| {
            let view = TensorView::new(dtype_of::<B::Elem>(), s.clone(), bytemuck::cast_slice(v))
                .expect("save_tensors: a tensor's byte length always matches its shape");
            (n.clone(), view)
        })
        .collect::<BTreeMap<_, _>>();
    let bytes = safetensors::serialize(views, metadata).map_err(|e| NnError::Format {
        path: path.into(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// The tensors of a safetensors file, read whole, for checked access by name.
pub struct TensorFile {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads a safetensors file. Only a regular file is read, and no more bytes than its size: a device
    /// such as `/dev/zero` or a pipe would never end.
    pub fn open(path: &Path) -> Result<Self, NnError> {
        let io = |e| NnError::io(path, e);
        let mut handle = std::fs::File::open(path).map_err(io)?;
        let meta = handle.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(NnError::Format {
                path: path.into(),
                message: "not a regular file".into(),
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut handle, meta.len()),
            &mut bytes,
        )
        .map_err(io)?;
        let file = TensorFile {
            path: path.into(),
            bytes,
        };
        file.parse()?; // fail early on a truncated or corrupt file
        Ok(file)
    }

    fn parse(&self) -> Result<SafeTensors<'_>, NnError> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| NnError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .parse()
            .map(|st| st.names().into_iter().map(String::from).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The string metadata stored in the header, if any.
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// The number of values the file holds, all tensors together (from the header: nothing is read).
    pub fn num_elements(&self) -> u128 {
        self.parse()
            .map(|st| {
                st.tensors()
                    .iter()
                    .map(|(_, t)| t.shape().iter().map(|&d| d as u128).product::<u128>())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Shape> {
        let st = self.parse().ok()?;
        st.tensor(name).ok().map(|t| Shape::from(t.shape()))
    }

    /// Reads tensor `name`, checking it is present, of `B`'s dtype and (if given) of shape `expected`.
    pub fn tensor<B: Backend>(
        &self,
        name: &str,
        expected: Option<&Shape>,
        backend: &B,
    ) -> Result<Tensor<B>, NnError> {
        let st = self.parse()?;
        let view = st.tensor(name).map_err(|_| NnError::MissingTensor {
            path: self.path.clone(),
            name: name.into(),
            expected: expected.cloned().unwrap_or_default(),
        })?;
        let found = Shape::from(view.shape());
        if let Some(expected) = expected.filter(|e| **e != found) {
            return Err(NnError::ShapeMismatch {
                path: self.path.clone(),
                name: name.into(),
                expected: expected.clone(),
                found,
            });
        }
        if view.dtype() != dtype_of::<B::Elem>() {
            return Err(NnError::DtypeMismatch {
                path: self.path.clone(),
                name: name.into(),
                expected: B::Elem::DTYPE.name().into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        let values: Vec<B::Elem> = bytemuck::pod_collect_to_vec(view.data());
        if let Some((index, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.to_f64().is_finite())
        {
            return Err(NnError::NotFinite {
                path: self.path.clone(),
                name: name.into(),
                index,
                value: v.to_f64(),
            });
        }
        // safetensors checked the byte length; what remains is a device's size limit
        Tensor::from_vec(values, found, backend).map_err(|source| NnError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            source,
        })
    }
}

/// Saves every parameter of `module` under its name.
pub fn save_module<B: Backend>(
    module: &dyn Module<B>,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), NnError> {
    let tensors: Vec<(String, Tensor<B>)> = module
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.value()))
        .collect();
    save_tensors(path, &tensors, metadata)
}

/// Loads every parameter of `module` from `file`. Every name must be present with the right shape and
/// dtype, and the file must hold nothing else; nothing is changed unless everything checks out.
pub fn load_module<B: Backend>(module: &dyn Module<B>, file: &TensorFile) -> Result<(), NnError> {
    let params = module.named_params();
    load_params(file, &params)?;
    let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    if !extra.is_empty() {
        return Err(NnError::UnexpectedTensors {
            path: file.path().into(),
            names: extra,
        });
    }
    Ok(())
}

/// Reads each `(name, param)` from `file` (checked), then sets them all — or none, on the first error.
pub fn load_params<B: Backend>(
    file: &TensorFile,
    params: &[(String, Var<B>)],
) -> Result<(), NnError> {
    let values = params
        .iter()
        .map(|(name, p)| file.tensor(name, Some(&p.shape()), &p.backend()))
        .collect::<Result<Vec<_>, _>>()?;
    for ((_, p), v) in params.iter().zip(values) {
        p.set_value(v);
    }
    Ok(())
}
