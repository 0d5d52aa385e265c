//! The GPU context: adapter, device, queue, limits, and the pipeline cache.
//!
//! [`Gpu::new`] picks an adapter and makes a device for the simple case;
//! [`Gpu::from_device_queue`] wraps a device a host application already owns,
//! so gpuprep's work shares the host's buffers and command encoders.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::ArrayView2;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::shaders::{Shader, Slot};

/// How long a readback ([`Gpu::read_bytes`] and everything that downloads) or
/// a [`Gpu::wait`] waits for the GPU before it gives up with
/// [`Error::Timeout`]. The bound covers the whole call: the submit of the
/// readback's copy (which a driver may block behind a long-running kernel;
/// lavapipe does, inside `vkQueueSubmit`), the device poll and the mapping
/// all run on a worker thread that the call waits for at most this long. A
/// call that times out leaves that thread to finish when the GPU does.
pub const DEFAULT_READBACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Readback staging buffers a context keeps for reuse, at most.
const STAGING_POOL_MAX: usize = 8;

/// The largest readback staging buffer a context keeps for reuse (bytes).
const STAGING_POOL_MAX_BYTES: u64 = 16 << 20;

/// A pipeline: the shader, its entry point, and the bits of each `override`.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

/// Uniform buffers kept by content (never written after creation, so any
/// number of recorded dispatches may share one); cleared when it grows past this.
const UNIFORM_CACHE_MAX: usize = 4096;

/// Each context's identity (wgpu's own ids repeat across instances).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One binding of a dispatch: the shader's slot and what it binds.
pub(crate) type Bind<'a> = (Slot, &'a Span);

/// A GPU context: everything gpuprep needs to run work on one device.
///
/// Cheap to share by reference; the pipeline cache is behind a mutex, so one
/// context can serve several threads.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: Option<wgpu::AdapterInfo>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    uniforms: Mutex<HashMap<Vec<u8>, Span>>,
    scratch: Mutex<HashMap<(&'static str, u64), wgpu::Buffer>>,
    /// Readback staging buffers not in use, by size class (a buffer is taken
    /// out while mapped, so concurrent readbacks never share one).
    staging: Mutex<Vec<wgpu::Buffer>>,
    lost: Arc<Lost>,
    id: u64,
    readback_timeout: Duration,
    max_block_bytes: Option<u64>,
    max_piece_bytes: Option<u64>,
    /// Whether kernels may use subgroup operations where the device has them.
    subgroups: AtomicBool,
    /// See [`Gpu::loop_limit`].
    loop_limit: Option<u64>,
}

/// The loop iterations one invocation of a shader may run, all its loops
/// together, on Mesa's CPU adapters (llvmpipe, lavapipe): gallivm's
/// `LP_MAX_TGSI_LOOP_ITERATIONS`, one counter per invocation shared by every
/// loop, after which every loop exits early without an error.
pub const SOFTWARE_LOOP_LIMIT: u64 = 65_535;

/// Set by wgpu's device-lost callback.
#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    reason: Mutex<String>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_name())
            .field("backend", &self.info.as_ref().map(|i| i.backend))
            .finish()
    }
}

/// The optional features gpuprep uses when an adapter has them (it never
/// requires any of them).
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

fn instance() -> wgpu::Instance {
    // Honours WGPU_BACKEND, WGPU_VALIDATION, WGPU_DEBUG and friends.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu can see on this machine (honours `WGPU_BACKEND`).
pub fn enumerate_adapters() -> Vec<wgpu::AdapterInfo> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

/// Every adapter wgpu can see, with the cooperative-matrix configurations
/// (wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX`: tensor cores on NVIDIA) each
/// offers; gpuprep uses none of them yet, `gpuprep info` reports them.
pub fn cooperative_matrix_configs() -> Vec<(wgpu::AdapterInfo, Vec<wgpu::CooperativeMatrixProperties>)> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| (a.get_info(), a.cooperative_matrix_properties()))
        .collect()
}

