//! Fitted preprocessing pipelines: standardize (center and/or scale), then PCA
//! (a count of components, a fraction of variance, or all), then whitening
//! (none, PCA, ZCA), fitted once on training data and applied to new data, as
//! scikit-learn's `make_pipeline(StandardScaler(), PCA(whiten=...))` is.
//!
//! A fit is a [`PipelineState`] (mergeable: the column moments and, when a PCA
//! step is asked for, the co-moment matrix) turned into a [`Pipeline`] by
//! [`Pipeline::from_state`]. Standardize followed by PCA needs one pass over the
//! data: the covariance of standardized data is `D^-1 C D^-1` of the raw
//! covariance `C` (`D` the diagonal of the columns' scales), so the raw
//! moments are all a fit gathers. The state travels with the fitted model, so
//! models fitted on disjoint parts merge into the model of the union
//! ([`PipelineState::merge`]). The compute (on the CPU's fast path or the GPU,
//! in memory or streamed) is in [`crate::pipeline`]; this module is the data.
//!
//! Every step applies as one product or one elementwise pass:
//! ```text
//! standardize only:  y = (x - c) / d
//! with PCA:          y = ((x - (c + d * mu)) @ (diag(1/d) W)) * s
//! inverse:           x = y @ (V diag(d)) + (c + d * mu)      (or y * d + c without PCA)
//! ```
//! with `c` the centering (the mean, or 0), `d` the scales (the std, or 1),
//! `mu` the standardized data's mean, `W`, `s` and `V` the PCA model's
//! [`transform_parts`](PcaModel::transform_parts) and
//! [`inverse_parts`](PcaModel::inverse_parts).

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use ndarray::{Array0, Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::model::convention::Convention;
use crate::model::moments::{CoMoments, ColumnMoments};
use crate::model::pca::{npz_add, NComponents, PcaModel, PcaOptions, Whitening};
use crate::model::standardize::column_scale;

const OP: &str = "pipeline";

/// The `format_version` of a saved pipeline.
pub const FORMAT_VERSION: i64 = 1;

/// What a pipeline does. `Default`: center and scale (zero mean, unit
/// variance), no PCA, the lecture's convention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineOptions {
    /// Subtract each column's mean (scikit-learn's `with_mean`).
    pub center: bool,
    /// Divide each column by its standard deviation (`with_std`; a
    /// numerically constant column by 1).
    pub scale: bool,
    /// A PCA step after the standardization: how many components (`None`: no
    /// PCA step, unless `whitening` asks for one with all components).
    pub pca: Option<NComponents>,
    /// Whitening after the PCA rotation.
    pub whitening: Whitening,
    /// Whose rules the fit follows.
    pub convention: Convention,
    /// Added under whitening's square root; `None`: the convention's (1e-5 for
    /// the lecture; scikit-learn clips at machine epsilon instead).
    pub eps: Option<f64>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            center: true,
            scale: true,
            pca: None,
            whitening: Whitening::None,
            convention: Convention::Lecture,
            eps: None,
        }
    }
}

impl PipelineOptions {
    /// Whether the pipeline has a PCA step (asked for, or implied by whitening).
    pub fn has_pca(&self) -> bool {
        self.pca.is_some() || self.whitening != Whitening::None
    }

    /// The options of the PCA step, if any (with the convention's ddof and eps).
    pub fn pca_options(&self) -> Option<PcaOptions> {
        self.has_pca().then(|| {
            let mut o = PcaOptions::for_convention(self.convention);
            o.n_components = self.pca.unwrap_or(NComponents::All);
            o.whitening = self.whitening;
            if let Some(eps) = self.eps {
                o.eps = eps;
            }
            o
        })
    }

    /// Checks the options that do not depend on the data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a pipeline that does nothing, or bad PCA
    /// options.
    pub fn validate(&self) -> Result<()> {
        if !self.center && !self.scale && !self.has_pca() {
            return Err(Error::invalid(
                OP,
                "nothing to do: ask for centering, scaling, PCA or whitening",
            ));
        }
        if let Some(o) = self.pca_options() {
            o.validate()?;
        }
        Ok(())
    }
}

