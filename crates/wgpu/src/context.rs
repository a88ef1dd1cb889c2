//! The per-process GPU context: adapter, device and queue, the buffer pool, the pipeline cache and the command
//! encoder that collects dispatches until something has to be read back.
//!
//! The ordering rule that keeps pooled buffers safe: `queue.write_buffer` runs at the start of the next
//! submission, before the commands still pending in the encoder. So the pool keeps two kinds of free
//! buffers: *recent* ones, freed since the last submission (pending commands may still read them: only a
//! kernel, whose write is itself a later command, may reuse them), and *settled* ones, which no pending
//! command touches (an upload may `write_buffer` into them). Each submission settles the recent ones, and
//! gives back to the device the buffers of size classes that no allocation asked for in a while, so the
//! pool follows the working set instead of growing with every shape it ever saw.

use crate::profiler::{KernelTime, Profiler};
use crate::WgpuError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bytes of kernel parameters one dispatch may use (shapes, strides, scalars): 64 `u32` values.
pub const PARAM_BYTES: u64 = 256;
/// Dispatches recorded before the encoder is submitted even without a read-back.
const MAX_PENDING: usize = 1024;
/// Submissions after which the free buffers of a size class nothing asked for are given back to the device.
const TRIM_AFTER_SUBMITS: u64 = 64;
/// Workgroups per grid dimension that every device accepts.
pub const MAX_GROUPS: u32 = 65_535;

/// Counters of GPU work since the context was created (see `Wgpu::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Command buffers submitted to the queue.
    pub submits: u64,
    /// Buffers copied back to the host (each one waits for the GPU).
    pub readbacks: u64,
    /// Kernel outputs for which the pool had no free buffer of the size class (a new buffer was created).
    pub pool_misses: u64,
    /// Host data uploaded (parameters, token ids, targets; dropout masks are drawn on the device).
    pub uploads: u64,
    /// Device memory held by the pool's buffers, in use or free, in bytes.
    pub pool_bytes: u64,
    /// Pipelines compiled (each kernel and op once per process).
    pub pipelines: u64,
}

/// One kernel: an entry point of a WGSL file, compiled with `common.wgsl` and the file's `prelude` (shared
/// helpers of a family, e.g. `rows.wgsl`) in front of it. Built with the `kernel!` macro.
#[derive(Clone, Copy)]
pub struct Kernel {
    /// The family's file name, for the cache key and error messages.
    pub file: &'static str,
    pub source: &'static str,
    pub prelude: &'static str,
    pub entry: &'static str,
    /// How its workgroups combine lanes (`lanes_sum`, `lanes_max`); the row kernels and `reduce.wgsl`'s
    /// `fold` use them.
    pub lanes: Lanes,
}

/// How a workgroup's lanes combine their partial sums and maxima (`lanes_sum` and `lanes_max` in the WGSL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lanes {
    /// Through workgroup memory, a tree of halvings with a barrier each (`lanes.wgsl`): every adapter.
    #[default]
    Workgroup,
    /// Each subgroup in registers, then one pass over workgroup memory (`lanes_subgroup.wgsl`): adapters
    /// with `Features::SUBGROUP`.
    Subgroup,
}

impl Kernel {
    /// The same kernel compiled with `lanes`' reductions.
    pub const fn with_lanes(self, lanes: Lanes) -> Kernel {
        Kernel { lanes, ..self }
    }
}

/// Free buffers by size class (bytes, a power of two); see the module doc for recent and settled.
#[derive(Default)]
struct Pool {
    recent: HashMap<u64, Vec<wgpu::Buffer>>,
    settled: HashMap<u64, Vec<wgpu::Buffer>>,
    /// The submission count when each class was last asked for.
    last_used: HashMap<u64, u64>,
    /// Bytes of every buffer the pool made and still holds (in use or free).
    bytes: u64,
}

impl Pool {
    /// A free buffer of `class`, or `None`. Uploads take only settled ones.
    fn take(&mut self, class: u64, settled_only: bool, now: u64) -> Option<wgpu::Buffer> {
        self.last_used.insert(class, now);
        let recent = (!settled_only)
            .then(|| self.recent.get_mut(&class).and_then(Vec::pop))
            .flatten();
        recent.or_else(|| self.settled.get_mut(&class).and_then(Vec::pop))
    }