async fn pick_adapter(inst: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted_lc = wanted.to_lowercase();
        let adapters = inst.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lc))
            .ok_or_else(|| Error::NoAdapter {
                detail: format!(
                    " matching WGPU_ADAPTER_NAME={wanted:?} (adapters seen: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            });
    }
    let power_preference =
        wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    inst.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference,
        force_fallback_adapter: false,
        compatible_surface: None,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::NoAdapter {
        detail: format!(" ({e})"),
    })
}

impl Gpu {
    /// Picks a high-performance adapter and creates a device on it, blocking.
    ///
    /// Honours wgpu's environment variables (`WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`). Requests the adapter's own
    /// limits (so a 2 GiB storage binding works where the card allows it) and
    /// the optional features in [`wanted_features`] that it has.
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when wgpu finds no adapter (or none whose name
    /// contains `WGPU_ADAPTER_NAME`); [`Error::RequestDevice`] when the adapter
    /// refuses to create the device.
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    /// The async twin of [`Gpu::new`].
    ///
    /// # Errors
    /// As [`Gpu::new`].
    pub async fn new_async() -> Result<Gpu> {
        let inst = instance();
        let adapter = pick_adapter(&inst).await?;
        let info = adapter.get_info();
        let features = adapter.features() & wanted_features();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gpuprep"),
                required_features: features,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|source| Error::RequestDevice {
                adapter: info.name.clone(),
                source,
            })?;
        let mut gpu = Gpu::from_device_queue(device, queue);
        gpu.info = Some(info);
        Ok(gpu)
    }

