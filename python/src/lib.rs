//! `gpuprep._gpuprep`: the compiled core of the Python package. The
//! scikit-learn estimators are Python (`python/py/gpuprep`); this module
//! gives them the library's fits, merges, transforms and model files over
//! numpy arrays, on the GPU or the fast CPU path.
//!
//! - numpy arrays come in without a copy (`PyReadonlyArray2`, any layout,
//!   read-only memmaps included) as f32 or f64, and results go out by moving
//!   the Rust buffer into numpy; the GIL is released while the library works.
//! - Every library error becomes a Python exception with the same message:
//!   `ValueError` for bad input, `OSError` (or `FileNotFoundError`, ...) for
//!   files, `MemoryError` for sizes the machine cannot hold, and
//!   `gpuprep.GpuError` for the device. A panic is caught at the boundary and
//!   raised as `RuntimeError`, never as pyo3's `PanicException`.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::OnceLock;

use gpuprep::model::init::{FanMode, Scheme};
use gpuprep::model::moments::{NanMoments, WeightedMoments};
use gpuprep::model::pca::Solver;
use gpuprep::npz::{NpzReader, NpzWriter};
use gpuprep::pipeline::Device;
use gpuprep::{
    host, Convention, Error, Gpu, NComponents, Pipeline, PipelineOptions, PipelineState, Whitening,
};
use ndarray::ArrayView2;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{
    PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use rayon::prelude::*;

pyo3::create_exception!(
    _gpuprep,
    GpuError,
    pyo3::exceptions::PyRuntimeError,
    "The GPU could not be used: no adapter, a device lost, a driver error or a timeout."
);

/// The library's error as the Python exception a user expects.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::NoAdapter { .. }
        | Error::RequestDevice { .. }
        | Error::Gpu { .. }
        | Error::DeviceLost(_)
        | Error::Timeout { .. } => GpuError::new_err(msg),
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        Error::ExceedsLimit { what, .. } if what.contains("host memory") => PyMemoryError::new_err(msg),
        Error::NoConvergence { .. } => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Runs `f` without the GIL, turning a library error into its Python
/// exception and a panic into `RuntimeError`.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> gpuprep::Result<T> + Send) -> PyResult<T> {
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => r.map_err(to_py),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(PyRuntimeError::new_err(format!(
                "gpuprep: internal error (a bug, please report it): {what}"
            )))
        }
    }
}

/// The process's GPU context, made on first use: `Err` says why there is none.
fn gpu_context() -> &'static std::result::Result<Gpu, String> {
    static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        catch_unwind(Gpu::new)
            .unwrap_or_else(|_| Err(Error::DeviceLost("the adapter could not be opened".into())))
            .map_err(|e| e.to_string())
    })
}

/// Whether an adapter is a CPU in disguise (lavapipe, llvmpipe, WARP).
fn is_software(g: &Gpu) -> bool {
    g.adapter_info().device_type == gpuprep::wgpu::DeviceType::Cpu
}

