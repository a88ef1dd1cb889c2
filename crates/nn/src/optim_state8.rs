//! AdamW's moments in 8 bits (Dettmers et al., 2021, "8-bit Optimizers via Block-wise Quantization";
//! bitsandbytes' `AdamW8bit`): between steps each moment is kept as block-wise codes of a dynamic map,
//! one byte per value plus one f32 absmax per block of 256, a quarter of f32's bytes.
//!
//! ```text
//! m: codes of the signed dynamic map      (m takes both signs)
//! v: codes of the unsigned dynamic map    (v >= 0: every code spent on magnitudes)
//! step:  m, v = dequant(m8, v8);  the f32 AdamW update;  m8, v8 = quant(m, v)
//! ```
//!
//! The dynamic map's nearly constant *relative* precision is what makes 8 bits enough: v spans many
//! orders of magnitude within a tensor, and a linear code would flush its small values to zero (dividing
//! by sqrt(v) ~ 0 is a huge step). Blocks bound an outlier's effect to its own 256 values. As in
//! bitsandbytes, a parameter with fewer than `MIN_8BIT_SIZE` values keeps f32 moments: there the state is
//! small anyway, and the quantization error would not pay for itself.

use lowrank_tensor::dynamic_map::DynamicMap;
use lowrank_tensor::{Backend, Element, Packed8bit, Tensor};

/// Values per absmax block of an 8-bit moment (bitsandbytes' optimizers use 256).
pub const STATE_BLOCK: usize = 256;
/// Parameters with fewer values keep f32 moments (bitsandbytes' `min_8bit_size` default).
pub const MIN_8BIT_SIZE: usize = 4096;

/// The maps and their lookup tables, on the parameters' device (made once per optimizer).
pub struct Maps<B: Backend> {
    signed: (B::Storage, B::Storage),
    unsigned: (B::Storage, B::Storage),
}

impl<B: Backend> Maps<B> {
    pub fn new(backend: &B) -> Self {
        let upload = |map: &DynamicMap| {
            let values = map
                .values
                .iter()
                .map(|&v| B::Elem::from_f64(v as f64))
                .collect();
            (
                backend.storage_from_vec(values),
                backend.bytes_storage(map.table()),
            )
        };
        Maps {
            signed: upload(DynamicMap::signed()),
            unsigned: upload(DynamicMap::unsigned()),
        }
    }
}

/// One parameter's (m, v) in 8 bits: on the device (`S = B::Storage`), or paged out to the host
/// (`S = Vec<B::Elem>`, `AdamW::paged`).
#[derive(Clone)]
pub struct Moments8<S> {
    m: Packed8bit<S>,
    v: Packed8bit<S>,
}

/// Bytes held by one packed moment: a code per value and an f32 absmax per block.
fn packed_bytes<S>(q: &Packed8bit<S>) -> usize {
    q.numel + 4 * q.numel.div_ceil(q.block)
}

impl<S> Moments8<S> {
    /// Bytes held by both moments.
    pub fn size_in_bytes(&self) -> usize {
        packed_bytes(&self.m) + packed_bytes(&self.v)
    }
}

/// `Moments8` on the host.
pub type HostMoments8<B> = Moments8<Vec<<B as Backend>::Elem>>;

impl<E: Element> Moments8<Vec<E>> {
    /// Uploads paged-out moments to `backend`.
    pub fn page_in<B: Backend<Elem = E>>(self, backend: &B) -> Moments8<B::Storage> {
        let up = |q: Packed8bit<Vec<E>>| Packed8bit {
            codes: backend.storage_from_vec(q.codes),
            absmax: backend.storage_from_vec(q.absmax),
            numel: q.numel,
            block: q.block,
        };
        Moments8 {
            m: up(self.m),
            v: up(self.v),
        }
    }
}

impl<S> Moments8<S> {
    /// Quantizes f32 moments `m`, `v` (same shape) on their device.
    pub fn quantize<B: Backend<Storage = S>>(m: &Tensor<B>, v: &Tensor<B>, maps: &Maps<B>) -> Self {
        let backend = m.backend();
        let pack = |x: &Tensor<B>, table: &S| {
            let x = x.contiguous();
            backend.quantize_8bit(x.storage(), x.numel(), STATE_BLOCK, table)
        };
        Moments8 {
            m: pack(m, &maps.signed.1),
            v: pack(v, &maps.unsigned.1),
        }
    }

    /// The moments expanded to f32, in `like`'s shape.
    pub fn dequantize<B: Backend<Storage = S>>(
        &self,
        like: &Tensor<B>,
        maps: &Maps<B>,
    ) -> (Tensor<B>, Tensor<B>) {
        let backend = like.backend();
        let expand = |q: &Packed8bit<S>, map: &S| {
            Tensor::from_storage(backend.dequantize_8bit(q, map), like.shape(), backend)
        };
        (
            expand(&self.m, &maps.signed.0),
            expand(&self.v, &maps.unsigned.0),
        )
    }

    /// Copies the moments to the host (paging them out).
    pub fn page_out<B: Backend<Storage = S>>(&self, backend: &B) -> HostMoments8<B> {
        let down = |q: &Packed8bit<S>| {
            let read = |s: &S| {
                let len = backend.storage_len(s);
                backend.to_vec(s, &lowrank_tensor::Layout::contiguous([len]))
            };
            Packed8bit {
                codes: read(&q.codes),
                absmax: read(&q.absmax),
                numel: q.numel,
                block: q.block,
            }
        };
        Moments8 {
            m: down(&self.m),
            v: down(&self.v),
        }
    }
}