    /// Wraps a device and queue that a host application owns. Everything
    /// gpuprep does then runs on the host's device, with the host's limits
    /// and features; gpuprep never requires an optional feature.
    ///
    /// It installs a device-lost callback (wgpu keeps one per device), so that
    /// every call after a loss returns [`Error::DeviceLost`]; a host that needs
    /// a callback of its own can install it afterwards and call
    /// [`Gpu::mark_lost`] from it.
    pub fn from_device_queue(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        let lost = Arc::new(Lost::default());
        let seen = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            seen.set(format!("{reason:?}: {message}"));
        });
        // Every CPU adapter is held to Mesa's limit: the only one known
        // (lavapipe), and a bound that costs a software adapter little.
        let loop_limit =
            (device.adapter_info().device_type == wgpu::DeviceType::Cpu).then_some(SOFTWARE_LOOP_LIMIT);
        Gpu {
            info: None,
            loop_limit,
            device,
            queue,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            uniforms: Mutex::new(HashMap::new()),
            scratch: Mutex::new(HashMap::new()),
            staging: Mutex::new(Vec::new()),
            lost,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            readback_timeout: DEFAULT_READBACK_TIMEOUT,
            max_block_bytes: None,
            max_piece_bytes: None,
            subgroups: AtomicBool::new(true),
        }
    }

    /// This context's identity: the matrices it makes carry it, and every op
    /// refuses a matrix made by another context (even on the same device:
    /// share one context, e.g. as [`SharedGpu`], instead of wrapping a device twice).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Refuses a lost device, and a `what` (a matrix, a stream) made by
    /// another context: `owner` is the [`Gpu::id`] of the one that made it.
    pub(crate) fn check_owner(&self, owner: u64, op: &'static str, what: &str) -> Result<()> {
        self.check_alive()?;
        if owner != self.id {
            return Err(Error::invalid(
                op,
                format!("the {what} was made by another Gpu context (share one context per device)"),
            ));
        }
        Ok(())
    }

    /// Records that the device is lost: every later call returns
    /// [`Error::DeviceLost`] with `reason` (for a host's own device-lost callback).
    pub fn mark_lost(&self, reason: &str) {
        self.lost.set(reason.to_string());
    }

    /// `Err(DeviceLost)` once the device is lost or destroyed.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.lost.flag.load(Ordering::Acquire) {
            let reason = self.lost.reason.lock().map(|r| r.clone()).unwrap_or_default();
            return Err(Error::DeviceLost(reason));
        }
        Ok(())
    }

    /// Caps the bytes of one row block of the matrices this context makes
    /// (below the device's `max_buffer_size`): matrices larger than that are
    /// held as several buffers. For tests of the multi-buffer paths on small data.
    pub fn with_max_block_bytes(mut self, bytes: u64) -> Gpu {
        self.max_block_bytes = Some(bytes.max(4));
        self
    }

    /// Caps the bytes of one piece an op binds (below the device's storage
    /// binding limit): ops then split any matrix into more, smaller row
    /// ranges. For tests of the split paths on small data (a piece smaller
    /// than the offset alignment is staged through a scratch copy).
    pub fn with_max_piece_bytes(mut self, bytes: u64) -> Gpu {
        self.max_piece_bytes = Some(bytes.max(4));
        self
    }

    /// Keeps every kernel on its workgroup-memory path even where the device
    /// has wgpu's `SUBGROUP` feature (for tests of both paths, and to measure
    /// what subgroups give).
    pub fn without_subgroups(self) -> Gpu {
        self.set_subgroups(false);
        self
    }

    /// Allows (the default) or forbids kernels' subgroup paths from now on,
    /// as [`Gpu::without_subgroups`] does, on a shared context.
    pub fn set_subgroups(&self, allowed: bool) {
        self.subgroups.store(allowed, Ordering::Relaxed);
    }

    /// The device's subgroup sizes `(min, max)` when kernels may use
    /// subgroup operations (the device has wgpu's `SUBGROUP` feature and
    /// [`Gpu::without_subgroups`] was not called), else `None`.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        if !self.subgroups.load(Ordering::Relaxed)
            || !self.device.features().contains(wgpu::Features::SUBGROUP)
        {
            return None;
        }
        let i = self.adapter_info();
        (i.subgroup_min_size >= 1 && i.subgroup_max_size >= i.subgroup_min_size)
            .then_some((i.subgroup_min_size, i.subgroup_max_size))
    }

    /// Sets how long a readback or a wait waits for the GPU before
    /// [`Error::Timeout`] (see [`DEFAULT_READBACK_TIMEOUT`] for what it bounds).
    pub fn with_readback_timeout(mut self, timeout: Duration) -> Gpu {
        self.readback_timeout = timeout;
        self
    }

    /// The device all work runs on.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue all work is submitted to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description, when this context picked the adapter
    /// itself (a context made by [`Gpu::from_device_queue`] asks the device).
    pub fn adapter_info(&self) -> wgpu::AdapterInfo {
        self.info.clone().unwrap_or_else(|| self.device.adapter_info())
    }

    /// The loop iterations one invocation may run in all its loops together
    /// before the driver silently ends them ([`SOFTWARE_LOOP_LIMIT`] on a CPU
    /// adapter), or `None` where no such limit is known (GPUs). Launchers
    /// size each invocation's work below it.
    pub fn loop_limit(&self) -> Option<u64> {
        self.loop_limit
    }

    /// Refuses a launch each of whose invocations would run `needed` loop
    /// iterations, where that passes `budget` of the adapter's loop limit
    /// ([`Gpu::loop_limit`]: half of it where a count may be short, nearly
    /// all where it is exact); nothing where there is no limit. For inputs a
    /// launcher cannot cut into shorter invocations.
    pub(crate) fn check_loop_iterations(
        &self,
        op: &'static str,
        needed: u64,
        budget: fn(u64) -> u64,
    ) -> Result<()> {
        match self.loop_limit {
            Some(limit) if needed > budget(limit) => Err(Error::ExceedsLimit {
                op,
                what: "loop iterations per invocation on this adapter (its loop limit ends longer loops silently)",
                needed,
                limit: budget(limit),
            }),
            _ => Ok(()),
        }
    }

    /// This context with its launchers held to `limit` loop iterations per
    /// invocation (`None`: no limit): for an adapter with a limit gpuprep does
    /// not detect, and for tests, where a small limit sends small shapes
    /// down the paths that very large ones take on lavapipe.
    pub fn with_loop_limit(mut self, limit: Option<u64>) -> Gpu {
        self.loop_limit = limit;
        self
    }

    /// The adapter's name.
    pub fn adapter_name(&self) -> String {
        self.adapter_info().name
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// The device's enabled features.
    pub fn features(&self) -> wgpu::Features {
        self.device.features()
    }

    /// Largest storage buffer binding, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let l = self.device.limits();
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }

    /// Largest buffer this context allocates for one row block, in bytes.
    pub(crate) fn max_block_bytes(&self) -> u64 {
        let cap = self.device.limits().max_buffer_size;
        self.max_block_bytes.map_or(cap, |b| b.min(cap))
    }

    /// Largest piece an op binds, in bytes.
    pub(crate) fn max_piece_bytes(&self) -> u64 {
        // Kernels index a binding with u32 elements.
        let cap = self.max_binding_bytes().min(u64::from(u32::MAX) / 4 * 4);
        self.max_piece_bytes.map_or(cap, |b| b.min(cap))
    }

    /// The storage-offset alignment in bytes.
    fn offset_alignment(&self) -> u64 {
        u64::from(self.device.limits().min_storage_buffer_offset_alignment).max(4)
    }

    /// Whether a binding may start at byte `offset`.
    pub(crate) fn offset_ok(&self, offset: u64) -> bool {
        offset.is_multiple_of(self.offset_alignment())
    }

    /// The smallest row count whose byte length (rows of `cols` f32) is a
    /// multiple of the storage-offset alignment.
    pub(crate) fn align_rows(&self, cols: usize) -> usize {
        let a = self.offset_alignment() as usize;
        let row = (cols * 4).max(1);
        let mut g = a;
        let mut b = row % a;
        while b != 0 {
            (g, b) = (b, g % b);
        }
        a / g
    }

    /// Rows of `cols` f32 in one row block (a multiple of the alignment when
    /// more than that fits).
    pub(crate) fn block_rows(&self, cols: usize) -> usize {
        let fit = (self.max_block_bytes() / (cols as u64 * 4).max(1)).max(1) as usize;
        let align = self.align_rows(cols);
        if fit >= align {
            fit / align * align
        } else {
            fit
        }
    }

    /// Rows of `cols` f32 in one piece an op binds.
    pub(crate) fn piece_rows(&self, cols: usize) -> usize {
        (self.max_piece_bytes() / (cols as u64 * 4).max(1)).max(1) as usize
    }

    /// Checks that a storage binding of `bytes` fits the device.
    pub(crate) fn check_binding(&self, op: &'static str, bytes: u64) -> Result<()> {
        Error::check_limit(
            op,
            "storage buffer binding size in bytes",
            bytes,
            self.max_binding_bytes(),
        )
    }

    /// Checks a dispatch size against the device's per-dimension limit.
    pub(crate) fn check_workgroups(&self, op: &'static str, groups: [u32; 3]) -> Result<()> {
        let limit = self.device.limits().max_compute_workgroups_per_dimension;
        for g in groups {
            Error::check_limit(op, "workgroups per dispatch dimension", g as u64, limit as u64)?;
        }
        Ok(())
    }

    /// `Err` naming `op` unless `buffer` has `usage`.
    pub(crate) fn require_usage(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        usage: wgpu::BufferUsages,
    ) -> Result<()> {
        if !buffer.usage().contains(usage) {
            return Err(Error::invalid(
                op,
                format!("a buffer with usage {:?} lacks {usage:?}", buffer.usage()),
            ));
        }
        Ok(())
    }

    /// A compute pipeline for `entry` in `shader` with the given `override`
    /// constants, built once per context and cached.
    pub(crate) fn pipeline(
        &self,
        shader: &'static Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = PipelineKey {
            shader: shader.name,
            entry,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        if let Some(p) = self.pipelines.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(shader)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: shader.name,
                message: format!("pipeline {entry}: {e}"),
            });
        }
        self.pipelines
            .lock()
            .map_err(poisoned)?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn module(&self, shader: &'static Shader) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().map_err(poisoned)?;
        if let Some(m) = modules.get(shader.name) {
            return Ok(m.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(shader.source)),
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: shader.name,
                message: format!("shader module: {e}"),
            });
        }
        modules.insert(shader.name, module.clone());
        Ok(module)
    }

    /// A storage buffer of `bytes` bytes (checked against the device's largest
    /// buffer), usable as a copy source and destination.
    pub(crate) fn storage_buffer(&self, op: &'static str, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let limit = self.device.limits().max_buffer_size;
        Error::check_limit(op, "buffer size in bytes", bytes, limit)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op,
                message: format!("allocating {bytes} bytes: {e}"),
            });
        }
        Ok(buffer)
    }

    /// A scratch storage buffer of at least `bytes` for the use `tag` (one tag
    /// per distinct use within an op: two buffers an op needs at once have
    /// different tags), from a pool keyed by tag and power-of-two size class:
    /// allocated on first use, then shared by every later call. Sharing is
    /// safe because the work a call records uses its scratch from one pass to
    /// the next of that call, and wgpu orders passes that write a buffer.
    pub(crate) fn scratch(&self, tag: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_binding(tag, bytes)?;
        let class = bytes
            .max(256)
            .next_power_of_two()
            .min(self.max_binding_bytes().max(bytes));
        let key = (tag, class);
        if let Some(b) = self.scratch.lock().map_err(poisoned)?.get(&key) {
            return Ok(b.clone());
        }
        let b = self.storage_buffer(tag, class, tag)?;
        self.scratch.lock().map_err(poisoned)?.insert(key, b.clone());
        Ok(b)
    }

    /// `span` when it can be bound as an `array<vec4<f32>>` (at least 16
    /// bytes), else a 16-byte placeholder: for a kernel's vec4 view of a
    /// matrix that it reads only when the shape allows, which a span of fewer
    /// than 4 elements never does.
    pub(crate) fn vec4_span(&self, span: &Span) -> Result<Span> {
        if span.size >= 16 {
            Ok(span.clone())
        } else {
            Ok(Span::whole(&self.scratch("vec4 placeholder", 16)?))
        }
    }

    /// A uniform buffer holding `value`, shared with every other use of the
    /// same bytes (uniforms are never rewritten, so sharing is safe; a loop
    /// over equal shapes allocates none).
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> Result<Span> {
        self.check_alive()?;
        let bytes = bytemuck::bytes_of(value).to_vec();
        let mut cache = self.uniforms.lock().map_err(poisoned)?;
        if let Some(s) = cache.get(&bytes) {
            return Ok(s.clone());
        }
        if cache.len() >= UNIFORM_CACHE_MAX {
            cache.clear();
        }
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let span = Span::whole(&buffer);
        cache.insert(bytes, span.clone());
        Ok(span)
    }

    /// Records one dispatch of `entry` in `shader` into `encoder`: the cached
    /// pipeline (built with `constants` on first use), a bind group of
    /// `binds` (created inside an error scope, so a bad binding is an `Err`,
    /// not wgpu's panicking default handler), and one compute pass. A grid
    /// with a zero dimension records nothing.
    pub(crate) fn launch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shader: &'static Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        binds: &[Bind],
        groups: [u32; 3],
    ) -> Result<()> {
        self.check_alive()?;
        if groups.contains(&0) {
            return Ok(());
        }
        self.check_workgroups(shader.name, groups)?;
        let pipeline = self.pipeline(shader, entry, constants)?;
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = binds
            .iter()
            .map(|(slot, span)| wgpu::BindGroupEntry {
                binding: slot.binding,
                resource: span.resource(),
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: shader.name,
                message: format!("bind group for {entry}: {e}"),
            });
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    /// A fresh command encoder on this device.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Records `record` into a fresh encoder and submits it: the one helper
    /// behind every op's convenience form (`ops::column_stats` is
    /// `gpu.run(.., |e| ops::encode_column_stats_into(gpu, e, ..))`). Waits for nothing.
    ///
    /// # Errors
    /// [`Error::DeviceLost`] for a lost device; `record`'s errors; [`Error::Gpu`]
    /// for a validation error at the submit.
    pub fn run<T>(
        &self,
        op: &'static str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<T> {
        self.check_alive()?;
        let mut encoder = self.encoder(op);
        let out = record(&mut encoder)?;
        self.submit(op, encoder)?;
        Ok(out)
    }

    /// Finishes `encoder` and submits it, turning validation errors into
    /// [`Error::Gpu`]. Waits for nothing, but is not bounded by the readback
    /// timeout: a driver may block a submit behind work already queued
    /// (lavapipe does, behind a long-running kernel).
    ///
    /// # Errors
    /// [`Error::DeviceLost`] for a lost device; [`Error::Gpu`] for a validation
    /// error in the recorded commands.
    pub fn submit(&self, op: &'static str, encoder: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let index = self.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op,
                message: e.to_string(),
            });
        }
        Ok(index)
    }

    /// Blocks until all submitted work is done, at most the readback timeout
    /// ([`Error::Timeout`]; the poll runs on a worker thread, so a driver that
    /// blocks inside it cannot hold the call longer).
    ///
    /// A context that is dropped waits for its work (wgpu's queue does), but
    /// one kept in a `static` never is: wait before the process exits with
    /// work in flight, or a CPU adapter may crash in its teardown (lavapipe's
    /// worker thread still runs JIT code while the exit frees LLVM's globals:
    /// SIGSEGV or "free(): invalid pointer").
    ///
    /// # Errors
    /// [`Error::DeviceLost`] for a device lost before or during the wait, or a
    /// failed poll; [`Error::Timeout`] past the readback timeout.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        let device = self.device.clone();
        let timeout = self.readback_timeout;
        self.bounded("wait", move || poll_wait(&device, "wait", None, timeout))?;
        self.check_alive()
    }

    /// Runs `work` on a worker thread and waits for its result at most the
    /// readback timeout: the one bound on everything that waits for the GPU.
    fn bounded<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("gpuprep {op}"))
            .spawn(move || {
                let _ = tx.send(work());
            })
            .map_err(|e| Error::DeviceLost(format!("{op}: cannot start a wait thread: {e}")))?;
        match rx.recv_timeout(self.readback_timeout) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout {
                op,
                seconds: self.readback_timeout.as_secs_f64(),
            }),
            // The worker panicked inside wgpu: an error here, not a panic.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::DeviceLost(format!("{op}: the wait thread failed")))
            }
        }
    }

    /// Writes the rows of `x` (any layout) to `buffer` at byte `offset`
    /// (through `Queue::write_buffer`, in bounded pieces so a large matrix
    /// needs no second full-size host copy).
    pub(crate) fn write_rows(&self, buffer: &wgpu::Buffer, offset: u64, x: ArrayView2<f32>) -> Result<()> {
        self.check_alive()?;
        self.require_usage("upload", buffer, wgpu::BufferUsages::COPY_DST)?;
        let (rows, cols) = x.dim();
        if rows * cols == 0 {
            return Ok(());
        }
        let bytes = (rows * cols * 4) as u64;
        if offset.checked_add(bytes).is_none_or(|e| e > buffer.size()) {
            return Err(Error::invalid("upload", "rows past the end of the buffer"));
        }
        if let Some(s) = x.as_slice() {
            self.queue.write_buffer(buffer, offset, bytemuck::cast_slice(s));
            return Ok(());
        }
        let chunk_rows = ((16 << 20) / (cols * 4)).max(1);
        let mut at = offset;
        for part in x.axis_chunks_iter(ndarray::Axis(0), chunk_rows) {
            let owned: Vec<f32> = part.iter().copied().collect();
            self.queue.write_buffer(buffer, at, bytemuck::cast_slice(&owned));
            at += (owned.len() * 4) as u64;
        }
        Ok(())
    }

    /// Writes `bytes` bytes of `value` (f32) to `buffer` at byte `offset`.
    pub(crate) fn write_value(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
        value: f32,
    ) -> Result<()> {
        self.check_alive()?;
        self.require_usage("fill", buffer, wgpu::BufferUsages::COPY_DST)?;
        if offset.checked_add(bytes).is_none_or(|e| e > buffer.size()) {
            return Err(Error::invalid("fill", "bytes past the end of the buffer"));
        }
        const CHUNK: u64 = 4 << 20;
        let v = vec![value; (bytes.min(CHUNK) / 4) as usize];
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(CHUNK);
            self.queue
                .write_buffer(buffer, offset + at, bytemuck::cast_slice(&v[..(n / 4) as usize]));
            at += n;
        }
        Ok(())
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host: the one
    /// readback path every op uses (see [`Gpu::run_and_read`]).
    /// The buffer needs `COPY_SRC`; the range must be in bounds and 4-byte aligned.
    ///
    /// # Errors
    /// As [`Gpu::run_and_read`].
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            self.check_alive()?;
            return Ok(Vec::new());
        }
        self.run_and_read("readback", |_| Ok(()), buffer, offset, size)
    }

    /// Records `record` and the copy of `size` bytes at `offset` of `buffer`
    /// into a pooled staging buffer in one encoder, submits once, and returns
    /// the bytes: a small op and its readback in one submit (the round trip
    /// of [`crate::ops::column_summary`]). The submit, the poll and the
    /// mapping run on a worker thread that the call waits for at most the
    /// readback timeout ([`Error::Timeout`]; see [`DEFAULT_READBACK_TIMEOUT`]).
    /// The buffer needs `COPY_SRC`; the range must be in bounds and 4-byte
    /// aligned.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range out of bounds or not 4-byte aligned,
    /// or a buffer without `COPY_SRC`; `record`'s errors; [`Error::Gpu`] for a
    /// validation error; [`Error::Timeout`] past the readback timeout;
    /// [`Error::DeviceLost`] for a lost device or a mapping that failed.
    pub fn run_and_read(
        &self,
        op: &'static str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        self.check_alive()?;
        let end = offset.checked_add(size);
        if !offset.is_multiple_of(4) || !size.is_multiple_of(4) || end.is_none_or(|e| e > buffer.size()) {
            return Err(Error::invalid(
                op,
                format!(
                    "{size} bytes at {offset} of a {} byte buffer (must be in bounds and 4-byte aligned)",
                    buffer.size()
                ),
            ));
        }
        self.require_usage(op, buffer, wgpu::BufferUsages::COPY_SRC)?;
        let mut encoder = self.encoder(op);
        record(&mut encoder)?;
        if size == 0 {
            self.submit(op, encoder)?;
            return Ok(Vec::new());
        }
        let staging = self.take_staging(size);
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let commands = encoder.finish();
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op,
                message: e.to_string(),
            });
        }
        let (device, queue) = (self.device.clone(), self.queue.clone());
        let timeout = self.readback_timeout;
        // Submit, poll and map on a worker: the timeout bounds all of it. A
        // staging buffer comes back to the pool only from a call that ended
        // (one left behind by a timeout is dropped when its worker ends).
        let (bytes, staging) = self.bounded(op, move || {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let index = queue.submit([commands]);
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Gpu {
                    op,
                    message: e.to_string(),
                });
            }
            let slice = staging.slice(..size);
            let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            poll_wait(&device, op, Some(index), timeout)?;
            // The submission is done, so the map callback has run (or runs on
            // this poll); the receive below cannot block.
            let _ = device.poll(wgpu::PollType::Poll);
            match pollster::block_on(rx.receive()) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(Error::DeviceLost(format!("mapping readback buffer: {e}"))),
                None => return Err(Error::DeviceLost("readback callback dropped".into())),
            }
            let bytes = slice
                .get_mapped_range()
                .map_err(|e| Error::DeviceLost(format!("mapped range: {e}")))?
                .to_vec();
            staging.unmap();
            Ok((bytes, staging))
        })?;
        self.check_alive()?;
        self.recycle_staging(staging);
        Ok(bytes)
    }

    /// A staging buffer of at least `size` bytes: the smallest free one of the
    /// pool that fits (its size class is `size` rounded up to a power of two),
    /// else a new one of that class.
    fn take_staging(&self, size: u64) -> wgpu::Buffer {
        let class = size.max(256).checked_next_power_of_two().unwrap_or(size);
        if let Ok(mut pool) = self.staging.lock() {
            if let Some(i) = (0..pool.len())
                .filter(|&i| pool[i].size() >= size)
                .min_by_key(|&i| pool[i].size())
            {
                return pool.swap_remove(i);
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpuprep readback"),
            size: class,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Returns a staging buffer to the pool: at most [`STAGING_POOL_MAX`]
    /// buffers, none over [`STAGING_POOL_MAX_BYTES`] (a large readback's
    /// buffer is freed, not kept).
    fn recycle_staging(&self, b: wgpu::Buffer) {
        if b.size() > STAGING_POOL_MAX_BYTES {
            return;
        }
        if let Ok(mut pool) = self.staging.lock() {
            if pool.len() >= STAGING_POOL_MAX {
                // Keep the larger ones: they serve more requests.
                if let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].size()) {
                    if pool[i].size() < b.size() {
                        pool[i] = b;
                    }
                }
            } else {
                pool.push(b);
            }
        }
    }

    /// Reads `len` f32 values starting at element `start` of `buffer`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `start` or `len` in bytes overflows `u64`;
    /// otherwise as [`Gpu::read_bytes`].
    pub fn read_f32(&self, buffer: &wgpu::Buffer, start: u64, len: u64) -> Result<Vec<f32>> {
        let (offset, size) = match (start.checked_mul(4), len.checked_mul(4)) {
            (Some(o), Some(s)) => (o, s),
            _ => return Err(Error::invalid("readback", "element range overflows")),
        };
        self.read_f32_bytes(buffer, offset, size)
    }

    /// Reads `size` bytes at byte `offset` of `buffer` as f32.
    pub(crate) fn read_f32_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, offset, size)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// Polls `device` until submission `index` (all work: `None`) is done, at