    /// At a submission: recent buffers become settled; classes unused for `TRIM_AFTER_SUBMITS` submissions
    /// give their free buffers back.
    fn settle(&mut self, now: u64) {
        for (class, buffers) in self.recent.drain() {
            self.settled.entry(class).or_default().extend(buffers);
        }
        let last_used = &self.last_used;
        let mut freed = 0;
        self.settled.retain(|class, buffers| {
            let keep = last_used
                .get(class)
                .is_some_and(|&t| t + TRIM_AFTER_SUBMITS >= now);
            if !keep {
                // dropped, not destroyed: wgpu frees the memory once submitted work is done with it
                freed += class * buffers.len() as u64;
            }
            keep
        });
        self.bytes -= freed;
    }
}

/// Dispatches recorded but not yet submitted, and the parameter block each of them reads.
struct Pending {
    encoder: wgpu::CommandEncoder,
    params: Vec<u8>,
    count: usize,
    /// Timestamps around each pass, while profiling (`profiler.rs`).
    profiler: Option<Profiler>,
}

pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether the adapter has subgroup operations (`Features::SUBGROUP`, then requested on the device).
    pub subgroups: bool,
    /// Whether it can time compute passes (`Features::TIMESTAMP_QUERY`, then requested on the device).
    pub timestamps: bool,
    /// One storage buffer holding the parameter blocks of up to `MAX_PENDING` dispatches.
    param_arena: wgpu::Buffer,
    pending: Mutex<Pending>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    pool: Mutex<Pool>,
    /// The first device error (validation, out of memory, device lost), reported at the next read-back.
    error: Arc<Mutex<Option<String>>>,
    /// The op being recorded (kernel entry and grid), named in a device error raised while recording it.
    recording: Arc<Mutex<(&'static str, [u32; 3])>>,
    dispatches: AtomicU64,
    submits: AtomicU64,
    readbacks: AtomicU64,
    pool_misses: AtomicU64,
    uploads: AtomicU64,
}

const BUFFER_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Locks a mutex even if a thread panicked while holding it: the data behind these locks (caches, pools,
/// the pending encoder) stays valid across a panic in a kernel's caller.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The context, created once per process on first use.
pub fn global() -> Result<Arc<Context>, WgpuError> {
    static CONTEXT: OnceLock<Result<Arc<Context>, WgpuError>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| pollster::block_on(Context::new()).map(Arc::new))
        .clone()
}

/// The backends this build can use (no GL: it would silently replace a missing Vulkan driver).
fn backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