/// Where `device` ("auto", "gpu" or "cpu") computes.
fn device(py: Python<'_>, device: &str) -> PyResult<Device<'static>> {
    match device {
        "cpu" => Ok(Device::Cpu),
        "gpu" => match py.detach(gpu_context) {
            Ok(g) => Ok(Device::Gpu(g)),
            Err(e) => Err(GpuError::new_err(format!("device=\"gpu\": {e}"))),
        },
        "auto" => match py.detach(gpu_context) {
            Ok(g) if !is_software(g) => Ok(Device::Gpu(g)),
            _ => Ok(Device::Cpu),
        },
        other => Err(PyValueError::new_err(format!(
            "device must be \"auto\", \"gpu\" or \"cpu\", got {other:?}"
        ))),
    }
}

/// The adapter `device="auto"` and `"gpu"` would use, as a dict (name,
/// backend, device_type, software, and `used_by_auto`), or `None` without one.
#[pyfunction]
fn device_info(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    let Ok(g) = py.detach(gpu_context) else {
        return Ok(None);
    };
    let info = g.adapter_info();
    let d = PyDict::new(py);
    d.set_item("name", info.name.clone())?;
    d.set_item("backend", format!("{:?}", info.backend))?;
    d.set_item("device_type", format!("{:?}", info.device_type))?;
    d.set_item("driver", info.driver.clone())?;
    d.set_item("software", is_software(g))?;
    d.set_item("used_by_auto", !is_software(g))?;
    Ok(Some(d))
}

/// Why there is no adapter, or `None` when there is one.
#[pyfunction]
fn device_error(py: Python<'_>) -> Option<String> {
    py.detach(gpu_context).as_ref().err().cloned()
}

/// `$body` with `$x` the `host::Csr` of a matrix of `$shape` from its row
/// offsets and borrowed `Indices` and `Values`, for each pair of their
/// types; a `PyResult`.
macro_rules! with_csr {
    ($shape:expr, $indptr:expr, $indices:expr, $data:expr, |$x:ident| $body:expr) => {
        match ($indices, $data) {
            (Indices::I32(i), Values::F32(v)) => with_csr!(@one $shape, $indptr, i, v, $x, $body),
            (Indices::I32(i), Values::F64(v)) => with_csr!(@one $shape, $indptr, i, v, $x, $body),
            (Indices::I64(i), Values::F32(v)) => with_csr!(@one $shape, $indptr, i, v, $x, $body),
            (Indices::I64(i), Values::F64(v)) => with_csr!(@one $shape, $indptr, i, v, $x, $body),
        }
    };
    (@one $shape:expr, $indptr:expr, $i:ident, $v:ident, $x:ident, $body:expr) => {{
        let $x = host::Csr {
            shape: $shape,
            indptr: $indptr,
            indices: $i.as_slice()?,
            data: $v.as_slice()?,
        };
        $body
    }};
}

/// A 2-D float32 or float64 array, borrowed.
enum Rows<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Rows<'py> {
    fn of(x: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = x.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Rows::F32(a));
        }
        if let Ok(a) = x.extract::<PyReadonlyArray2<'py, f64>>() {
            return Ok(Rows::F64(a));
        }
        Err(PyTypeError::new_err(format!(
            "{what} must be a 2-D numpy array of float32 or float64 in native byte order"
        )))
    }
}

/// What non-finite input an estimator accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finite {
    /// Neither NaN nor infinity (PCA, Preprocessor).
    All,
    /// NaN, not infinity (StandardScaler).
    AllowNan,
    /// Anything: it propagates.
    Any,
}

impl Finite {
    fn of(s: &str) -> PyResult<Finite> {
        match s {
            "all" => Ok(Finite::All),
            "allow-nan" => Ok(Finite::AllowNan),
            "any" => Ok(Finite::Any),
            other => Err(PyValueError::new_err(format!(
                "finite must be \"all\", \"allow-nan\" or \"any\", got {other:?}"
            ))),
        }
    }
}

/// The first element of `x` that `finite` refuses, as scikit-learn words it
/// ("Input X contains NaN." / "... infinity ..."), searched on all cores.
fn refused<T: gpuprep::npy::NpyFloat>(x: ArrayView2<'_, T>, finite: Finite) -> Option<Error> {
    let bad = |v: f64| match finite {
        Finite::All => !v.is_finite(),
        Finite::AllowNan => v.is_infinite(),
        Finite::Any => false,
    };
    let (i, row) = x
        .outer_iter()
        .into_par_iter()
        .enumerate()
        .find_first(|(_, r)| r.iter().any(|v| bad(v.to_f64())))?;
    let j = row.iter().position(|v| bad(v.to_f64()))?;
    let v = row[j].to_f64();
    let what = if v.is_nan() {
        "NaN".to_string()
    } else {
        format!(
            "infinity or a value too large for dtype('{}')",
            if T::DTYPE == gpuprep::npy::Dtype::F32 {
                "float32"
            } else {
                "float64"
            }
        )
    };
    Some(Error::NonFinite {
        op: "gpuprep",
        location: format!("Input X contains {what} (row {i}, column {j})"),
    })
}

/// Whether every value is finite, on all cores.
fn all_finite<T: gpuprep::npy::NpyFloat>(y: &ndarray::Array2<T>) -> bool {
    match y.as_slice() {
        Some(s) => s
            .par_chunks(1 << 16)
            .all(|c| c.iter().all(|v| v.to_f64().is_finite())),
        None => y.iter().all(|v| v.to_f64().is_finite()),
    }
}

/// [`PipelineState::partial_fit_on`], refusing non-finite rows when `finite`:
/// they show in the chunk's means, and only then is the chunk searched.
fn accumulate<T: gpuprep::npy::NpyFloat>(
    state: &mut PipelineState,
    x: ArrayView2<'_, T>,
    dev: Device<'_>,
    finite: bool,
) -> gpuprep::Result<()> {
    if !finite {
        return state.partial_fit_on(x, dev);
    }
    let mut chunk = PipelineState::try_new(state.dim(), state.comoments.is_some())?;
    chunk.partial_fit_on(x, dev)?;
    if !chunk.moments.mean.iter().all(|v| v.is_finite()) {
        if let Some(e) = refused(x, Finite::All) {
            return Err(e);
        }
    }
    state.merge_owned(chunk)
}

