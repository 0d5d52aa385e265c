//! The context under misuse and failure: a destroyed (lost) device, a
//! readback stuck behind a long kernel, host buffers without the usages an
//! op needs, ranges near u64::MAX, matrices of another context, and CPU
//! allocations that cannot be made. Every case is an `Err` naming the
//! problem, never a panic, an abort or a hang.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::ShapeBuilder;

use common::{claiming_npy, raw_npy};

use gpuprep::{cpu, ops, wgpu, Error, Gpu, GpuMatrix, PcaOptions, Result, StandardizeOptions};

/// Runs `f`, returning "panicked" or the Debug form of its result.
fn outcome<T: std::fmt::Debug>(f: impl FnOnce() -> Result<T>) -> std::result::Result<Result<T>, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Collects the entries that did not return `Err(DeviceLost)`.
struct Lost(Vec<String>);

impl Lost {
    fn check<T: std::fmt::Debug>(&mut self, what: &str, f: impl FnOnce() -> Result<T>) {
        match outcome(f) {
            Ok(Err(Error::DeviceLost(_))) => {}
            Ok(other) => self.0.push(format!("{what}: {other:?}")),
            Err(panic) => self.0.push(format!("{what}: panicked: {panic}")),
        }
    }
}

#[test]
fn every_entry_after_the_device_is_destroyed_is_device_lost() {
    let g = Gpu::new().unwrap();
    let x = GpuMatrix::upload(&g, common::normal(16, 8, 0.0, 1.0, 1).view()).unwrap();
    let st = ops::column_stats(&g, &x, &Default::default()).unwrap();
    let pca = gpuprep::Pca::fit(&g, &x, &PcaOptions::default()).unwrap();
    let host = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.wait().unwrap();
    g.device().destroy();
    let mut lost = Lost(Vec::new());
    lost.check("wait", || g.wait());
    lost.check("upload", || {
        GpuMatrix::upload(&g, common::normal(2, 2, 0.0, 1.0, 2).view())
    });
    lost.check("uninit", || GpuMatrix::uninit(&g, 2, 2));
    lost.check("filled", || GpuMatrix::filled(&g, 2, 2, 1.0));
    lost.check("fill", || x.fill(&g, 1.0));
    lost.check("from_buffer", || GpuMatrix::from_buffer(&g, host.clone(), 2, 2));
    lost.check("download", || x.download(&g));
    lost.check("download_rows", || x.download_rows(&g, 1, 2));
    lost.check("read_bytes", || g.read_bytes(x.buffer(), 0, 16));
    lost.check("read_f32", || g.read_f32(x.buffer(), 0, 4));
    lost.check("run", || g.run("t", |_| Ok(())));
    lost.check("submit", || g.submit("t", g.encoder("t")));
    lost.check("column_stats", || ops::column_stats(&g, &x, &Default::default()));
    lost.check("stats download", || st.download(&g));
    lost.check("standardize", || {
        ops::standardize(&g, &x, &st, &StandardizeOptions::default())
    });
    lost.check("covariance", || ops::covariance(&g, &x, &Default::default()));
    lost.check("copy", || ops::copy(&g, &x));
    lost.check("matmul", || {
        ops::matmul(&g, &x, &GpuMatrix::uninit(&g, 8, 2)?, &Default::default())
    });
    lost.check("pca fit", || gpuprep::Pca::fit(&g, &x, &PcaOptions::default()));
    lost.check("pca transform", || pca.transform(&g, &x));
    lost.check("pca from_model", || {
        gpuprep::Pca::from_model(&g, pca.model().clone())
    });
    lost.check("init", || {
        ops::init::init(
            &g,
            &[4, 4],
            &gpuprep::Scheme::Constant { value: 0.5 },
            gpuprep::Philox::new(1),
        )
    });
    lost.check("random_bits", || {
        ops::init::random_bits(&g, gpuprep::Philox::new(1), 0, 8)
    });
    lost.check("timer", || gpuprep::GpuTimer::new(&g));
    lost.check("time_recorded", || {
        gpuprep::time_recorded(&g, None, 1, |_| Ok(()))
    });
    lost.check("batchnorm", || {
        let mut bn = ops::BatchNorm::new(&g, 8, Default::default(), 1e-5)?;
        bn.forward_train(&g, &x)
    });
    lost.check("norm", || {
        let n = ops::Norm::new(gpuprep::NormKind::Layer, 8);
        n.alloc_forward(&g, &x).map(|_| ())
    });
    assert!(lost.0.is_empty(), "not DeviceLost:\n{}", lost.0.join("\n"));
}

