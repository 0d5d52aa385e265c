//! The GPU context: adapter, device, queue, limits, and the pipeline cache.
//!
//! [`Gpu::new`] picks an adapter and makes a device for the simple case;
//! [`Gpu::from_device_queue`] wraps a device a host application already owns,
//! so gpuprep's work shares the host's buffers and command encoders.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::shaders::Shader;

/// How long a readback waits for the GPU before it gives up with
/// [`Error::Timeout`] (a wait never hangs forever).
pub const DEFAULT_READBACK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: String,
    constants: String,
}

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
    readback_timeout: Duration,
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
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    /// The async twin of [`Gpu::new`].
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
    pub fn from_device_queue(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        Gpu {
            info: None,
            device,
            queue,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            readback_timeout: DEFAULT_READBACK_TIMEOUT,
        }
    }

    /// Sets how long a readback waits for the GPU before [`Error::Timeout`].
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

    /// Checks that a storage binding of `bytes` fits the device.
    pub(crate) fn check_binding(&self, op: &'static str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::ExceedsLimit {
                op,
                what: "storage buffer binding size in bytes",
                needed: bytes,
                limit,
            });
        }
        Ok(())
    }

    /// Checks a dispatch size against the device's per-dimension limit.
    pub(crate) fn check_workgroups(&self, op: &'static str, groups: [u32; 3]) -> Result<()> {
        let limit = self.device.limits().max_compute_workgroups_per_dimension;
        for g in groups {
            if g > limit {
                return Err(Error::ExceedsLimit {
                    op,
                    what: "workgroups per dispatch dimension",
                    needed: g as u64,
                    limit: limit as u64,
                });
            }
        }
        Ok(())
    }

    /// A compute pipeline for `entry` in `shader` with the given `override`
    /// constants, built once per context and cached.
    pub(crate) fn pipeline(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = PipelineKey {
            shader: shader.name,
            entry: entry.to_string(),
            constants: format!("{constants:?}"),
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

    /// A storage buffer of `bytes` bytes (checked against the binding limit),
    /// usable as a copy source and destination.
    pub(crate) fn storage_buffer(&self, op: &'static str, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
        self.check_binding(op, bytes)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
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

    /// `buffer` itself when it can be bound as an `array<vec4<f32>>` (at least
    /// 16 bytes), else a 16-byte placeholder: for a kernel's vec4 view of a
    /// matrix that it reads only when the shape allows, which a buffer of
    /// fewer than 4 elements never does.
    pub(crate) fn vec4_view(&self, op: &'static str, buffer: &wgpu::Buffer) -> Result<wgpu::Buffer> {
        if buffer.size() >= 16 {
            Ok(buffer.clone())
        } else {
            self.storage_buffer(op, 16, "vec4 placeholder")
        }
    }

    /// A small uniform buffer holding `value`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// A bind group for group 0 of `pipeline` with `(binding, buffer)` pairs.
    pub(crate) fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        entries: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `entry` in `shader` into `encoder`: the cached
    /// pipeline (built with `constants` on first use), a bind group of
    /// `buffers` by binding number (created inside an error scope, so a bad
    /// binding is an `Err`, not wgpu's panicking default handler), and one
    /// compute pass. A grid with a zero dimension records nothing.
    pub(crate) fn launch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipeline(shader, entry, constants)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.bind(&pipeline, buffers);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: shader.name,
                message: format!("bind group for {entry}: {e}"),
            });
        }
        self.dispatch(encoder, entry, &pipeline, &bind_group, groups);
        Ok(())
    }

    /// Records one compute pass with one dispatch into `encoder`.
    pub(crate) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    /// A fresh command encoder on this device.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Finishes `encoder` and submits it, turning validation errors into
    /// [`Error::Gpu`].
    pub fn submit(&self, op: &'static str, encoder: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
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

    /// Blocks until all submitted work is done (or the timeout passes).
    pub fn wait(&self) -> Result<()> {
        self.poll_wait("wait", None)
    }

    fn poll_wait(&self, op: &'static str, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: Some(self.readback_timeout),
        }) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(Error::Timeout {
                op,
                seconds: self.readback_timeout.as_secs_f64(),
            }),
            Err(e) => Err(Error::DeviceLost(e.to_string())),
        }
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host: the one
    /// readback path every op uses (staging buffer, `map_async`, a
    /// futures-intrusive channel, a device poll bounded by the timeout).
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        if !offset.is_multiple_of(4) || !size.is_multiple_of(4) || offset + size > buffer.size() {
            return Err(Error::invalid(
                "readback",
                format!(
                    "range {offset}..{} of a {} byte buffer (must be in bounds and 4-byte aligned)",
                    offset + size,
                    buffer.size()
                ),
            ));
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpuprep readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.encoder("gpuprep readback");
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        let index = self.submit("readback", encoder)?;
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.poll_wait("readback", Some(index))?;
        // The submission is done, so the map callback has run (or runs on
        // this poll); the receive below cannot block.
        let _ = self.device.poll(wgpu::PollType::Poll);
        match pollster::block_on(rx.receive()) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::DeviceLost(format!("mapping readback buffer: {e}"))),
            None => return Err(Error::DeviceLost("readback callback dropped".into())),
        }
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::DeviceLost(format!("mapped range: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Reads `len` f32 values starting at element `start` of `buffer`.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, start: u64, len: u64) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, start * 4, len * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::DeviceLost("pipeline cache lock poisoned by a panic on another thread".into())
}

/// Shares one [`Gpu`] between owners (for example a model object and the code
/// that trains it).
pub type SharedGpu = Arc<Gpu>;