/// The mergeable state of a fit (`gpuprep::PipelineState`).
#[pyclass(module = "gpuprep._gpuprep", name = "State")]
#[derive(Clone)]
struct PyState {
    inner: PipelineState,
}

#[pymethods]
impl PyState {
    /// The empty state of `n_features` columns, with the co-moments a PCA
    /// step needs when `pca`.
    #[new]
    fn new(n_features: usize, pca: bool) -> PyResult<Self> {
        Ok(PyState {
            inner: PipelineState::try_new(n_features, pca).map_err(to_py)?,
        })
    }

    /// Accumulates the rows of `x` (2-D float32 or float64) on `device`.
    /// With `finite`, rows holding NaN or infinity are refused (ValueError,
    /// naming the first such element) and the state is left as it was.
    #[pyo3(signature = (x, device, finite=true))]
    fn partial_fit(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        device: &str,
        finite: bool,
    ) -> PyResult<()> {
        let dev = self::device(py, device)?;
        let state = &mut self.inner;
        match Rows::of(x, "X")? {
            Rows::F32(a) => {
                let v = a.as_array();
                run(py, || accumulate(state, v, dev, finite))
            }
            Rows::F64(a) => {
                let v = a.as_array();
                run(py, || accumulate(state, v, dev, finite))
            }
        }
    }

    /// Accumulates a sparse CSR matrix (scipy's `indptr`, `indices` and
    /// `data` of a matrix of `shape`, canonical) on `device`:
    /// `PipelineState::partial_fit_sparse` (the co-moments from the Gram
    /// matrix of the stored values where that is accurate, else dense blocks
    /// of rows). Returns whether the rows stayed sparse. NaN and infinity
    /// are refused, naming their row and column; the state is left as it was.
    fn partial_fit_sparse<'py>(
        &mut self,
        py: Python<'py>,
        shape: (usize, usize),
        indptr: Indices<'py>,
        indices: Indices<'py>,
        data: Values<'py>,
        device: &str,
    ) -> PyResult<bool> {
        let dev = self::device(py, device)?;
        let offsets = offsets(&indptr)?;
        let state = &mut self.inner;
        with_csr!(shape, &offsets, &indices, &data, |x| run(py, || state
            .partial_fit_sparse(x, dev)))
    }

    /// Merges another state (disjoint rows of the same columns) into this one.
    fn merge(&mut self, py: Python<'_>, other: &PyState) -> PyResult<()> {
        let other = other.inner.clone();
        let state = &mut self.inner;
        run(py, || state.merge_owned(other))
    }

    /// Rows accumulated.
    #[getter]
    fn n_samples(&self) -> u64 {
        self.inner.count()
    }

    /// Columns.
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.dim()
    }

    /// Whether it holds the co-moments of a PCA step.
    #[getter]
    fn has_pca(&self) -> bool {
        self.inner.comoments.is_some()
    }

    /// The columns' names, if set.
    #[getter]
    fn get_feature_names(&self) -> Option<Vec<String>> {
        self.inner.feature_names.clone()
    }

    #[setter]
    fn set_feature_names(&mut self, names: Option<Vec<String>>) -> PyResult<()> {
        if let Some(n) = &names {
            if n.len() != self.inner.dim() {
                return Err(PyValueError::new_err(format!(
                    "{} feature names for {} columns",
                    n.len(),
                    self.inner.dim()
                )));
            }
        }
        self.inner.feature_names = names;
        Ok(())
    }

    /// The state as `.npz` bytes (the `state_` keys of a saved model).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let s = &self.inner;
        let bytes = run(py, || {
            let p = std::path::Path::new("<state>");
            let mut w = NpzWriter::new(Cursor::new(Vec::new()), p);
            s.write_npz(&mut w, "state_")?;
            if let Some(n) = &s.feature_names {
                w.strs("feature_names_in", n)?;
            }
            Ok(w.finish()?.into_inner())
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The state of [`PyState::to_bytes`].
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
        let inner = run(py, || {
            let mut r = NpzReader::new(Cursor::new(data), std::path::Path::new("<state>"))?;
            let mut s = PipelineState::read_npz(&mut r, "state_", None)?;
            if r.has("feature_names_in") {
                s.feature_names = Some(r.strs("feature_names_in", Some(s.dim()))?);
            }
            Ok(s)
        })?;
        Ok(PyState { inner })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let bytes = slf.borrow().to_bytes(py)?;
        let ctor = slf.getattr("from_bytes")?;
        Ok((ctor, PyTuple::new(py, [bytes])?))
    }

    fn __repr__(&self) -> String {
        format!(
            "State(n_samples={}, n_features={}, pca={})",
            self.inner.count(),
            self.inner.dim(),
            self.inner.comoments.is_some()
        )
    }
}