/// most `timeout` (wgpu's own bound on the poll).
fn poll_wait(
    device: &wgpu::Device,
    op: &'static str,
    index: Option<wgpu::SubmissionIndex>,
    timeout: Duration,
) -> Result<()> {
    match device.poll(wgpu::PollType::Wait {
        submission_index: index,
        timeout: Some(timeout),
    }) {
        Ok(_) => Ok(()),
        Err(wgpu::PollError::Timeout) => Err(Error::Timeout {
            op,
            seconds: timeout.as_secs_f64(),
        }),
        Err(e) => Err(Error::DeviceLost(e.to_string())),
    }
}

impl Lost {
    fn set(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
        self.flag.store(true, Ordering::Release);
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::DeviceLost("a gpuprep cache lock was poisoned by a panic on another thread".into())
}

/// Shares one [`Gpu`] between owners (for example a model object and the code
/// that trains it).
pub type SharedGpu = Arc<Gpu>;

/// A byte range of one buffer, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl Span {
    /// The whole of `buffer`.
    pub fn whole(buffer: &wgpu::Buffer) -> Span {
        Span {
            buffer: buffer.clone(),
            offset: 0,
            size: buffer.size(),
        }
    }

    /// The `wgpu` binding resource.
    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size.max(4)),
        })
    }
}
