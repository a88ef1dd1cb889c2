//! GPU time per kernel, from timestamp queries (`Features::TIMESTAMP_QUERY`). While profiling is on
//! (`Wgpu::start_profiling`), each dispatch's compute pass writes a timestamp when it starts and one when it
//! ends; at each submission the pending passes' timestamps are resolved into a buffer and read back, and
//! each pass's `(end - start) * period` is added to its kernel's total. The read-back makes every
//! submission wait for the GPU, so a profiled run is slower than a plain one: time the step without it,
//! and profile separate steps to see where the GPU's time goes.

use crate::context::Kernel;
use std::collections::HashMap;

/// One kernel's share of the GPU time while profiling was on.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The WGSL file and entry point, e.g. `matmul_vec4.wgsl` and `gemm`.
    pub file: &'static str,
    pub entry: &'static str,
    /// Its dispatches, and the GPU seconds their passes took together.
    pub dispatches: u64,
    pub seconds: f64,
}

/// Timestamps for up to `passes` compute passes per submission, and the totals so far.
pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    /// The resolved timestamps (8 bytes each), and the host-readable copy of them.
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    /// The kernel of each pass recorded since the last submission, in order.
    pending: Vec<(&'static str, &'static str)>,
    totals: HashMap<(&'static str, &'static str), (u64, f64)>,
}

impl Profiler {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, passes: usize) -> Profiler {
        let count = 2 * passes as u32; // a start and an end per pass
        let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: buffer(
                "resolved timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timestamps read-back",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period_ns: queue.get_timestamp_period() as f64,
            pending: Vec::new(),
            totals: HashMap::new(),
        }
    }

    /// The timestamp writes of the next pass, which runs `kernel`.
    pub fn pass(&mut self, kernel: &Kernel) -> wgpu::ComputePassTimestampWrites<'_> {
        let start = 2 * self.pending.len() as u32;
        self.pending.push((kernel.file, kernel.entry));
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(start),
            end_of_pass_write_index: Some(start + 1),
        }
    }

    /// Records, at the end of a submission's commands, the copy of its passes' timestamps to the host.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let count = 2 * self.pending.len() as u32;
        if count == 0 {
            return;
        }
        encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
        let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, bytes);
    }

    /// After the submission: waits for it, reads the timestamps and adds each pass to its kernel's total.
    pub fn collect(&mut self, device: &wgpu::Device) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = 2 * self.pending.len() as u64 * wgpu::QUERY_SIZE as u64;
        let slice = self.readback.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("waiting for the timestamps failed: {e}"))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            _ => return Err("reading the timestamps back failed".into()),
        }
        {
            let data = slice
                .get_mapped_range()
                .map_err(|e| format!("mapping the timestamps failed: {e}"))?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&data);
            for (kernel, pass) in self.pending.iter().zip(ticks.chunks_exact(2)) {
                // a driver may reset its counter between passes: such a pass counts as 0
                let seconds = pass[1].saturating_sub(pass[0]) as f64 * self.period_ns * 1e-9;
                let total = self.totals.entry(*kernel).or_default();
                *total = (total.0 + 1, total.1 + seconds);
            }
        }
        self.readback.unmap();
        self.pending.clear();
        Ok(())
    }

    /// Every kernel's totals, longest first.
    pub fn totals(&self) -> Vec<KernelTime> {
        let mut times: Vec<KernelTime> = self
            .totals
            .iter()
            .map(|(&(file, entry), &(dispatches, seconds))| KernelTime {
                file,
                entry,
                dispatches,
                seconds,
            })
            .collect();
        times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        times
    }
}