/// `n_components` from Python: None, an int, a float fraction or "all".
fn components(x: Option<&Bound<'_, PyAny>>) -> PyResult<Option<NComponents>> {
    let Some(x) = x else {
        return Ok(None);
    };
    if x.is_none() {
        return Ok(None);
    }
    if x.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(
            "n_components must be an int, a float or \"all\", not a bool",
        ));
    }
    if let Ok(s) = x.extract::<String>() {
        return match s.as_str() {
            "all" => Ok(Some(NComponents::All)),
            _ => Err(PyValueError::new_err(format!(
                "n_components must be an int, a float in (0, 1) or \"all\", got {s:?}"
            ))),
        };
    }
    if x.is_instance_of::<pyo3::types::PyInt>() {
        let k: i64 = x.extract()?;
        return match usize::try_from(k) {
            Ok(k) if k > 0 => Ok(Some(NComponents::Count(k))),
            _ => Err(PyValueError::new_err(format!(
                "n_components must be at least 1, got {k}"
            ))),
        };
    }
    let f: f64 = x
        .extract()
        .map_err(|_| PyTypeError::new_err("n_components must be None, an int, a float or \"all\""))?;
    Ok(Some(NComponents::Fraction(f)))
}

/// A fitted pipeline (`gpuprep::Pipeline`).
#[pyclass(module = "gpuprep._gpuprep", name = "Model", frozen)]
struct PyModel {
    inner: Pipeline,
}

fn whitening(s: &str) -> PyResult<Whitening> {
    Whitening::from_name(s)
        .ok_or_else(|| PyValueError::new_err(format!("whiten must be None, \"pca\" or \"zca\", got {s:?}")))
}

fn solver(s: &str) -> PyResult<Solver> {
    Solver::from_name(s).ok_or_else(|| {
        PyValueError::new_err(format!(
            "solver must be \"auto\", \"full\" or \"topk\", got {s:?}"
        ))
    })
}

fn convention(s: &str) -> PyResult<Convention> {
    Convention::from_name(s).ok_or_else(|| {
        PyValueError::new_err(format!(
            "convention must be \"sklearn\", \"lecture\" or \"pytorch\", got {s:?}"
        ))
    })
}

/// [`Pipeline::transform_on`], refusing the non-finite input `finite` says:
/// it shows as a non-finite output (NaN and infinity propagate through the
/// transforms), and only then is the input searched.
fn transform_checked<T: gpuprep::npy::NpyFloat>(
    model: &Pipeline,
    x: ArrayView2<'_, T>,
    inverse: bool,
    dev: Device<'_>,
    finite: Finite,
) -> gpuprep::Result<ndarray::Array2<T>> {
    let y = model.transform_on(x, inverse, dev)?;
    if finite != Finite::Any && !all_finite(&y) {
        if let Some(e) = refused(x, finite) {
            return Err(e);
        }
    }
    Ok(y)
}

/// The transform of borrowed rows as a numpy array of their own dtype.
fn transform_rows<'py>(
    py: Python<'py>,
    model: &Pipeline,
    x: &Bound<'py, PyAny>,
    inverse: bool,
    dev: Device<'static>,
    finite: Finite,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match Rows::of(x, "X")? {
        Rows::F32(a) => {
            let v = a.as_array();
            run(py, || transform_checked(model, v, inverse, dev, finite))?
                .into_pyarray(py)
                .into_any()
        }
        Rows::F64(a) => {
            let v = a.as_array();
            run(py, || transform_checked(model, v, inverse, dev, finite))?
                .into_pyarray(py)
                .into_any()
        }
    })
}