/// A kernel that runs for seconds: each workgroup runs four dependent chains
/// of `n` integer hash steps (n from a uniform, so nothing folds it away;
/// four loops because lavapipe ends any one loop after 65535 iterations),
/// and the dispatch has many workgroups.
const SPIN: &str = r#"
@group(0) @binding(0) var<uniform> n: u32;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn spin(@builtin(workgroup_id) wg: vec3<u32>) {
    var h = wg.x;
    for (var i = 0u; i < n; i++) { h = (h ^ (h >> 15u)) * 2654435761u + i; }
    for (var i = 0u; i < n; i++) { h = (h ^ (h >> 13u)) * 2246822519u + i; }
    for (var i = 0u; i < n; i++) { h = (h ^ (h >> 15u)) * 2654435761u + i; }
    for (var i = 0u; i < n; i++) { h = (h ^ (h >> 13u)) * 2246822519u + i; }
    if h == 0x12345678u {
        out[1] = h;
    }
    out[0] = wg.x;
}
"#;

/// Submits the spin kernel on `g`'s device: `groups` workgroups of 4 x 60000 steps.
fn submit_spin(g: &Gpu, groups: u32) -> wgpu::Buffer {
    let n = 60_000u32;
    use wgpu::util::DeviceExt;
    let dev = g.device();
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("spin"),
        source: wgpu::ShaderSource::Wgsl(SPIN.into()),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("spin"),
        layout: None,
        module: &module,
        entry_point: Some("spin"),
        compilation_options: Default::default(),
        cache: None,
    });
    let count = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::bytes_of(&n),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let out = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 8,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: count.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: out.as_entire_binding(),
            },
        ],
    });
    let mut enc = g.encoder("spin");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups, 1, 1);
    }
    g.submit("spin", enc).unwrap();
    out
}

/// A readback queued behind a long kernel returns `Timeout` after the
/// readback timeout (before: its submit blocked inside the driver until the
/// kernel ended, so the timeout never fired); so does `wait`. The kernel
/// runs about 3 s on lavapipe; the timeout is 0.3 s.
#[test]
fn the_readback_timeout_bounds_the_whole_call() {
    let g = Gpu::new()
        .unwrap()
        .with_readback_timeout(std::time::Duration::from_millis(300));
    let x = GpuMatrix::upload(&g, common::normal(4, 4, 0.0, 1.0, 3).view()).unwrap();
    g.wait().unwrap();
    let out = submit_spin(&g, 12_000);
    let t = std::time::Instant::now();
    let r = x.download(&g);
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?} after {took:?}");
    assert!(took.as_secs_f64() < 1.5, "download took {took:?}");
    let t = std::time::Instant::now();
    let r = g.wait();
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?} after {took:?}");
    assert!(took.as_secs_f64() < 1.5, "wait took {took:?}");
    // Once it ends, the context works again.
    let g2_wait = std::time::Instant::now();
    loop {
        match g.read_f32(&out, 0, 1) {
            Ok(v) => {
                let _ = v;
                break;
            }
            Err(Error::Timeout { .. }) if g2_wait.elapsed().as_secs() < 120 => continue,
            Err(e) => panic!("after the kernel: {e}"),
        }
    }
    assert_eq!(x.download(&g).unwrap().dim(), (4, 4));
}

fn storage_buffer(g: &Gpu, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    g.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("host"),
        size,
        usage,
        mapped_at_creation: false,
    })
}

