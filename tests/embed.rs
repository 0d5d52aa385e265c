//! Embedding: the host owns the device, the queue, the input buffer and the
//! command encoder; gpuprep records into that encoder next to the host's own
//! copy, and the host submits once. And what the README promises a host: every
//! kernel family runs on a device made with no optional feature and WebGPU's
//! default limits (16 KiB of workgroup memory, 8 storage buffers per stage),
//! and `ndarray` is re-exported so the host names exactly gpuprep's version.

mod common;

use common::{max_rel, normal, small_memory_gpu};
use gpuprep::ndarray::{Array1, Array2};
use gpuprep::{
    cpu, host, ops, wgpu, Gpu, GpuMatrix, NComponents, NormKind, Pipeline, PipelineOptions,
    RunningStatsConfig, Whitening,
};
use wgpu::util::DeviceExt;

#[test]
fn records_into_the_hosts_encoder() {
    // The host's own device (not gpuprep's Gpu::new).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("no adapter: apt-get install -y mesa-vulkan-drivers");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();

    let (n, d) = (300usize, 17usize);
    let x = common::normal(n, d, 2.0, 3.0, 42);
    let host_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("host input"),
        contents: bytemuck::cast_slice(x.as_slice().unwrap()),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let host_readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host readback"),
        size: (5 * d * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let gpu = Gpu::from_device_queue(device.clone(), queue.clone());
    let xg = GpuMatrix::from_buffer(&gpu, host_buffer, n, d).unwrap();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("host") });
    let stats = common::record_stats(&gpu, &mut encoder, &xg, 0).unwrap();
    // The host's own work in the same encoder: copy our result into its buffer.
    encoder.copy_buffer_to_buffer(stats.buffer.buffer(), 0, &host_readback, 0, (5 * d * 4) as u64);
    queue.submit([encoder.finish()]);

    host_readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&host_readback.slice(..).get_mapped_range().unwrap());
    let want = cpu::column_stats(x.view(), 0).unwrap();
    for c in 0..d {
        assert!((got[c] as f64 - want.mean[c]).abs() < 1e-5 * (want.mean[c].abs() + want.std[c]));
        assert!((got[d + c] as f64 - want.var[c]).abs() < 1e-5 * want.var[c]);
    }

    // gpuprep's own readback works on the host's device too.
    let again = stats.download(&gpu).unwrap();
    assert_eq!(again.mean.len(), d);
}

#[test]
fn from_buffer_checks_usage_and_size() {
    let g = common::gpu();
    let b = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    assert!(GpuMatrix::from_buffer(g, b, 2, 2).is_err());
    let b = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert!(GpuMatrix::from_buffer(g, b.clone(), 2, 2).is_ok());
    assert!(GpuMatrix::from_buffer(g, b, 3, 2).is_err());
}

#[test]
fn every_family_runs_on_a_device_with_default_limits_and_no_features() {
    let gpu = small_memory_gpu();
    assert!(gpu.features().is_empty());
    assert_eq!(gpu.limits().max_storage_buffers_per_shader_stage, 8);
    let x = normal(777, 13, 100.0, 2.0, 31);
    let x64 = x.mapv(f64::from);
    let xg = GpuMatrix::upload(&gpu, x.view()).unwrap();

    // Column reductions.
    let stats = ops::column_stats(&gpu, &xg, &Default::default()).unwrap();
    let s = stats.download(&gpu).unwrap();
    let twin = cpu::column_stats(x64.view(), 0).unwrap();
    assert!(max_rel(s.mean.iter().copied(), twin.mean.iter().copied(), 1e-12) < 1e-6);
    assert!(max_rel(s.var.iter().copied(), twin.var.iter().copied(), 1e-12) < 1e-5);

    // Elementwise.
    let z = ops::standardize(&gpu, &xg, &stats, &Default::default())
        .unwrap()
        .download(&gpu)
        .unwrap();
    let zt = host::standardize(x64.view(), &twin, Default::default()).unwrap();
    assert!(max_rel(z.iter().map(|&v| f64::from(v)), zt.iter().copied(), 1.0) < 1e-4);

    // Products: the covariance, and a pipeline's fit and transform.
    let cov = ops::covariance(&gpu, &xg, &Default::default())
        .unwrap()
        .download(&gpu)
        .unwrap();
    let cov_t = cpu::covariance(x64.view(), 0).unwrap();
    assert!(max_rel(cov.iter().map(|&v| f64::from(v)), cov_t.iter().copied(), 1.0) < 1e-5);
    let o = PipelineOptions {
        pca: Some(NComponents::Count(5)),
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let m = Pipeline::fit_gpu(&gpu, &xg, &o).unwrap();
    let mh = Pipeline::fit(x64.view(), &o).unwrap();
    let y = common::gpu_transform(&gpu, &m, &xg);
    let yh = mh.transform(x64.view()).unwrap();
    // Up to each component's sign.
    for j in 0..5 {
        let (a, b) = (y.column(j).mapv(f64::from), yh.column(j).to_owned());
        let sign = if a.dot(&b) < 0.0 { -1.0 } else { 1.0 };
        assert!(
            max_rel(a.iter().map(|v| v * sign), b.iter().copied(), 1.0) < 1e-3,
            "component {j}"
        );
    }

    // Row and column normalizations.
    let gamma = Array1::<f32>::from_shape_fn(13, |i| 1.0 + 0.1 * i as f32);
    let beta = Array1::<f32>::from_shape_fn(13, |i| 0.01 * i as f32);
    let (gg, bg) = (
        GpuMatrix::upload(&gpu, gamma.view().insert_axis(gpuprep::ndarray::Axis(0))).unwrap(),
        GpuMatrix::upload(&gpu, beta.view().insert_axis(gpuprep::ndarray::Axis(0))).unwrap(),
    );
    let ln = ops::Norm::new(NormKind::Layer, 13)
        .forward(&gpu, &xg, &gg, &bg)
        .unwrap();
    let ln = ln.y.download(&gpu).unwrap();
    let lt = cpu::norm::norm_forward(
        NormKind::Layer,
        x64.view().into_dyn(),
        gamma.mapv(f64::from).view(),
        beta.mapv(f64::from).view(),
        1e-5,
    )
    .unwrap();
    assert!(max_rel(ln.iter().map(|&v| f64::from(v)), lt.y.iter().copied(), 1.0) < 1e-4);
    let mut bn = ops::BatchNorm::new(&gpu, 13, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let yb = bn.forward_train(&gpu, &xg).unwrap().download(&gpu).unwrap();
    assert!(max_rel(yb.iter().map(|&v| f64::from(v)), zt.iter().copied(), 1.0) < 1e-3);

    // Random: the same stream as the CPU's.
    let w = ops::init::init(
        &gpu,
        &[64, 32],
        &gpuprep::Scheme::kaiming_normal(),
        gpuprep::Philox::new(3),
    )
    .unwrap()
    .download(&gpu)
    .unwrap();
    let wt: Array2<f64> = cpu::init::init(
        &[64, 32],
        &gpuprep::Scheme::kaiming_normal(),
        gpuprep::Philox::new(3),
    )
    .unwrap()
    .into_dimensionality()
    .unwrap();
    assert!(max_rel(w.iter().map(|&v| f64::from(v)), wt.iter().copied(), 1e-3) < 1e-4);
}