/// A fitted standardization (scikit-learn's `StandardScaler`): per column the
/// mean, the variance (`/ N`) and the scale it divides by.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Column means (`mean_`).
    pub mean: Array1<f64>,
    /// Column variances, `/ N` (`var_`).
    pub var: Array1<f64>,
    /// The divisors: the std, or 1 for a numerically constant column (`scale_`).
    pub scale: Array1<f64>,
    /// Whether the transform subtracts the mean (`with_mean`).
    pub with_mean: bool,
    /// Whether it divides by the scale (`with_std`).
    pub with_std: bool,
    /// Rows it was fitted on (`n_samples_seen_`).
    pub n_samples: usize,
}

impl Standardizer {
    /// The standardization of data with these moments.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty state; [`Error::NonFinite`] when
    /// a column's mean or variance is not finite (NaN or infinity in the data).
    pub fn from_moments(m: &ColumnMoments, with_mean: bool, with_std: bool) -> Result<Standardizer> {
        let s = m.finish(0)?;
        if let Some(c) = (0..s.mean.len()).find(|&c| !(s.mean[c].is_finite() && s.var[c].is_finite())) {
            return Err(Error::NonFinite {
                op: OP,
                location: format!(
                    "column {c} (its mean is {}, its variance {})",
                    s.mean[c], s.var[c]
                ),
            });
        }
        let scale = s
            .std
            .iter()
            .zip(&s.mean)
            .map(|(&sd, &mean)| column_scale(sd, mean, s.count))
            .collect();
        Ok(Standardizer {
            mean: s.mean,
            var: s.var,
            scale,
            with_mean,
            with_std,
            n_samples: s.count,
        })
    }

    /// Columns.
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// What the transform subtracts: the mean, or 0 without centering.
    pub fn offset(&self) -> Array1<f64> {
        if self.with_mean {
            self.mean.clone()
        } else {
            Array1::zeros(self.mean.len())
        }
    }

    /// What the transform divides by: the scale, or 1 without scaling.
    pub fn divisor(&self) -> Array1<f64> {
        if self.with_std {
            self.scale.clone()
        } else {
            Array1::ones(self.mean.len())
        }
    }
}

/// The mergeable state of a fit: the column moments, and the co-moment matrix
/// when the pipeline has a PCA step.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineState {
    /// Count, mean, M2, min and max per column.
    pub moments: ColumnMoments,
    /// Count, mean and `sum (x - mean)(x - mean)^T`, for a PCA step.
    pub comoments: Option<CoMoments>,
}

impl PipelineState {
    /// The empty state of `d` columns, with co-moments when `pca`. With a
    /// PCA step it holds a `D x D` f64 matrix: [`PipelineState::try_new`]
    /// checks first that the memory is there.
    pub fn new(d: usize, pca: bool) -> PipelineState {
        PipelineState {
            moments: ColumnMoments::new(d),
            comoments: pca.then(|| CoMoments::new(d)),
        }
    }

    /// [`PipelineState::new`], refusing a state that does not fit in the
    /// memory the system has (a PCA step on a data set of 200,000 columns
    /// would need 320 GB for its `D x D` matrix).
    ///
    /// # Errors
    /// [`Error::ExceedsLimit`] for such a state.
    pub fn try_new(d: usize, pca: bool) -> Result<PipelineState> {
        let d2 = if pca { (d as u128) * (d as u128) } else { 0 };
        crate::cpu::alloc::check_bytes("pipeline state", 8 * (d2 + 8 * d as u128))?;
        Ok(PipelineState::new(d, pca))
    }

    /// Columns.
    pub fn dim(&self) -> usize {
        self.moments.dim()
    }

    /// Rows accumulated.
    pub fn count(&self) -> u64 {
        self.moments.count
    }

    /// Merges the state of disjoint rows of the same columns into this one:
    /// the state of the union, to rounding.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for states of other columns, or one with
    /// co-moments and one without.
    pub fn merge(&mut self, other: &PipelineState) -> Result<()> {
        if other.dim() != self.dim() {
            return Err(Error::shape(
                OP,
                format!("a state of {} columns", self.dim()),
                format!("{} columns", other.dim()),
            ));
        }
        match (&mut self.comoments, &other.comoments) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, None) => {}
            _ => return Err(Error::invalid(
                OP,
                "one state has a PCA step's co-moments and the other has not: fit both with the same steps",
            )),
        }
        self.moments.merge(&other.moments)
    }
}

/// A fitted pipeline (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// What it does.
    pub options: PipelineOptions,
    /// The standardization step, when it centers or scales.
    pub standardizer: Option<Standardizer>,
    /// The PCA step, fitted on the standardized data.
    pub pca: Option<PcaModel>,
    /// What the fit accumulated (for merges with other fits).
    pub state: PipelineState,
}