#[test]
fn host_buffers_without_the_usage_an_op_needs_are_errors() {
    let g = common::gpu();
    // STORAGE only: no COPY_DST to fill or upload into, no COPY_SRC to read.
    let b = storage_buffer(g, 64, wgpu::BufferUsages::STORAGE);
    let m = GpuMatrix::from_buffer(g, b, 4, 4).unwrap();
    match outcome(|| m.fill(g, 1.0)) {
        Ok(Err(Error::InvalidArgument { reason, .. })) => assert!(reason.contains("COPY_DST"), "{reason}"),
        other => panic!("fill: {other:?}"),
    }
    match outcome(|| m.download(g)) {
        Ok(Err(Error::InvalidArgument { reason, .. })) => assert!(reason.contains("COPY_SRC"), "{reason}"),
        other => panic!("download: {other:?}"),
    }
    // Ops that only read it work.
    assert!(ops::column_stats(g, &m, &Default::default()).is_ok());
}

#[test]
fn byte_ranges_near_u64_max_are_errors() {
    let g = common::gpu();
    let b = storage_buffer(g, 64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
    for (offset, size) in [
        (u64::MAX - 3, 4),
        (4, u64::MAX - 3),
        (!3u64, !3u64),
        (64, 4),
        (60, 8),
    ] {
        let r = outcome(|| g.read_bytes(&b, offset, size));
        assert!(
            matches!(r, Ok(Err(Error::InvalidArgument { .. }))),
            "{offset} + {size}: {r:?}"
        );
    }
    for (start, len) in [(u64::MAX / 2, 4), (u64::MAX / 4, 1), (2, u64::MAX / 4)] {
        let r = outcome(|| g.read_f32(&b, start, len));
        assert!(
            matches!(r, Ok(Err(Error::InvalidArgument { .. }))),
            "{start} + {len}: {r:?}"
        );
    }
    let r = outcome(|| GpuMatrix::from_buffer_at(g, b.clone(), u64::MAX - 3, 1, 1));
    assert!(matches!(r, Ok(Err(Error::ShapeMismatch { .. }))), "{r:?}");
    assert_eq!(g.read_f32(&b, 15, 1).unwrap().len(), 1);
}

#[test]
fn a_matrix_of_another_context_is_refused() {
    let g = common::gpu();
    // Another context on the same device (the matrices would even bind), and
    // one on a device of its own.
    let same_device = Gpu::from_device_queue(g.device().clone(), g.queue().clone());
    let own = Gpu::new().unwrap();
    let x = GpuMatrix::upload(g, common::normal(8, 4, 0.0, 1.0, 4).view()).unwrap();
    let st = ops::column_stats(g, &x, &Default::default()).unwrap();
    for other in [&same_device, &own] {
        let y = GpuMatrix::upload(other, common::normal(8, 4, 0.0, 1.0, 5).view()).unwrap();
        let ost = ops::column_stats(other, &y, &Default::default()).unwrap();
        let mut failures = Vec::new();
        let mut refused = |what: &str, r: std::result::Result<Result<()>, String>| match r {
            Ok(Err(Error::InvalidArgument { reason, .. })) if reason.contains("another Gpu") => {}
            other => failures.push(format!("{what}: {other:?}")),
        };
        refused(
            "column_stats",
            outcome(|| ops::column_stats(g, &y, &Default::default()).map(|_| ())),
        );
        refused("download", outcome(|| y.download(g).map(|_| ())));
        refused("fill", outcome(|| y.fill(g, 0.0)));
        refused(
            "standardize x",
            outcome(|| ops::standardize(g, &y, &st, &Default::default()).map(|_| ())),
        );
        refused(
            "standardize stats",
            outcome(|| ops::standardize(g, &x, &ost, &Default::default()).map(|_| ())),
        );
        refused(
            "covariance",
            outcome(|| ops::covariance(g, &y, &Default::default()).map(|_| ())),
        );
        refused(
            "covariance mean",
            outcome(|| {
                let out = GpuMatrix::uninit(g, 4, 4)?;
                g.run("t", |e| {
                    ops::encode_covariance_into(g, e, &x, &ost.buffer, &out, &Default::default())
                })
            }),
        );
        refused("copy", outcome(|| ops::copy(g, &y).map(|_| ())));
        refused(
            "pca",
            outcome(|| gpuprep::Pca::fit(g, &y, &PcaOptions::default()).map(|_| ())),
        );
        // An output of this context over the other's statistics buffer (the
        // same device): the statistics are another context's, which is what
        // is said (before: "the output must not share a buffer with an input").
        let over = GpuMatrix::from_buffer_at(g, ost.buffer.buffer().clone(), ost.buffer.offset(), 2, 4);
        if let Ok(over) = over {
            refused(
                "standardize into, stats of another context",
                outcome(|| {
                    g.run("t", |e| {
                        ops::encode_standardize_into(
                            g,
                            e,
                            &x.row_range(0..2)?,
                            &ost,
                            &over,
                            &Default::default(),
                        )
                    })
                }),
            );
        }
        let mut into = ops::ColumnStats::uninit(other, 4).unwrap();
        refused(
            "column_stats into",
            outcome(|| {
                g.run("t", |e| {
                    ops::encode_column_stats_into(g, e, &x, &mut into, &Default::default())
                })
            }),
        );
        assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
    }
}

#[test]
fn cpu_allocations_that_cannot_be_made_are_errors_not_aborts() {
    // 200000 x 200000 f64 is 320 GB (before: SIGABRT in the allocator).
    let huge = |r: Result<()>| matches!(r, Err(Error::ExceedsLimit { .. }));
    let rng = gpuprep::Philox::new(1);
    for scheme in [
        gpuprep::Scheme::Constant { value: 1.0 },
        gpuprep::Scheme::KaimingNormal {
            gain: 2f64.sqrt(),
            mode: gpuprep::FanMode::FanIn,
        },
    ] {
        let r = cpu::init::init(&[200_000, 200_000], &scheme, rng).map(|_| ());
        assert!(huge(r), "init {scheme:?}");
    }
    // Broadcast views: huge shapes over one element, no memory of their own.
    let one = [1.0f32];
    let wide = ndarray::ArrayView2::from_shape((200_000, 200_000).strides((0, 0)), &one).unwrap();
    let cs = cpu::column_stats(
        ndarray::ArrayView2::from_shape((2, 200_000).strides((0, 0)), &one).unwrap(),
        0,
    )
    .unwrap();
    let cs = gpuprep::ColumnSummary { count: 200_000, ..cs };
    assert!(huge(
        cpu::standardize(wide, &cs, StandardizeOptions::default()).map(|_| ())
    ));
    let tall = ndarray::ArrayView2::from_shape((3, 200_000).strides((0, 0)), &one).unwrap();
    assert!(huge(cpu::covariance(tall, 0).map(|_| ())));
    assert!(huge(cpu::pca::fit(tall, &PcaOptions::default()).map(|_| ())));
    let col = ndarray::ArrayView2::from_shape((200_000, 1).strides((0, 0)), &one).unwrap();
    let w = ndarray::Array2::<f64>::zeros((1, 200_000));
    assert!(huge(cpu::matmul(col, w.view(), &Default::default()).map(|_| ())));
}

/// The bytes of `values`, each as `to_be` gives them (big-endian).
fn big_endian<T: Copy, const N: usize>(values: &[T], to_be: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_be(v)).collect()
}

