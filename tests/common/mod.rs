//! Shared test helpers: one GPU context per test binary, seeded data, and the
//! comparison measures used against the f64 CPU twins.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gpuprep::Gpu;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The test GPU. A missing adapter fails the test (never a silent skip), with
/// the way to get one.
///
/// The context is a `static`, never dropped, so the calling thread (the
/// test's own: libtest runs each test on a thread it joins) gets a guard
/// that waits for the context's work when the thread ends: a test that
/// returns with work in flight would otherwise let the process exit under
/// it, and lavapipe can then crash in its teardown (SIGSEGV or "free():
/// invalid pointer" after the test passed).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    struct WaitAtThreadEnd;
    impl Drop for WaitAtThreadEnd {
        fn drop(&mut self) {
            if let Some(g) = GPU.get() {
                let _ = g.wait();
            }
        }
    }
    thread_local! {
        static GUARD: WaitAtThreadEnd = const { WaitAtThreadEnd };
    }
    GUARD.with(|_| {});
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => g,
        Err(e) => panic!(
            "GPU tests need a wgpu adapter: {e}\n\
             On Debian/Ubuntu: `sudo apt-get install -y mesa-vulkan-drivers` (lavapipe, a CPU Vulkan driver)."
        ),
    })
}

/// A context on a device with WebGPU's default limits: 16 KiB of workgroup
/// memory, where the product kernels' tiles get one buffer, not two.
pub fn small_memory_gpu() -> Gpu {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("no adapter: apt-get install -y mesa-vulkan-drivers");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    assert_eq!(device.limits().max_compute_workgroup_storage_size, 16384);
    Gpu::from_device_queue(device, queue)
}

/// Shapes for the host path's tests: N = 1, D = 1, sizes that divide
/// nothing, several blocks (column stats: 64 Ki elements; covariance: 1 Mi),
/// several tasks, a second column tile (8192), and the single-task
/// covariance (D >= 1024).
pub const HOST_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 5),
    (7, 1),
    (1000, 1),
    (63, 65),
    (4099, 200),
    (20_000, 64),
    (3, 9000),
    (2100, 700),
];

/// A seeded N x D matrix of `offset + scale * N(0, 1)`.
pub fn normal(n: usize, d: usize, offset: f32, scale: f32, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, d), || {
        let z: f32 = StandardNormal.sample(&mut rng);
        offset + scale * z
    })
}

/// Largest |a - b| / max(|b|, floor) over all elements.
pub fn max_rel(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>, floor: f64) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs() / y.abs().max(floor)
            }
        })
        .fold(0.0, f64::max)
}

/// An empty folder for a test's files: `gpuprep-{name}-{pid}` in the
/// temporary directory, emptied of what an earlier run left there, and
/// removed when the test is done with it (kept where the test failed, for
/// a look at what it wrote).
pub fn fresh_dir(name: &str) -> TestDir {
    let d = std::env::temp_dir().join(format!("gpuprep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TestDir(d)
}

/// A folder [`fresh_dir`] made; a path everywhere one is taken.
pub struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A .npy file of version 1 with this header dictionary and data.
pub fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut text = dict.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A C-order .npy file whose header claims `descr` and `shape` (numpy's
/// spelling: "(3,)", "(2, 5)"), then `data`, whatever its size.
pub fn claiming_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    raw_npy(path, &dict, data);
}

/// The ID of a process that has ended: a PID that no longer runs here.
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// The form of the elementwise ops that record `x` into `out`.
pub type EncodeInto = fn(
    &Gpu,
    &mut gpuprep::wgpu::CommandEncoder,
    &gpuprep::GpuMatrix,
    &gpuprep::GpuMatrix,
) -> gpuprep::Result<()>;

/// `encode` from a `rows` x `cols` matrix refuses an output of the transposed
/// shape (ShapeMismatch) and the input itself as output (InvalidArgument).
pub fn refuses_wrong_and_aliased_outputs(encode: EncodeInto, rows: usize, cols: usize) {
    let g = gpu();
    let x = gpuprep::GpuMatrix::uninit(g, rows, cols).unwrap();
    let wrong = gpuprep::GpuMatrix::uninit(g, cols, rows).unwrap();
    let mut enc = g.encoder("test");
    assert!(matches!(
        encode(g, &mut enc, &x, &wrong),
        Err(gpuprep::Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        encode(g, &mut enc, &x, &x),
        Err(gpuprep::Error::InvalidArgument { .. })
    ));
}

/// Submits `enc` and reads `out` back as f64, failing (naming `what`) where
/// an element of it was never written: `out` is to start filled with NaN.
pub fn submit_and_read_written(
    g: &Gpu,
    enc: gpuprep::wgpu::CommandEncoder,
    out: &gpuprep::GpuMatrix,
    what: &str,
) -> Array2<f64> {
    g.submit("test", enc).unwrap();
    let got = out.download(g).unwrap().mapv(f64::from);
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: an element was never written"
    );
    got
}

/// `model`'s transform of `x` on `g`, read back.
pub fn gpu_transform(g: &Gpu, model: &gpuprep::Pipeline, x: &gpuprep::GpuMatrix) -> Array2<f32> {
    let model = model.to_gpu(g).unwrap();
    model.transform(g, x).unwrap().download(g).unwrap()
}

/// The awkward shapes every kernel is tested on: N = 1, D = 1, sizes that do
/// not divide the workgroup, and one needing several workgroups on both axes.
pub const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 5),
    (1, 8),
    (5, 4),
    (7, 1),
    (1000, 1),
    (3, 64),
    (63, 65),
    (257, 129),
    (1025, 130),
    (4099, 200),
];