#[pymethods]
impl PyModel {
    /// Fits a pipeline from an accumulated state (the eigendecomposition
    /// runs here, without the GIL).
    #[staticmethod]
    #[pyo3(signature = (state, *, center, scale, n_components=None, whiten="none", convention="sklearn", eps=None, solver="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        state: &PyState,
        center: bool,
        scale: bool,
        n_components: Option<&Bound<'_, PyAny>>,
        whiten: &str,
        convention: &str,
        eps: Option<f64>,
        solver: &str,
    ) -> PyResult<Self> {
        let options = PipelineOptions {
            center,
            scale,
            pca: components(n_components)?,
            whitening: whitening(whiten)?,
            convention: self::convention(convention)?,
            eps,
            solver: self::solver(solver)?,
        };
        let state = state.inner.clone();
        let inner = run(py, || Pipeline::from_state(state, &options))?;
        Ok(PyModel { inner })
    }

    /// A standardization `(x - mean) / scale` from given statistics (the
    /// fitted state of a StandardScaler, which fits NaN-aware moments
    /// itself): no state, so it cannot be merged or saved as a pipeline.
    #[staticmethod]
    fn standardizer(
        mean: PyReadonlyArray1<'_, f64>,
        scale: PyReadonlyArray1<'_, f64>,
        with_mean: bool,
        with_std: bool,
    ) -> PyResult<Self> {
        let mean = mean.as_array().to_owned();
        let scale = scale.as_array().to_owned();
        let d = mean.len();
        if scale.len() != d || d == 0 {
            return Err(PyValueError::new_err(format!(
                "mean and scale must have one length of at least 1, got {} and {}",
                d,
                scale.len()
            )));
        }
        let inner = Pipeline {
            options: PipelineOptions {
                center: with_mean,
                scale: with_std,
                pca: None,
                whitening: Whitening::None,
                convention: Convention::Sklearn,
                eps: None,
                solver: Default::default(),
            },
            standardizer: Some(gpuprep::Standardizer {
                var: scale.mapv(|s| s * s),
                mean,
                scale,
                with_mean,
                with_std,
                n_samples: 0,
            }),
            pca: None,
            state: PipelineState::new(d, false),
        };
        Ok(PyModel { inner })
    }

    /// The transform of `x` on `device`, in `x`'s dtype. `finite` says what
    /// `x` may hold: "all" refuses NaN and infinity (ValueError), "allow-nan"
    /// infinity only, "any" lets both propagate.
    #[pyo3(signature = (x, device, inverse=false, finite="all"))]
    fn transform<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        device: &str,
        inverse: bool,
        finite: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dev = self::device(py, device)?;
        let finite = Finite::of(finite)?;
        transform_rows(py, &self.inner, x, inverse, dev, finite)
    }

    /// Saves the model as the command line's `.npz` (atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let m = &self.inner;
        run(py, || m.save(&path))
    }

    /// Loads a model saved by `save` or by `gpuprep fit`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = run(py, || Pipeline::load(&path))?;
        Ok(PyModel { inner })
    }

    /// The model as `.npz` bytes (the file's contents).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let m = &self.inner;
        let bytes = run(py, || {
            let mut w = NpzWriter::new(Cursor::new(Vec::new()), std::path::Path::new("<model>"));
            m.write_npz(&mut w)?;
            Ok(w.finish()?.into_inner())
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The model of [`PyModel::to_bytes`] (or any saved model's bytes).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
        let inner = run(py, || {
            Pipeline::read_npz(&mut NpzReader::new(
                Cursor::new(data),
                std::path::Path::new("<model>"),
            )?)
        })?;
        Ok(PyModel { inner })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let bytes = slf.get().to_bytes(py)?;
        Ok((slf.getattr("from_bytes")?, PyTuple::new(py, [bytes])?))
    }

    /// A copy of the accumulated state.
    #[getter]
    fn state(&self) -> PyState {
        PyState {
            inner: self.inner.state.clone(),
        }
    }

    /// Input columns.
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    /// Output columns.
    #[getter]
    fn output_dim(&self) -> usize {
        self.inner.output_dim()
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(n_features={}, output_dim={}, n_samples={})",
            self.inner.n_features(),
            self.inner.output_dim(),
            self.inner.state.count()
        )
    }
}

type Moments<'py> = (
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

fn moments_out<'py>(py: Python<'py>, m: NanMoments) -> Moments<'py> {
    (
        m.count.into_pyarray(py),
        m.mean.into_pyarray(py),
        m.m2.into_pyarray(py),
    )
}

