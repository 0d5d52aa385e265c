//! Embedding: the host owns the device, the queue, the input buffer and the
//! command encoder; gpuprep records into that encoder next to the host's own
//! copy, and the host submits once.

mod common;

use gpuprep::{cpu, wgpu, Gpu, GpuMatrix};
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