/// Every standardize option: centering only, scaling only, both.
pub const STANDARDIZE_OPTIONS: [gpuprep::StandardizeOptions; 3] = [
    gpuprep::StandardizeOptions {
        center: true,
        scale: false,
    },
    gpuprep::StandardizeOptions {
        center: false,
        scale: true,
    },
    gpuprep::StandardizeOptions {
        center: true,
        scale: true,
    },
];

/// `f` (a statistic of a matrix with a ddof) refuses a ddof of all of `x`'s
/// rows (InvalidArgument) and an empty 0 x 3 matrix (ShapeMismatch).
pub fn refuses_ddof_of_all_rows_and_no_rows<R>(
    x: &gpuprep::GpuMatrix,
    f: impl Fn(&gpuprep::GpuMatrix, usize) -> gpuprep::Result<R>,
) {
    assert!(matches!(
        f(x, x.rows()),
        Err(gpuprep::Error::InvalidArgument { .. })
    ));
    let empty = gpuprep::GpuMatrix::uninit(gpu(), 0, 3).unwrap();
    assert!(matches!(f(&empty, 0), Err(gpuprep::Error::ShapeMismatch { .. })));
}

/// Row `i` of a column of +-3e38 alternating (3e38 on even rows): one whose
/// deviations from any shift overflow f32 for half the rows.
pub fn alternating_3e38(i: usize) -> f32 {
    if i.is_multiple_of(2) {
        3e38
    } else {
        -3e38
    }
}

/// Row `i` of `n` of a column spanning f32's whole range, from -f32::MAX up.
pub fn spanning_f32(i: usize, n: usize) -> f32 {
    (i as f32 / n as f32 * 2.0 - 1.0) * f32::MAX
}

/// Records the column statistics of `x` into `enc` (into new statistics).
pub fn record_stats(
    g: &Gpu,
    enc: &mut gpuprep::wgpu::CommandEncoder,
    x: &gpuprep::GpuMatrix,
    ddof: usize,
) -> gpuprep::Result<gpuprep::ColumnStats> {
    let mut st = gpuprep::ColumnStats::uninit(g, x.cols())?;
    gpuprep::ops::encode_column_stats_into(
        g,
        enc,
        x,
        &mut st,
        &gpuprep::ops::ColumnStatsOptions::ddof(ddof),
    )?;
    Ok(st)
}

/// The f64 twin's norm: the forward pass of `kind` over `x`, then the
/// backward pass for the upstream gradient `dy` from its statistics.
pub fn twin_norm(
    kind: gpuprep::NormKind,
    x: &ndarray::ArrayD<f64>,
    dy: &ndarray::ArrayD<f64>,
    gamma: &ndarray::Array1<f64>,
    beta: &ndarray::Array1<f64>,
    eps: f64,
) -> (gpuprep::cpu::norm::NormOutput, gpuprep::cpu::norm::NormGrads) {
    let fw = gpuprep::cpu::norm::norm_forward(kind, x.view(), gamma.view(), beta.view(), eps).unwrap();
    let gr = gpuprep::cpu::norm::norm_backward(
        kind,
        x.view(),
        dy.view(),
        gamma.view(),
        fw.stats.mean.view(),
        fw.stats.invstd.view(),
    )
    .unwrap();
    (fw, gr)
}

/// The host path's norm in `x`'s float type: the output, the statistics and
/// the gradients (dx, dgamma, dbeta) for the upstream gradient `dy`.
pub fn host_norm<T: gpuprep::host::HostFloat, D: ndarray::Dimension>(
    kind: gpuprep::NormKind,
    x: ndarray::ArrayView<'_, T, D>,
    dy: ndarray::ArrayView<'_, T, D>,
    gamma: &ndarray::Array1<f64>,
    beta: &ndarray::Array1<f64>,
    eps: f64,
) -> (
    ndarray::Array<T, D>,
    gpuprep::NormSummary,
    gpuprep::host::BatchNormGrads<T, D>,
) {
    let (y, st) = gpuprep::host::norm_forward(kind, x.view(), gamma.view(), beta.view(), eps).unwrap();
    let grads =
        gpuprep::host::norm_backward(kind, x, dy, gamma.view(), st.mean.view(), st.invstd.view()).unwrap();
    (y, st, grads)
}