/// The NaN-skipping moments of `x` on `dev`, refusing infinity.
fn nan_moments_of<T: gpuprep::npy::NpyFloat>(
    x: ArrayView2<'_, T>,
    dev: Device<'_>,
) -> gpuprep::Result<NanMoments> {
    if let Device::Gpu(_) = dev {
        let mut s = PipelineState::try_new(x.ncols(), false)?;
        s.partial_fit_on(x, dev)?;
        if s.moments.mean.iter().all(|v| v.is_finite()) {
            return Ok(NanMoments::from_moments(&s.moments));
        }
        // NaN (or infinity) in the data: the GPU's statistics propagate it,
        // scikit-learn's skip NaN; the host path does.
    }
    let m = host::column_moments_skip_nan(x);
    // An infinity makes its column's mean infinite (or NaN, with both signs).
    if !m.mean.iter().all(|v| v.is_finite()) {
        if let Some(e) = refused(x, Finite::AllowNan) {
            return Err(e);
        }
    }
    Ok(m)
}

/// Per-column count, mean and M2 of the values of `x` that are not NaN
/// (scikit-learn's StandardScaler state), accumulated in f64 on `device`.
/// With `sample_weight` (one finite weight >= 0 per row) each value counts
/// with its row's weight and the counts are the weights, as float64; the
/// weighted moments run on the host whatever the device.
#[pyfunction]
#[pyo3(signature = (x, device, sample_weight=None))]
fn nan_moments<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    device: &str,
    sample_weight: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<AnyMoments<'py>> {
    let dev = self::device(py, device)?;
    let rows = Rows::of(x, "X")?;
    if let Some(w) = sample_weight {
        let w = w.as_array();
        let m = match rows {
            Rows::F32(a) => {
                let v = a.as_array();
                run(py, || host::column_moments_skip_nan_weighted(v, w))?
            }
            Rows::F64(a) => {
                let v = a.as_array();
                run(py, || host::column_moments_skip_nan_weighted(v, w))?
            }
        };
        return Ok(weighted_out(py, m));
    }
    let m = match rows {
        Rows::F32(a) => {
            let v = a.as_array();
            run(py, || nan_moments_of(v, dev))?
        }
        Rows::F64(a) => {
            let v = a.as_array();
            run(py, || nan_moments_of(v, dev))?
        }
    };
    let (c, m, q) = moments_out(py, m);
    Ok((c.into_any(), m, q))
}

/// Moments whose counts are uint64 (unweighted) or float64 (weights).
type AnyMoments<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

fn weighted_out<'py>(py: Python<'py>, m: WeightedMoments) -> AnyMoments<'py> {
    (
        m.weight.into_pyarray(py).into_any(),
        m.mean.into_pyarray(py),
        m.m2.into_pyarray(py),
    )
}