fn scratch(name: &str) -> common::TestDir {
    common::fresh_dir(&format!("robust-{name}"))
}

#[test]
fn readers_check_a_headers_claim_before_allocating() {
    use gpuprep::io::ReadOptions;
    use gpuprep::stream::Dataset;
    let dir = scratch("claims");
    let wide = dir.join("wide.npy");
    claiming_npy(&wide, "<f4", "(0, 1000000000000000)", &[]);
    let empty = dir.join("empty.npy");
    claiming_npy(&empty, "<f8", "(1000000000000000000, 0)", &[]);
    let one = dir.join("one.npy");
    claiming_npy(&one, "<f8", "(3,)", &[0; 24]);
    for (path, says) in [
        (&wide, "claims 1000000000000000 columns"),
        (&empty, "0 columns"),
        (&one, "1-D array"),
    ] {
        let e = outcome(|| Dataset::open(std::slice::from_ref(path), &ReadOptions::default()).map(|_| ()));
        match e {
            Ok(Err(e)) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    // Any rank (normcheck's reader): the claim against the file's size.
    let t = dir.join("t.npy");
    claiming_npy(&t, "<f8", "(100000, 100000, 100000)", &[0; 64]);
    let e = gpuprep::npy::read_array(&t).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    raw_npy(
        &t,
        "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 1, 2), }",
        &big_endian(&[1.0f32, 2.0, 3.0, 4.0], f32::to_be_bytes),
    );
    let (a, _) = gpuprep::npy::read_array(&t).unwrap();
    assert_eq!(a.shape(), [2, 1, 2]);
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), [1.0, 3.0, 2.0, 4.0]);
    // A claim whose bytes overflow once the header's length is added (2^64 - 4
    // bytes of data): it wrapped to 124 bytes, passed as not truncated, and
    // failed later with a misleading error (a panic in debug builds).
    let huge = dir.join("huge.npy");
    claiming_npy(&huge, "<f4", "(4611686018427387903, 1)", &[0; 64]);
    let e = gpuprep::npy::NpyReader::open(&huge)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated") || e.contains("overflow"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn experiments_that_make_no_work_are_refused() {
    use gpuprep::model::init::Scheme;
    use gpuprep::Activation;
    let s = Scheme::kaiming_normal();
    for (l, u, b) in [(2, 0, 4), (2, 4, 0), (0, 0, 4)] {
        let e = gpuprep::model::init::Experiment {
            scheme: &s,
            activation: Activation::Relu,
            layers: l,
            units: u,
            batch: b,
            seed: 1,
        };
        let r = cpu::init::lecture::activation_statistics(&e);
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
        let r = ops::init::lecture::activation_statistics(common::gpu(), &e);
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    }
}