/// The forward or inverse transform as one operation.
#[derive(Clone, Debug, PartialEq)]
pub enum TransformParts {
    /// `y = (x - center) * inv_scale + bias`, per column.
    Elementwise {
        /// Subtracted from each column (length `D`).
        center: Array1<f64>,
        /// Multiplies each centered column (length `D`).
        inv_scale: Array1<f64>,
        /// Added last (length `D`), if any.
        bias: Option<Array1<f64>>,
    },
    /// `y = ((x - center) @ w) * scale + bias`.
    Product {
        /// Subtracted from each row of `x` (length `K`), if any.
        center: Option<Array1<f64>>,
        /// `K x M`.
        w: Array2<f64>,
        /// Multiplies column `j` of the product (length `M`), if any.
        scale: Option<Array1<f64>>,
        /// Added to column `j` (length `M`), if any.
        bias: Option<Array1<f64>>,
    },
}

impl Pipeline {
    /// Fits the pipeline from an accumulated state.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad options or a state without the
    /// co-moments a PCA step needs; [`Error::NonFinite`] for non-finite data;
    /// the PCA step's errors (too few rows for ddof, too many components under
    /// scikit-learn's convention, ...).
    pub fn from_state(state: PipelineState, options: &PipelineOptions) -> Result<Pipeline> {
        options.validate()?;
        let d = state.dim();
        if d == 0 || state.count() == 0 {
            return Err(Error::shape(
                OP,
                "at least 1 row and 1 column",
                format!("{} x {d}", state.count()),
            ));
        }
        let standardizer = if options.center || options.scale {
            Some(Standardizer::from_moments(
                &state.moments,
                options.center,
                options.scale,
            )?)
        } else {
            None
        };
        let pca = match options.pca_options() {
            None => None,
            Some(po) => {
                let co = state.comoments.as_ref().ok_or_else(|| {
                    Error::invalid(OP, "a PCA step needs the co-moments, and this state has none")
                })?;
                let n = co.count as usize;
                if n <= po.ddof {
                    return Err(Error::invalid(
                        OP,
                        format!("ddof = {} needs more than {} rows, got {n}", po.ddof, po.ddof),
                    ));
                }
                let raw = co.covariance(po.ddof)?;
                if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        op: OP,
                        location: format!("column {} (non-finite data)", i % d),
                    });
                }
                // Standardized data z = (x - c) / d: mean (mean - c) / d,
                // covariance D^-1 C D^-1.
                let (c, dv) = match &standardizer {
                    Some(s) => (s.offset(), s.divisor()),
                    None => (Array1::zeros(d), Array1::ones(d)),
                };
                let mean_z = (&co.mean - &c) / &dv;
                let inv = dv.mapv(|v| 1.0 / v);
                let cov_z = Array2::from_shape_fn((d, d), |(i, j)| raw[[i, j]] * inv[i] * inv[j]);
                Some(PcaModel::from_covariance(mean_z, cov_z.view(), n, &po)?)
            }
        };
        Ok(Pipeline {
            options: *options,
            standardizer,
            pca,
            state,
        })
    }

    /// Input columns `D`.
    pub fn n_features(&self) -> usize {
        self.state.dim()
    }

    /// Output columns: the PCA step's output, else `D`.
    pub fn output_dim(&self) -> usize {
        self.pca.as_ref().map_or(self.n_features(), PcaModel::output_dim)
    }

    fn offset_divisor(&self) -> (Array1<f64>, Array1<f64>) {
        let d = self.n_features();
        match &self.standardizer {
            Some(s) => (s.offset(), s.divisor()),
            None => (Array1::zeros(d), Array1::ones(d)),
        }
    }

    /// The forward transform as one operation (see the [module docs](self)).
    pub fn transform_parts(&self) -> TransformParts {
        let (c, dv) = self.offset_divisor();
        match &self.pca {
            None => TransformParts::Elementwise {
                center: c,
                inv_scale: dv.mapv(|v| 1.0 / v),
                bias: None,
            },
            Some(p) => {
                let (w, scale) = p.transform_parts();
                let center = &c + &(&dv * &p.mean);
                let mut w2 = w;
                for (mut row, &di) in w2.rows_mut().into_iter().zip(&dv) {
                    row.mapv_inplace(|v| v / di);
                }
                TransformParts::Product {
                    center: Some(center),
                    w: w2,
                    scale,
                    bias: None,
                }
            }
        }
    }

    /// The inverse transform as one operation: exact with all components, the
    /// projection onto the kept components otherwise.
    pub fn inverse_parts(&self) -> TransformParts {
        let (c, dv) = self.offset_divisor();
        match &self.pca {
            None => TransformParts::Elementwise {
                center: Array1::zeros(dv.len()),
                inv_scale: dv,
                bias: Some(c),
            },
            Some(p) => {
                let mut v = p.inverse_parts();
                for (j, mut col) in v.columns_mut().into_iter().enumerate() {
                    col.mapv_inplace(|x| x * dv[j]);
                }
                TransformParts::Product {
                    center: None,
                    w: v,
                    scale: None,
                    bias: Some(&c + &(&dv * &p.mean)),
                }
            }
        }
    }

    /// Saves the pipeline as one `.npz` readable by `numpy.load` (stored, as
    /// numpy's `savez`: deflate saved 4% of a D = 3072 model's 151 MB and took
    /// 2.5 s):
    /// `format_version` (1), `kind` ("pipeline" as the i64 1), the options
    /// (`center`, `scale`, `whitening`, `convention` as i64, `n_components`
    /// as an i64 count (-1 all, 0 none) and `variance_fraction` (f64, 0 when
    /// a count), `eps` (f64, NaN for the convention's)), the standardizer
    /// (`scaler_mean`, `scaler_var`, `scaler_scale`), the PCA step under
    /// `pca_` (the names of [`PcaModel::save`]), and the state (`state_count`,
    /// `state_mean`, `state_m2`, `state_min`, `state_max`, and
    /// `state_co_count`, `state_co_mean`, `state_co_comoment` with a PCA step).
    /// Written atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            let mut npz = NpzWriter::new(w);
            self.write_npz(&mut npz, path)?;
            npz.finish().map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })?;
            Ok(())
        })
    }

    /// Adds the pipeline's arrays (the names of [`Pipeline::save`]) to an open `.npz`.
    pub fn write_npz<W: std::io::Write + Seek>(&self, npz: &mut NpzWriter<W>, path: &Path) -> Result<()> {
        let i = |v: i64| Array0::from_elem((), v);
        let f = |v: f64| Array0::from_elem((), v);
        let o = &self.options;
        npz_add(npz, path, "format_version", &i(FORMAT_VERSION))?;
        npz_add(npz, path, "kind", &i(1))?;
        npz_add(npz, path, "center", &i(o.center as i64))?;
        npz_add(npz, path, "scale", &i(o.scale as i64))?;
        npz_add(npz, path, "whitening", &i(o.whitening.code()))?;
        npz_add(npz, path, "convention", &i(o.convention.code()))?;
        let (count, fraction) = match o.pca {
            None => (0, 0.0),
            Some(NComponents::All) => (-1, 0.0),
            Some(NComponents::Count(k)) => (k as i64, 0.0),
            Some(NComponents::Fraction(fr)) => (0, fr),
        };
        npz_add(npz, path, "n_components", &i(count))?;
        npz_add(npz, path, "variance_fraction", &f(fraction))?;
        npz_add(npz, path, "eps", &f(o.eps.unwrap_or(f64::NAN)))?;
        if let Some(s) = &self.standardizer {
            npz_add(npz, path, "scaler_mean", &s.mean)?;
            npz_add(npz, path, "scaler_var", &s.var)?;
            npz_add(npz, path, "scaler_scale", &s.scale)?;
        }
        if let Some(p) = &self.pca {
            p.write_npz(npz, "pca_", path)?;
        }
        self.state.moments.save_npz(npz, "state_")?;
        if let Some(c) = &self.state.comoments {
            c.save_npz(npz, "state_co_")?;
        }
        Ok(())
    }

    /// Loads a pipeline written by [`Pipeline::save`]; a PCA model written by
    /// [`PcaModel::save`] loads as a pipeline of that one step (no state, so it
    /// cannot be merged). Shapes are checked against each other and values
    /// for finiteness.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Parse`] for anything
    /// malformed or inconsistent.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let bad = |reason: String| Error::Parse {
            path: path.to_path_buf(),
            line: None,
            reason,
        };
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut npz =
            NpzReader::new(BufReader::new(file)).map_err(|e| bad(format!("not an .npz file: {e}")))?;
        let names = npz.names().map_err(|e| bad(format!("not an .npz file: {e}")))?;
        let has = |n: &str| names.iter().any(|m| m == n || m == &format!("{n}.npy"));
        if !has("kind") {
            // A PCA model on its own.
            let pca = PcaModel::read_npz(&mut npz, "", path)?;
            let d = pca.n_features();
            return Ok(Pipeline {
                options: PipelineOptions {
                    center: false,
                    scale: false,
                    pca: Some(NComponents::Count(pca.n_components())),
                    whitening: pca.whitening,
                    convention: pca.convention,
                    eps: Some(pca.eps),
                },
                standardizer: None,
                pca: Some(pca),
                state: PipelineState::new(d, false),
            });
        }
        let i = |npz: &mut NpzReader<BufReader<File>>, n: &str| -> Result<i64> {
            let a: Array0<i64> = npz.by_name(n).map_err(|e| bad(format!("array {n:?}: {e}")))?;
            Ok(a.into_scalar())
        };
        let f = |npz: &mut NpzReader<BufReader<File>>, n: &str| -> Result<f64> {
            let a: Array0<f64> = npz.by_name(n).map_err(|e| bad(format!("array {n:?}: {e}")))?;
            Ok(a.into_scalar())
        };
        let version = i(&mut npz, "format_version")?;
        if version != FORMAT_VERSION || i(&mut npz, "kind")? != 1 {
            return Err(bad(format!(
                "a pipeline of format_version {version}: this gpuprep reads {FORMAT_VERSION}"
            )));
        }
        let flag = |v: i64, n: &str| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(bad(format!("{n} must be 0 or 1, got {v}"))),
        };
        let center = flag(i(&mut npz, "center")?, "center")?;
        let scale = flag(i(&mut npz, "scale")?, "scale")?;
        let wcode = i(&mut npz, "whitening")?;
        let whitening = Whitening::from_code(wcode).ok_or_else(|| bad(format!("whitening code {wcode}")))?;
        let ccode = i(&mut npz, "convention")?;
        let convention =
            Convention::from_code(ccode).ok_or_else(|| bad(format!("convention code {ccode}")))?;
        let count = i(&mut npz, "n_components")?;
        let fraction = f(&mut npz, "variance_fraction")?;
        let pca = match (count, fraction) {
            (0, 0.0) => None,
            (0, fr) => Some(NComponents::Fraction(fr)),
            (-1, _) => Some(NComponents::All),
            (k, _) if k > 0 => Some(NComponents::Count(k as usize)),
            (k, _) => return Err(bad(format!("n_components {k}"))),
        };
        let eps = f(&mut npz, "eps")?;
        let options = PipelineOptions {
            center,
            scale,
            pca,
            whitening,
            convention,
            eps: (!eps.is_nan()).then_some(eps),
        };
        options.validate().map_err(|e| bad(format!("bad options: {e}")))?;
        let moments = ColumnMoments::load_npz(&mut npz, "state_").map_err(|e| bad(e.to_string()))?;
        let comoments = if options.has_pca() {
            Some(CoMoments::load_npz(&mut npz, "state_co_").map_err(|e| bad(e.to_string()))?)
        } else {
            None
        };
        let state = PipelineState { moments, comoments };
        let d = state.dim();
        let standardizer = if center || scale {
            let mut get = |n: &str| -> Result<Array1<f64>> {
                let a: Array1<f64> = npz.by_name(n).map_err(|e| bad(format!("array {n:?}: {e}")))?;
                if a.len() != d || !a.iter().all(|v| v.is_finite()) {
                    return Err(bad(format!("{n} must be {d} finite values")));
                }
                Ok(a)
            };
            let (mean, var, scale_) = (get("scaler_mean")?, get("scaler_var")?, get("scaler_scale")?);
            if scale_.iter().any(|&v| v <= 0.0) || var.iter().any(|&v| v < 0.0) {
                return Err(bad(
                    "scaler_scale must be positive and scaler_var non-negative".into()
                ));
            }
            Some(Standardizer {
                mean,
                var,
                scale: scale_,
                with_mean: center,
                with_std: scale,
                n_samples: state.count() as usize,
            })
        } else {
            None
        };
        let pca = if options.has_pca() {
            let p = PcaModel::read_npz(&mut npz, "pca_", path)?;
            if p.n_features() != d {
                return Err(bad(format!(
                    "the PCA step has {} features, the state {d}",
                    p.n_features()
                )));
            }
            Some(p)
        } else {
            None
        };
        Ok(Pipeline {
            options,
            standardizer,
            pca,
            state,
        })
    }
}