/// A 1-D array of scipy's index types, borrowed.
#[derive(FromPyObject)]
enum Indices<'py> {
    I32(PyReadonlyArray1<'py, i32>),
    I64(PyReadonlyArray1<'py, i64>),
}

/// A 1-D float32 or float64 array, borrowed.
#[derive(FromPyObject)]
enum Values<'py> {
    F32(PyReadonlyArray1<'py, f32>),
    F64(PyReadonlyArray1<'py, f64>),
}

/// The moments of a sparse CSR matrix (scipy's `indptr`, `indices` and
/// `data` of a matrix of `shape`, in canonical form), its unstored values
/// zeros, NaN disregarded, as `nan_moments`: counts as uint64 without
/// `sample_weight`, the weights as float64 with it. On the host, in
/// O(stored values + columns).
#[pyfunction]
#[pyo3(signature = (shape, indptr, indices, data, sample_weight=None))]
fn sparse_nan_moments<'py>(
    py: Python<'py>,
    shape: (usize, usize),
    indptr: Indices<'py>,
    indices: Indices<'py>,
    data: Values<'py>,
    sample_weight: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<AnyMoments<'py>> {
    let offsets = offsets(&indptr)?;
    let weights = sample_weight.as_ref().map(|w| w.as_array());
    let m = with_csr!(shape, &offsets, &indices, &data, |x| run(py, || {
        host::sparse_column_moments_skip_nan(x, weights)
    }))?;
    if sample_weight.is_some() {
        return Ok(weighted_out(py, m));
    }
    // Unit weights: the counts, exact (integers below 2^53).
    let count = m.weight.mapv(|c| c as u64);
    Ok((
        count.into_pyarray(py).into_any(),
        m.mean.into_pyarray(py),
        m.m2.into_pyarray(py),
    ))
}

/// A CSR matrix's row offsets as `usize`, refusing a negative one.
fn offsets(indptr: &Indices<'_>) -> PyResult<Vec<usize>> {
    match indptr {
        Indices::I32(a) => a
            .as_array()
            .iter()
            .map(|&p| usize::try_from(p).ok())
            .collect::<Option<Vec<usize>>>(),
        Indices::I64(a) => a
            .as_array()
            .iter()
            .map(|&p| usize::try_from(p).ok())
            .collect::<Option<Vec<usize>>>(),
    }
    .ok_or_else(|| PyValueError::new_err("indptr holds a negative offset"))
}

/// Counts as uint64 or weights as float64.
#[derive(FromPyObject)]
enum Counts<'py> {
    U64(PyReadonlyArray1<'py, u64>),
    F64(PyReadonlyArray1<'py, f64>),
}

type State<'py> = (
    Counts<'py>,
    PyReadonlyArray1<'py, f64>,
    PyReadonlyArray1<'py, f64>,
);

/// The merge of two NaN-skipping states `(count, mean, m2)`, each column by
/// Chan's formula over its own counts; counts of uint64 with counts of
/// uint64 stay counts, float64 weights on either side give weights.
#[pyfunction]
fn nan_moments_merge<'py>(py: Python<'py>, a: State<'py>, b: State<'py>) -> PyResult<AnyMoments<'py>> {
    if let (Counts::U64(ca), Counts::U64(cb)) = (&a.0, &b.0) {
        let own = |c: &PyReadonlyArray1<'py, u64>, t: &State<'py>| NanMoments {
            count: c.as_array().to_owned(),
            mean: t.1.as_array().to_owned(),
            m2: t.2.as_array().to_owned(),
        };
        let mut m = own(ca, &a);
        m.merge(&own(cb, &b)).map_err(to_py)?;
        let (c, m, q) = moments_out(py, m);
        return Ok((c.into_any(), m, q));
    }
    let own = |t: &State<'py>| WeightedMoments {
        weight: match &t.0 {
            Counts::U64(c) => c.as_array().mapv(|v| v as f64),
            Counts::F64(w) => w.as_array().to_owned(),
        },
        mean: t.1.as_array().to_owned(),
        m2: t.2.as_array().to_owned(),
    };
    let mut m = own(&a);
    m.merge(&own(&b)).map_err(to_py)?;
    Ok(weighted_out(py, m))
}

/// scikit-learn's scale of each column: the std, or 1 where the variance is
/// within rounding of 0 for the column's mean and count (NaN stays NaN).
#[pyfunction]
fn standard_scale<'py>(
    py: Python<'py>,
    var: PyReadonlyArray1<'py, f64>,
    mean: PyReadonlyArray1<'py, f64>,
    count: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (var, mean, count) = (var.as_array(), mean.as_array(), count.as_array());
    if mean.len() != var.len() || count.len() != var.len() {
        return Err(PyValueError::new_err("var, mean and count must have one length"));
    }
    let scale: ndarray::Array1<f64> = (0..var.len())
        .map(|c| gpuprep::model::standardize::column_scale_weighted(var[c].sqrt(), mean[c], count[c]))
        .collect();
    Ok(scale.into_pyarray(py))
}

/// An initialization scheme from its name and the parameters that apply to
/// it (the Python functions pass only those).
#[allow(clippy::too_many_arguments)]
fn scheme(
    name: &str,
    gain: Option<f64>,
    mode: &str,
    value: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    mean: f64,
    std: Option<f64>,
    sparsity: Option<f64>,
    connections: Option<usize>,
) -> PyResult<Scheme> {
    let mode = match mode {
        "fan_in" => FanMode::FanIn,
        "fan_out" => FanMode::FanOut,
        other => {
            return Err(PyValueError::new_err(format!(
                "mode must be \"fan_in\" or \"fan_out\", got {other:?}"
            )))
        }
    };
    let need = |v: Option<f64>, what: &str| {
        v.ok_or_else(|| PyValueError::new_err(format!("the {name} scheme needs {what}")))
    };
    Ok(match name {
        "zeros" => Scheme::Zeros,
        "constant" => Scheme::Constant {
            value: need(value, "a value")?,
        },
        "uniform" => Scheme::Uniform {
            low: low.unwrap_or(0.0),
            high: high.unwrap_or(1.0),
        },
        "normal" => Scheme::Normal {
            mean,
            std: std.unwrap_or(1.0),
        },
        "trunc_normal" => Scheme::TruncNormal {
            mean,
            std: std.unwrap_or(1.0),
            low: low.unwrap_or(-2.0),
            high: high.unwrap_or(2.0),
        },
        "xavier_uniform" => Scheme::XavierUniform {
            gain: gain.unwrap_or(1.0),
        },
        "xavier_normal" => Scheme::XavierNormal {
            gain: gain.unwrap_or(1.0),
        },
        "kaiming_uniform" => Scheme::KaimingUniform {
            gain: need(gain, "a gain")?,
            mode,
        },
        "kaiming_normal" => Scheme::KaimingNormal {
            gain: need(gain, "a gain")?,
            mode,
        },
        "sparse" => Scheme::Sparse {
            sparsity: need(sparsity, "a sparsity")?,
            std: std.unwrap_or(0.01),
        },
        "sparse_fixed" => Scheme::SparseFixed {
            connections: connections
                .ok_or_else(|| PyValueError::new_err("the sparse_fixed scheme needs connections"))?,
            std: std.unwrap_or(0.01),
        },
        "orthogonal" => Scheme::Orthogonal {
            gain: gain.unwrap_or(1.0),
        },
        "small_random" => Scheme::SmallRandom,
        "calibrated" => Scheme::Calibrated,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown initialization scheme {other:?}"
            )))
        }
    })
}