#[test]
fn stale_temporaries_of_other_pid_spaces_are_kept() {
    let dir = scratch("sweep");
    let dead = common::dead_pid();
    let names = [
        format!(".y.npy.gpuprep-fedcba9876543210-{dead}-0.tmp"),
        format!(".y.npy.gpuprep-{dead}-0.tmp"),
    ];
    for n in &names {
        std::fs::write(dir.join(n), "").unwrap();
    }
    assert_eq!(gpuprep::io::remove_stale_temporaries(&dir), 0);
    for n in &names {
        assert!(dir.join(n).exists(), "{n}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_written_to_a_failing_writer_is_an_error_naming_it() {
    use std::io::{Seek, SeekFrom, Write};
    /// Accepts `room` bytes, then fails as a full disk does.
    struct Full {
        room: usize,
        pos: u64,
    }
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.pos += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Full {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            if let SeekFrom::Start(p) = to {
                self.pos = p;
            }
            Ok(self.pos)
        }
    }
    let x = common::normal(20, 3, 0.0, 1.0, 2).mapv(f64::from);
    let model = gpuprep::Pipeline::fit(x.view(), &Default::default()).unwrap();
    for room in [0, 100, 1000, 3000] {
        let path = std::path::Path::new("model.npz");
        let r = outcome(|| {
            let mut npz = gpuprep::npz::NpzWriter::new(Full { room, pos: 0 }, path);
            model.write_npz(&mut npz)?;
            npz.finish().map(|_| ())
        });
        match r {
            Ok(Err(Error::Io { path: p, .. })) => assert_eq!(p, path),
            other => panic!("room {room}: {other:?}"),
        }
    }
}

/// Rank-deficient data whitened under scikit-learn's convention, the
/// transform computed in f32 (on the GPU): the direction the data do not span
/// has an eigenvalue at rounding level, and whitening's divisor is clipped at
/// f32's epsilon (scikit-learn's rule for float32 data), so its values are of
/// the order of the rounding, as scikit-learn's (before: f32 noise divided by
/// f64's epsilon, about 1e9).
#[test]
fn rank_deficient_whitening_in_f32_stays_of_order_one() {
    use gpuprep::{Convention, NComponents, Pipeline, PipelineOptions, Whitening};
    let g = common::gpu();
    let options = PipelineOptions {
        center: true,
        scale: false,
        pca: Some(NComponents::All),
        whitening: Whitening::Pca,
        convention: Convention::Sklearn,
        eps: None,
        ..Default::default()
    };
    // A column that depends on the others: its eigenvalue is rounding
    // noise of either sign (within eps * ||C||). Take data where the f64 fit
    // gives one whose square root falls below f64's epsilon (a negative one
    // is clipped there too), as the probe's did.
    let (x, model) = (0..200)
        .find_map(|seed| {
            let mut x = common::normal(300, 3, 3.0, 2.0, seed).mapv(f64::from);
            for mut r in x.rows_mut() {
                r[2] = r[0] + 2.0 * r[1];
            }
            let model = Pipeline::fit(x.view(), &options).unwrap();
            let s = model.pca.as_ref().unwrap().explained_variance[2];
            (s.is_nan() || s.sqrt().is_nan() || s.sqrt() < f64::EPSILON).then_some((x, model))
        })
        .expect("no seed gives a null eigenvalue below epsilon^2");
    let x32 = x.mapv(|v| v as f32);
    let xg = GpuMatrix::upload(g, x32.view()).unwrap();
    let y = common::gpu_transform(g, &model, &xg);
    let worst = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        worst.is_finite() && worst < 1e3,
        "largest whitened value {worst:e}"
    );
    // The spanned directions are whitened as on the CPU in f64.
    let want = model.transform(x.view()).unwrap();
    for j in 0..2 {
        let col = y.column(j).mapv(f64::from);
        let err = (&col - &want.column(j))
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-4, "component {j}: {err:e}");
    }
}