/// Preference among adapters: a real GPU first, a software rasteriser (lavapipe) last.
fn rank(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl Context {
    async fn new() -> Result<Self, WgpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends();
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .enumerate_adapters(backends())
            .await
            .into_iter()
            .min_by_key(|a| rank(a.get_info().device_type))
            .ok_or_else(|| WgpuError::NoAdapter {
                tried: format!("{:?}", backends()),
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut required_features = wgpu::Features::empty();
        required_features.set(wgpu::Features::SUBGROUP, subgroups);
        required_features.set(wgpu::Features::TIMESTAMP_QUERY, timestamps);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lowrank"),
                required_features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::default(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| WgpuError::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        let error = Arc::new(Mutex::new(None::<String>));
        let recording = Arc::new(Mutex::new(("(none)", [0; 3])));
        let (sink, op) = (error.clone(), recording.clone());
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let (entry, groups) = *lock(&op);
            lock(&sink).get_or_insert_with(|| {
                format!("{e} (the last op recorded: `{entry}` over {groups:?} workgroups)")
            });
        }));
        let sink = error.clone();
        device.set_device_lost_callback(move |reason, message| {
            lock(&sink).get_or_insert_with(|| format!("device lost ({reason:?}): {message}"));
        });
        let param_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel parameters"),
            size: PARAM_BYTES * MAX_PENDING as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let pending = Pending {
            encoder: device.create_command_encoder(&Default::default()),
            params: Vec::new(),
            count: 0,
            profiler: None,
        };
        Ok(Context {
            device,
            queue,
            info,
            limits,
            subgroups,
            timestamps,
            param_arena,
            pending: Mutex::new(pending),
            pipelines: Mutex::new(HashMap::new()),
            pool: Mutex::new(Pool::default()),
            error,
            recording,
            dispatches: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            readbacks: AtomicU64::new(0),
            pool_misses: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            readbacks: self.readbacks.load(Ordering::Relaxed),
            pool_misses: self.pool_misses.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            pool_bytes: lock(&self.pool).bytes,
            pipelines: lock(&self.pipelines).len() as u64,
        }
    }

    // ---- buffers --------------------------------------------------------------------------------------------

    /// The largest buffer a kernel may bind, in bytes.
    fn max_buffer_bytes(&self) -> u64 {
        self.limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size)
    }

    /// The most f32 values one storage may hold (its size class must fit `max_buffer_bytes`).
    pub fn max_len(&self) -> usize {
        // The largest power of two of bytes that fits.
        let bytes = 1u64 << (63 - self.max_buffer_bytes().leading_zeros());
        (bytes / 4) as usize
    }

    /// The pool's size class for `len` f32 values: the next power of two of bytes, at least 256.
    fn size_class(&self, len: usize, what: &str) -> u64 {
        let bytes = (len as u64 * 4).max(PARAM_BYTES).next_power_of_two();
        if bytes > self.max_buffer_bytes() {
            panic!(
                "wgpu: {what} of {len} f32 values is over this device's limit of {} values per buffer ({})",
                self.max_len(),
                self.info.name
            );
        }
        bytes
    }

    fn submissions(&self) -> u64 {
        self.submits.load(Ordering::Relaxed)
    }

    /// A new buffer of `class` bytes, counted in the pool's bytes.
    fn create(&self, class: u64, mapped_at_creation: bool) -> wgpu::Buffer {
        lock(&self.pool).bytes += class;
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: BUFFER_USAGE,
            mapped_at_creation,
        })
    }

    /// A buffer for at least `len` f32 values: a pooled one of the same size class, or a new one. Its
    /// contents are undefined: kernels write every element they own.
    pub fn alloc(&self, len: usize) -> wgpu::Buffer {
        let class = self.size_class(len, "a tensor");
        if let Some(buffer) = lock(&self.pool).take(class, false, self.submissions()) {
            return buffer;
        }
        self.pool_misses.fetch_add(1, Ordering::Relaxed);
        self.create(class, false)
    }

    /// A buffer holding `data`: a settled pooled one written with `queue.write_buffer`, or a new one mapped
    /// at creation (see the ordering rule in the module doc).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let class = self.size_class(bytes.len().div_ceil(4), "an upload");
        self.uploads.fetch_add(1, Ordering::Relaxed);
        let pooled = lock(&self.pool).take(class, true, self.submissions());
        if let Some(buffer) = pooled {
            // write_buffer takes whole 4-byte words: only a ragged byte array is copied to pad it
            if bytes.len().is_multiple_of(4) {
                self.queue.write_buffer(&buffer, 0, bytes);
            } else {
                let mut words = bytes.to_vec();
                words.resize(bytes.len().next_multiple_of(4), 0);
                self.queue.write_buffer(&buffer, 0, &words);
            }
            return buffer;
        }
        let buffer = self.create(class, true);
        if !bytes.is_empty() {
            buffer
                .slice(..bytes.len() as u64)
                .get_mapped_range_mut()
                .expect("a buffer mapped at creation")
                .copy_from_slice(bytes);
        }
        buffer.unmap();
        buffer
    }

    /// Returns a buffer to the pool, as a recent one: commands already recorded that read it still see its
    /// old contents, since whatever reuses it before the next submission writes through later commands.
    pub fn recycle(&self, buffer: wgpu::Buffer) {
        lock(&self.pool)
            .recent
            .entry(buffer.size())
            .or_default()
            .push(buffer);
    }

    // ---- dispatch -------------------------------------------------------------------------------------------

    fn pipeline(&self, kernel: &Kernel, subs: &[(&str, &str)]) -> Arc<wgpu::ComputePipeline> {
        // a file compiled with two preludes (matmul.wgsl's B) is two pipelines
        let key = format!(
            "{}:{:p}:{}:{:?}:{subs:?}",
            kernel.file, kernel.prelude, kernel.entry, kernel.lanes
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return p.clone();
        }
        let body = subs
            .iter()
            .fold(kernel.source.to_string(), |src, (from, to)| {
                src.replace(from, to)
            });
        // naga takes the subgroup functions without WGSL's `enable subgroups;` (which it rejects as not
        // yet implemented) once the device has `Features::SUBGROUP`
        let lanes = match kernel.lanes {
            Lanes::Workgroup => include_str!("kernels/lanes.wgsl"),
            Lanes::Subgroup => include_str!("kernels/lanes_subgroup.wgsl"),
        };
        let source = format!(
            "{}\n{lanes}\n{}\n{body}",
            include_str!("kernels/common.wgsl"),
            kernel.prelude
        );
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.file),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        lock(&self.pipelines).insert(key, pipeline.clone());
        pipeline
    }

    /// Records one dispatch of `kernel` over `groups` workgroups. `subs` replaces placeholders such as
    /// `{{OP}}` in the source (each distinct source is its own cached pipeline). Binding 0 is the parameter
    /// block; `buffers` gives the other bindings the entry point uses, by number.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        subs: &[(&str, &str)],
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) {
        assert!(
            params.len() as u64 * 4 <= PARAM_BYTES,
            "{}: too many parameters",
            kernel.entry
        );
        if groups.contains(&0) {
            return;
        }
        *lock(&self.recording) = (kernel.entry, groups);
        let pipeline = self.pipeline(kernel, subs);
        let mut pending = lock(&self.pending);
        if pending.count == MAX_PENDING {
            self.submit(&mut pending);
        }
        let slot = pending.count as u64 * PARAM_BYTES;
        pending
            .params
            .extend_from_slice(bytemuck::cast_slice(params));
        pending.params.resize((slot + PARAM_BYTES) as usize, 0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_arena,
                offset: slot,
                size: wgpu::BufferSize::new(PARAM_BYTES),
            }),
        }];
        entries.extend(buffers.iter().map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        }));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        {
            let Pending {
                encoder, profiler, ..
            } = &mut *pending;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry),
                timestamp_writes: profiler.as_mut().map(|p| p.pass(kernel)),
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        pending.count += 1;
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the parameter blocks and submits the recorded commands (does not wait for them, unless
    /// profiling).
    fn submit(&self, pending: &mut Pending) {
        let mut encoder = std::mem::replace(
            &mut pending.encoder,
            self.device.create_command_encoder(&Default::default()),
        );
        if pending.count > 0 {
            self.queue
                .write_buffer(&self.param_arena, 0, &pending.params);
        }
        if let Some(p) = &pending.profiler {
            p.resolve(&mut encoder);
        }
        self.queue.submit([encoder.finish()]);
        pending.params.clear();
        pending.count = 0;
        let now = self.submits.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.pool).settle(now);
        if let Some(p) = &mut pending.profiler {
            if let Err(e) = p.collect(&self.device) {
                lock(&self.error).get_or_insert(e);
            }
        }
    }

    /// Starts timing each dispatch on the GPU (see `profiler.rs`); false when the adapter cannot.
    pub fn start_profiling(&self) -> bool {
        if !self.timestamps {
            return false;
        }
        let mut pending = lock(&self.pending);
        self.submit(&mut pending); // the commands recorded before are not timed
        pending.profiler = Some(Profiler::new(&self.device, &self.queue, MAX_PENDING));
        true
    }

    /// Waits for everything recorded, stops timing and returns each kernel's GPU time since
    /// `start_profiling`, longest first (empty when it was not started).
    pub fn stop_profiling(&self) -> Vec<KernelTime> {
        let mut pending = lock(&self.pending);
        self.submit(&mut pending);
        pending
            .profiler
            .take()
            .map_or_else(Vec::new, |p| p.totals())
    }

    /// The first error the device reported, if any: a kernel or an allocation failed earlier. It stays: the
    /// device's state is unknown after it, so every later read fails too.
    fn check_error(&self) -> Result<(), String> {
        match lock(&self.error).clone() {
            Some(e) => Err(format!("the device reported an error: {e}")),
            None => Ok(()),
        }
    }

    /// Copies `bytes` bytes from the start of `buffer` to the host, after everything recorded so far: the
    /// one place the host waits for the GPU, and where a failure of the device surfaces.
    pub fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, String> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut pending = lock(&self.pending);
            if bytes > 0 {
                pending
                    .encoder
                    .copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
            }
            self.submit(&mut pending);
        }
        self.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_error()?;
        polled.map_err(|e| format!("waiting for the device failed: {e}"))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            _ => return Err("reading a buffer back failed".into()),
        }
        let mut data = staging
            .get_mapped_range(..)
            .map_err(|e| format!("mapping the read-back buffer failed: {e}"))?
            .to_vec();
        staging.unmap();
        data.truncate(bytes as usize);
        Ok(data)
    }
}