/// A tensor of `shape` initialized by `scheme` from Philox (`seed`,
/// `stream`), as float32, on `device`: the GPU's kernels, or the CPU's f64
/// computation rounded once. The generator's bits and U[0, 1) draws are
/// bit-identical on both; scaled and normal values agree to a few ulps.
#[pyfunction]
#[pyo3(signature = (shape, scheme, *, seed, device, stream=0, gain=None, mode="fan_in", value=None, low=None, high=None, mean=0.0, std=None, sparsity=None, connections=None))]
#[allow(clippy::too_many_arguments)]
fn init<'py>(
    py: Python<'py>,
    shape: Vec<usize>,
    scheme: &str,
    seed: u64,
    device: &str,
    stream: u64,
    gain: Option<f64>,
    mode: &str,
    value: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    mean: f64,
    std: Option<f64>,
    sparsity: Option<f64>,
    connections: Option<usize>,
) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
    let scheme = self::scheme(
        scheme,
        gain,
        mode,
        value,
        low,
        high,
        mean,
        std,
        sparsity,
        connections,
    )?;
    let dev = self::device(py, device)?;
    let rng = gpuprep::Philox::with_stream(seed, stream);
    let values = run(py, || -> gpuprep::Result<Vec<f32>> {
        match dev {
            Device::Gpu(g) => {
                let values = gpuprep::ops::init::init(g, &shape, &scheme, rng)?
                    .download(g)?
                    .into_raw_vec_and_offset()
                    .0;
                gpuprep::model::init::check_drawn_f32("init", &values)?;
                Ok(values)
            }
            Device::Cpu => {
                gpuprep::model::init::draw_to_f32("init", gpuprep::cpu::init::init(&shape, &scheme, rng)?)
            }
        }
    })?;
    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), values)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// PyTorch's `calculate_gain(nonlinearity, param)`.
#[pyfunction]
#[pyo3(signature = (nonlinearity, param=None))]
fn calculate_gain(nonlinearity: &str, param: Option<f64>) -> PyResult<f64> {
    gpuprep::model::init::calculate_gain(nonlinearity, param).map_err(to_py)
}

/// PyTorch's fans of a weight of `shape` (out, in, kernel...): (fan_in, fan_out).
#[pyfunction]
fn fans(shape: Vec<usize>) -> PyResult<(usize, usize)> {
    let f = gpuprep::model::init::fans(&shape).map_err(to_py)?;
    Ok((f.get(FanMode::FanIn), f.get(FanMode::FanOut)))
}

/// The module: `State`, `Model`, `GpuError` and the helpers above.
#[pymodule]
fn _gpuprep(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyState>()?;
    m.add_class::<PyModel>()?;
    m.add("GpuError", m.py().get_type::<GpuError>())?;
    m.add_function(wrap_pyfunction!(device_info, m)?)?;
    m.add_function(wrap_pyfunction!(device_error, m)?)?;
    m.add_function(wrap_pyfunction!(nan_moments, m)?)?;
    m.add_function(wrap_pyfunction!(nan_moments_merge, m)?)?;
    m.add_function(wrap_pyfunction!(sparse_nan_moments, m)?)?;
    m.add_function(wrap_pyfunction!(standard_scale, m)?)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(calculate_gain, m)?)?;
    m.add_function(wrap_pyfunction!(fans, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