#[test]
fn read_matrix_checks_the_claim_and_refuses_1d() {
    use gpuprep::io::{read_matrix, read_npy_matrix, ReadOptions};
    let dir = scratch("read-matrix");
    let big = dir.join("big.npy");
    claiming_npy(&big, "<f4", "(1000000000, 1000000000)", &[0; 64]);
    let one = dir.join("one.npy");
    claiming_npy(&one, "<f8", "(3,)", &[0; 24]);
    for (p, says) in [(&big, "truncated"), (&one, "1-D array")] {
        let e = outcome(|| read_npy_matrix(p).map(|_| ()));
        assert!(matches!(&e, Ok(Err(e)) if e.to_string().contains(says)), "{e:?}");
        let e = outcome(|| read_matrix(p, &ReadOptions::default()).map(|_| ()));
        assert!(matches!(&e, Ok(Err(e)) if e.to_string().contains(says)), "{e:?}");
    }
    let ok = dir.join("ok.npy");
    raw_npy(
        &ok,
        "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 2), }",
        &big_endian(&[1.0f64, 2.0, 3.0, 4.0], f64::to_be_bytes),
    );
    assert_eq!(
        read_npy_matrix(&ok).unwrap(),
        ndarray::array![[1.0f32, 3.0], [2.0, 4.0]]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn output_sets_write_through_links_and_fifos() {
    use gpuprep::io::OutputSet;
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch("outputs");
    let y = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
    // A symbolic link: written at its target, the link kept.
    std::fs::write(dir.join("target.npy"), b"old").unwrap();
    std::os::unix::fs::symlink("target.npy", dir.join("link.npy")).unwrap();
    // A FIFO: written straight through to its reader.
    let fifo = dir.join("y.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            std::fs::File::open(fifo).unwrap().read_to_end(&mut v).unwrap();
            v
        })
    };
    let mut set = OutputSet::new();
    set.write_npy(&dir.join("link.npy"), &y).unwrap();
    set.write_npy(&fifo, &y).unwrap();
    set.commit().unwrap();
    let through = reader.join().unwrap();
    assert_eq!(through, std::fs::read(dir.join("target.npy")).unwrap());
    let back: ndarray::Array2<f32> = ndarray_npy::read_npy(dir.join("target.npy")).unwrap();
    assert_eq!(back, y);
    assert!(std::fs::symlink_metadata(dir.join("link.npy"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    let _ = std::fs::remove_dir_all(&dir);
}
