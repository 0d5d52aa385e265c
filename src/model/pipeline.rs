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

use std::io::{Read, Seek};
use std::path::Path;

use ndarray::{Array1, Array2, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::model::convention::Convention;
use crate::model::moments::{CoMoments, ColumnMoments};
use crate::model::pca::{
    read_convention, read_whitening, Layout, NComponents, PcaModel, PcaOptions, Solver, Whitening,
    PCA_FORMAT, PCA_FORMAT_VERSION,
};
use crate::model::standardize::column_scale;
use crate::npz::{NpzReader, NpzWriter};

const OP: &str = "pipeline";

/// The `format_version` [`Pipeline::save`] writes.
pub const FORMAT_VERSION: i64 = 2;

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
    /// The PCA step's eigensolver (how the model is computed, not what it
    /// is: not saved with the model; a loaded model says [`Solver::Auto`], and
    /// a merge refits with it).
    pub solver: Solver,
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
            solver: Solver::Auto,
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
            o.solver = self.solver;
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
/// when the pipeline has a PCA step; the columns' names where the data had
/// them; and the identities of the fits merged into it, so that one fit
/// merged twice (its rows counted twice) is refused.
///
/// Two states are equal (`==`) when their statistics and names are: the fit
/// identities say where a state came from, not what it is.
#[derive(Clone, Debug)]
pub struct PipelineState {
    /// Count, mean, M2, min and max per column.
    pub moments: ColumnMoments,
    /// Count, mean and `sum (x - mean)(x - mean)^T`, for a PCA step.
    pub comoments: Option<CoMoments>,
    /// The columns' names (a CSV header, a DataFrame's columns), if known.
    pub feature_names: Option<Vec<String>>,
    /// Random identities of the fits merged into this state (sorted, one per
    /// fit; empty until [`Pipeline::from_state`] gives a fit its own).
    pub fit_ids: Vec<u64>,
}

impl PartialEq for PipelineState {
    fn eq(&self, other: &Self) -> bool {
        self.moments == other.moments
            && self.comoments == other.comoments
            && self.feature_names == other.feature_names
    }
}

/// A fresh random identity for a fit (the time, the process and a counter,
/// through the standard library's randomly keyed hasher).
fn fresh_fit_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

impl PipelineState {
    /// The empty state of `d` columns, with co-moments when `pca`. With a
    /// PCA step it holds a `D x D` f64 matrix: [`PipelineState::try_new`]
    /// checks first that the memory is there.
    pub fn new(d: usize, pca: bool) -> PipelineState {
        PipelineState {
            moments: ColumnMoments::new(d),
            comoments: pca.then(|| CoMoments::new(d)),
            feature_names: None,
            fit_ids: Vec::new(),
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
        crate::alloc::check_bytes("pipeline state", 8 * (d2 + 8 * d as u128))?;
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
    /// the state of the union, to rounding. An empty state without names
    /// takes the other's names.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for states of other columns;
    /// [`Error::InvalidArgument`] for one with co-moments and one without,
    /// columns of other names, a fit already merged into this state (its rows
    /// would count twice), or counts whose sum overflows.
    pub fn merge(&mut self, other: &PipelineState) -> Result<()> {
        self.merge_with(other, None)
    }

    /// [`PipelineState::merge`] of a state the caller no longer needs: into
    /// an empty state, its co-moments move instead of being copied (the
    /// first chunk of a fit: a `D x D` matrix).
    ///
    /// # Errors
    /// As [`PipelineState::merge`].
    pub fn merge_owned(&mut self, mut other: PipelineState) -> Result<()> {
        let co = other.comoments.take();
        self.merge_with(&other, co)
    }

    /// `merge`, with `other`'s co-moments given apart when `owned` is `Some`.
    fn merge_with(&mut self, other: &PipelineState, owned: Option<CoMoments>) -> Result<()> {
        let other_has_co = other.comoments.is_some() || owned.is_some();
        if other.dim() != self.dim() {
            return Err(Error::shape(
                OP,
                format!("a state of {} columns", self.dim()),
                format!("{} columns", other.dim()),
            ));
        }
        match (self.comoments.is_some(), other_has_co) {
            (true, true) | (false, false) => {}
            _ => return Err(Error::invalid(
                OP,
                "one state has a PCA step's co-moments and the other has not: fit both with the same steps",
            )),
        }
        if let Some(id) = self
            .fit_ids
            .iter()
            .find(|i| other.fit_ids.binary_search(i).is_ok())
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "both states hold the fit {id:016x}: the same fit merged twice would count its rows twice"
                ),
            ));
        }
        // Counts are saved as int64 (numpy's integer): the sum must fit it.
        if self
            .count()
            .checked_add(other.count())
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "the merged row count {} + {} overflows (a model holds at most {} rows)",
                    self.count(),
                    other.count(),
                    i64::MAX
                ),
            ));
        }
        let names = match (&self.feature_names, &other.feature_names) {
            (a, b) if a == b => a.clone(),
            (None, b) if self.count() == 0 => b.clone(),
            (a, None) if other.count() == 0 => a.clone(),
            (Some(a), Some(b)) => {
                let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
                return Err(Error::invalid(
                    OP,
                    format!(
                        "the states' columns have other names (column {i}: {:?} and {:?})",
                        a.get(i).map_or("", String::as_str),
                        b.get(i).map_or("", String::as_str)
                    ),
                ));
            }
            _ => return Err(Error::invalid(
                OP,
                "one state has feature names and the other has not: fit both from data with the same columns",
            )),
        };
        match (&mut self.comoments, owned, &other.comoments) {
            (Some(a), Some(b), _) => a.merge_owned(b)?,
            (Some(a), None, Some(b)) => a.merge(b)?,
            _ => {}
        }
        self.moments.merge(&other.moments)?;
        self.feature_names = names;
        self.fit_ids.extend_from_slice(&other.fit_ids);
        self.fit_ids.sort_unstable();
        self.fit_ids.dedup();
        Ok(())
    }

    /// Checks that the parts of the state agree with each other: the
    /// co-moments count the same rows as the column moments and have their
    /// width, the names (if any) name every column.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what disagrees.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim();
        if let Some(c) = &self.comoments {
            if c.dim() != d || c.comoment.dim() != (d, d) {
                return Err(Error::invalid(
                    OP,
                    format!("co-moments of {} columns in a state of {d}", c.dim()),
                ));
            }
            if c.count != self.moments.count {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "the co-moments count {} rows and the column moments {}",
                        c.count, self.moments.count
                    ),
                ));
            }
        }
        if let Some(n) = &self.feature_names {
            if n.len() != d {
                return Err(Error::invalid(
                    OP,
                    format!("{} feature names for {d} columns", n.len()),
                ));
            }
        }
        Ok(())
    }
}

impl PipelineState {
    /// Writes the state into an open `.npz`, each name behind `prefix`:
    /// `count`, `mean`, `m2`, `min`, `max`, with co-moments `co_count`,
    /// `co_mean`, `co_comoment`, and `fit_ids` (the names a saved pipeline
    /// has behind `state_`; its `feature_names_in` are the pipeline's).
    ///
    /// # Errors
    /// [`Error::Io`] when the writer fails.
    pub fn write_npz<W: std::io::Write + Seek>(&self, npz: &mut NpzWriter<W>, prefix: &str) -> Result<()> {
        self.moments.save_npz(npz, prefix)?;
        if let Some(c) = &self.comoments {
            c.save_npz(npz, &format!("{prefix}co_"))?;
        }
        npz.u64s(&format!("{prefix}fit_ids"), &self.fit_ids)
    }

    /// Reads a state written by [`PipelineState::write_npz`] (of `d` columns
    /// where given), with the checks of [`PipelineState::validate`]; names
    /// are the caller's to set.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the array that is missing, malformed or
    /// inconsistent.
    pub fn read_npz<R: Read + Seek>(npz: &mut NpzReader<R>, prefix: &str, d: Option<usize>) -> Result<Self> {
        let moments = ColumnMoments::load_npz(npz, prefix, d)?;
        let co = format!("{prefix}co_");
        let comoments = if npz.has(&format!("{co}count")) {
            Some(CoMoments::load_npz(npz, &co, Some(moments.dim()))?)
        } else {
            None
        };
        let mut fit_ids = npz.u64s(&format!("{prefix}fit_ids"))?;
        fit_ids.sort_unstable();
        fit_ids.dedup();
        let state = PipelineState {
            moments,
            comoments,
            feature_names: None,
            fit_ids,
        };
        state.validate().map_err(|e| npz.bad(&format!("{co}count"), e))?;
        Ok(state)
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
        state.validate()?;
        // Whitening without a count keeps every component: say so, so the
        // options read back from a saved model are the ones fitted.
        let mut options = *options;
        if options.pca.is_none() && options.whitening != Whitening::None {
            options.pca = Some(NComponents::All);
        }
        let options = &options;
        let mut state = state;
        if state.fit_ids.is_empty() {
            state.fit_ids.push(fresh_fit_id());
        }
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
                        format!(
                            "ddof = {} needs more than {} rows, got n_samples = {n}",
                            po.ddof, po.ddof
                        ),
                    ));
                }
                // Standardized data z = (x - c) / d: mean (mean - c) / d,
                // covariance D^-1 C D^-1.
                let (c, dv) = match &standardizer {
                    Some(s) => (s.offset(), s.divisor()),
                    None => (Array1::zeros(d), Array1::ones(d)),
                };
                let mean_z = (&co.mean - &c) / &dv;
                let inv = dv.mapv(|v| 1.0 / v);
                match topk_from_comoments(co, &po, &mean_z, &inv)? {
                    Some(model) => Some(model),
                    None => {
                        let cov_z = scaled_covariance(co, po.ddof, &inv)?;
                        // Where the top-k solver was tried and auto gave up
                        // on it: the full eigendecomposition, not a second try.
                        let po = match crate::model::pca::takes_topk(d, &po) {
                            true => PcaOptions {
                                solver: Solver::Full,
                                ..po
                            },
                            false => po,
                        };
                        Some(PcaModel::from_covariance(mean_z, cov_z.view(), n, &po)?)
                    }
                }
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

    /// The steps' widths agree: the standardizer's offsets and divisors and
    /// the PCA step's mean, all of `n_features` (public fields a caller may
    /// have changed). The PCA model's own fields are checked by its parts.
    fn check_steps(&self, c: &Array1<f64>, dv: &Array1<f64>) -> Result<()> {
        let d = self.n_features();
        let pca = self.pca.as_ref().map_or(d, |p| p.mean.len());
        if c.len() != d || dv.len() != d || pca != d {
            return Err(Error::shape(
                OP,
                format!("steps of the pipeline's {d} features"),
                format!(
                    "a standardizer of {} offsets and {} divisors, a PCA step of {pca} features",
                    c.len(),
                    dv.len()
                ),
            ));
        }
        Ok(())
    }

    fn offset_divisor(&self) -> (Array1<f64>, Array1<f64>) {
        let d = self.n_features();
        match &self.standardizer {
            Some(s) => (s.offset(), s.divisor()),
            None => (Array1::zeros(d), Array1::ones(d)),
        }
    }

    /// The forward transform as one operation (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for public fields that no longer agree (a
    /// standardizer or PCA step of another width; see
    /// [`crate::model::pca::PcaModel::check_consistent`]).
    pub fn transform_parts(&self) -> Result<TransformParts> {
        let (c, dv) = self.offset_divisor();
        self.check_steps(&c, &dv)?;
        Ok(match &self.pca {
            None => TransformParts::Elementwise {
                center: c,
                inv_scale: dv.mapv(|v| 1.0 / v),
                bias: None,
            },
            Some(p) => {
                let (w, scale) = p.transform_parts()?;
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
        })
    }

    /// The inverse transform as one operation: exact with all components, the
    /// projection onto the kept components otherwise.
    ///
    /// # Errors
    /// As [`Pipeline::transform_parts`].
    pub fn inverse_parts(&self) -> Result<TransformParts> {
        let (c, dv) = self.offset_divisor();
        self.check_steps(&c, &dv)?;
        Ok(match &self.pca {
            None => TransformParts::Elementwise {
                center: Array1::zeros(dv.len()),
                inv_scale: dv,
                bias: Some(c),
            },
            Some(p) => {
                let mut v = p.inverse_parts()?;
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
        })
    }

    /// Saves the pipeline as one `.npz` readable by `numpy.load` (stored, as
    /// numpy's `savez`: deflate saved 4% of a D = 3072 model's 151 MB and
    /// took 2.5 s), written atomically. Every array is named for what it is
    /// (see [`Pipeline::write_npz`] and the README's key table): strings for
    /// the enums, the count of components kept, components in
    /// scikit-learn's `k x D` layout, no sentinel values.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            let mut npz = NpzWriter::new(w, path);
            self.write_npz(&mut npz)?;
            npz.finish()?;
            Ok(())
        })
    }

    /// Adds the pipeline's arrays to an open `.npz`:
    ///
    /// - `format` ("gpuprep.pipeline"), `format_version` (2);
    /// - `n_features_in`, and `feature_names_in` where the data had names;
    /// - the options: `center`, `scale` (bools), `whitening` ("none", "pca",
    ///   "zca"), `convention` ("lecture", "sklearn", "pytorch"); with a PCA
    ///   step `n_components` (the count kept) and what was asked for:
    ///   `n_components_requested` (a count) or `variance_fraction_requested`
    ///   (a fraction), neither for all components; `eps` only when set (else
    ///   the convention's);
    /// - the standardizer: `scaler_mean`, `scaler_var`, `scaler_scale`;
    /// - the PCA step, fitted on the standardized data, under `pca_` (the
    ///   names of [`PcaModel::write_npz`]);
    /// - the state: `state_count`, `state_mean`, `state_m2`, `state_min`,
    ///   `state_max`, with a PCA step `state_co_count`, `state_co_mean`,
    ///   `state_co_comoment`, and `state_fit_ids`.
    ///
    /// # Errors
    /// [`Error::Io`] when the writer fails.
    pub fn write_npz<W: std::io::Write + Seek>(&self, npz: &mut NpzWriter<W>) -> Result<()> {
        let o = &self.options;
        npz.str("format", FORMAT)?;
        npz.i64("format_version", FORMAT_VERSION)?;
        npz.i64("n_features_in", self.n_features() as i64)?;
        if let Some(names) = &self.state.feature_names {
            npz.strs("feature_names_in", names)?;
        }
        npz.bool("center", o.center)?;
        npz.bool("scale", o.scale)?;
        npz.str("whitening", o.whitening.name())?;
        npz.str("convention", o.convention.name())?;
        if let Some(p) = &self.pca {
            npz.i64("n_components", p.n_components() as i64)?;
        }
        match o.pca {
            Some(NComponents::Count(k)) => npz.i64("n_components_requested", k as i64)?,
            Some(NComponents::Fraction(f)) => npz.f64("variance_fraction_requested", f)?,
            Some(NComponents::All) | None => {}
        }
        if let Some(eps) = o.eps {
            npz.f64("eps", eps)?;
        }
        if let Some(s) = &self.standardizer {
            npz.f64s("scaler_mean", &s.mean)?;
            npz.f64s("scaler_var", &s.var)?;
            npz.f64s("scaler_scale", &s.scale)?;
        }
        if let Some(p) = &self.pca {
            p.write_npz(npz, "pca_")?;
        }
        self.state.write_npz(npz, "state_")
    }

    /// Loads a pipeline written by [`Pipeline::save`] (format version 2, or
    /// version 1 with integer codes); a PCA model written by
    /// [`PcaModel::save`] loads as a pipeline of that one step (no state, so
    /// it cannot be merged). Every array's shape is checked before it is
    /// read, values for finiteness, and the parts against each other (the
    /// standardizer against the state's moments, the PCA step's rows against
    /// the state's).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Parse`] naming the
    /// file and the array for anything malformed or inconsistent, or a
    /// format this gpuprep does not read.
    pub fn load(path: &Path) -> Result<Pipeline> {
        Pipeline::read_npz(&mut NpzReader::open(path)?)
    }

    /// [`Pipeline::load`] from an open archive (a file, or bytes in memory).
    ///
    /// # Errors
    /// As [`Pipeline::load`].
    pub fn read_npz<R: Read + Seek>(npz: &mut NpzReader<R>) -> Result<Pipeline> {
        if npz.has("format") {
            let format = npz.str("format")?;
            let version = npz.i64("format_version")?;
            return match (format.as_str(), version) {
                (FORMAT, FORMAT_VERSION) => read_current(npz),
                (PCA_FORMAT, PCA_FORMAT_VERSION) => {
                    Ok(Pipeline::of_pca(PcaModel::read_npz(npz, "", Layout::Current)?))
                }
                (f, v) => Err(npz.bad(
                    "format",
                    format!(
                        "{f:?} version {v}: this gpuprep reads {FORMAT:?} versions 1 to {FORMAT_VERSION} \
                         and {PCA_FORMAT:?} versions 1 to {PCA_FORMAT_VERSION} (a newer gpuprep wrote it?)"
                    ),
                )),
            };
        }
        if !npz.has("kind") {
            // A PCA model on its own, of format version 1 or 2.
            return Ok(Pipeline::of_pca(PcaModel::read_npz(npz, "", Layout::Coded)?));
        }
        read_v1(npz)
    }

    /// A pipeline of one PCA step, without a state.
    fn of_pca(pca: PcaModel) -> Pipeline {
        let d = pca.n_features();
        Pipeline {
            options: PipelineOptions {
                center: false,
                scale: false,
                pca: Some(NComponents::Count(pca.n_components())),
                whitening: pca.whitening,
                convention: pca.convention,
                eps: Some(pca.eps),
                solver: Solver::Auto,
            },
            standardizer: None,
            pca: Some(pca),
            state: PipelineState::new(d, false),
        }
    }
}

/// The `format` of a saved pipeline.
pub const FORMAT: &str = "gpuprep.pipeline";

/// The PCA step by the top-k solver where the options take it, its products
/// taken with the co-moment matrix and scaled on the fly (`D^-1 C D^-1`,
/// `C = comoment / (count - ddof)`; see [`scaled_covariance`]): no second
/// `D x D` matrix is formed (at `D = 4096` forming one cost about a tenth of
/// a fit, most of it the first touch of 128 MB). `None` where the options
/// take the full solver, or where auto gives up on the top-k one.
///
/// # Errors
/// As [`scaled_covariance`] for non-finite co-moments, and as
/// [`PcaModel::from_product`].
fn topk_from_comoments(
    co: &CoMoments,
    po: &PcaOptions,
    mean_z: &Array1<f64>,
    inv: &Array1<f64>,
) -> Result<Option<PcaModel>> {
    let d = co.dim();
    if !crate::model::pca::takes_topk(d, po) {
        return Ok(None);
    }
    let dof = co.divisor(po.ddof)?;
    // dof >= 1, so an entry divided by it is finite exactly where it is.
    if let Some((_, j)) = crate::model::pca::first_non_finite_entry(co.comoment.view()) {
        return Err(non_finite_column(j));
    }
    let inv = inv.to_vec();
    let trace = co
        .comoment
        .diag()
        .iter()
        .zip(&inv)
        .map(|(c, s)| c / dof * s * s)
        .sum::<f64>();
    let mut product = crate::model::eigen::HostMatrix::scaled(co.comoment.view(), &inv, dof);
    let n = co.count as usize;
    PcaModel::from_product(mean_z.clone(), &mut product, trace, n, po)
}

/// The error for a non-finite covariance entry in column `j`.
fn non_finite_column(j: usize) -> Error {
    Error::NonFinite {
        op: OP,
        location: format!("column {j} (non-finite data)"),
    }
}

/// The covariance of the standardized data, `D^-1 C D^-1` with `C =
/// comoment / (count - ddof)` and `inv = 1 / d`: one pass over the `D x D`
/// state on all cores, into a fresh matrix (at `D = 4096` each serial pass
/// over its 128 MB took tens of milliseconds). The same values as dividing
/// first and scaling after, entry by entry.
///
/// # Errors
/// As [`CoMoments::covariance`]; [`Error::NonFinite`] naming the column of
/// the first non-finite covariance entry (in row-major order).
fn scaled_covariance(co: &CoMoments, ddof: usize, inv: &Array1<f64>) -> Result<Array2<f64>> {
    let d = co.dim();
    let dof = co.divisor(ddof)?;
    let mut out = crate::host::new_output::<f64>(d, d);
    let first_bad = Zip::indexed(out.rows_mut())
        .and(co.comoment.rows())
        .into_par_iter()
        .filter_map(|(i, mut o, c)| {
            let mut bad = None;
            for (j, (o, &c)) in o.iter_mut().zip(&c).enumerate() {
                let v = c / dof;
                if !v.is_finite() && bad.is_none() {
                    bad = Some(j);
                }
                *o = v * inv[i] * inv[j];
            }
            bad.map(|j| (i, j))
        })
        .min();
    match first_bad {
        Some((_, j)) => Err(non_finite_column(j)),
        None => Ok(out),
    }
}

/// Reads a pipeline of format version 2.
fn read_current<R: Read + Seek>(npz: &mut NpzReader<R>) -> Result<Pipeline> {
    let d =
        usize::try_from(npz.count("n_features_in")?).map_err(|_| npz.bad("n_features_in", "too large"))?;
    if d == 0 {
        return Err(npz.bad("n_features_in", "0 columns"));
    }
    let feature_names = if npz.has("feature_names_in") {
        Some(npz.strs("feature_names_in", Some(d))?)
    } else {
        None
    };
    let center = npz.bool("center")?;
    let scale = npz.bool("scale")?;
    let whitening = read_whitening(npz, "whitening")?;
    let convention = read_convention(npz, "convention")?;
    let has_pca = npz.has("n_components");
    let requested = read_requested(npz, has_pca)?;
    let eps = if npz.has("eps") {
        Some(npz.f64("eps")?)
    } else {
        None
    };
    let options = PipelineOptions {
        center,
        scale,
        pca: requested.filter(|_| has_pca),
        whitening,
        convention,
        eps,
        solver: Solver::Auto,
    };
    if options.has_pca() != has_pca {
        return Err(npz.bad("n_components", "missing, though the pipeline whitens"));
    }
    options
        .validate()
        .map_err(|e| npz.bad("format", format!("the options: {e}")))?;
    let mut state = PipelineState::read_npz(npz, "state_", Some(d))?;
    if state.comoments.is_some() != has_pca {
        return Err(npz.bad(
            "state_co_count",
            if has_pca {
                "missing: a PCA step needs the co-moments"
            } else {
                "present without a PCA step"
            },
        ));
    }
    state.feature_names = feature_names;
    let standardizer = read_standardizer(npz, &state, center, scale)?;
    let pca = if has_pca {
        Some(read_pca_step(npz, &state, d, &options)?)
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

/// The number of components the fit asked for (a count, a fraction, or all
/// where the file has a PCA step and neither).
fn read_requested<R: Read + Seek>(npz: &mut NpzReader<R>, has_pca: bool) -> Result<Option<NComponents>> {
    let requested = match (
        npz.has("n_components_requested"),
        npz.has("variance_fraction_requested"),
    ) {
        (true, true) => {
            return Err(npz.bad(
                "n_components_requested",
                "beside variance_fraction_requested: a fit asks for one or the other",
            ))
        }
        (true, false) => {
            let k = npz.count("n_components_requested")?;
            Some(NComponents::Count(
                usize::try_from(k).map_err(|_| npz.bad("n_components_requested", "too large"))?,
            ))
        }
        (false, true) => Some(NComponents::Fraction(npz.f64("variance_fraction_requested")?)),
        (false, false) => has_pca.then_some(NComponents::All),
    };
    if requested.is_some() && !has_pca {
        return Err(npz.bad(
            "n_components",
            "missing, though a number of components was requested",
        ));
    }
    Ok(requested)
}

/// The PCA step of a saved pipeline, checked against the state it was
/// computed from and the pipeline's own entries.
fn read_pca_step<R: Read + Seek>(
    npz: &mut NpzReader<R>,
    state: &PipelineState,
    d: usize,
    options: &PipelineOptions,
) -> Result<PcaModel> {
    let p = PcaModel::read_npz(npz, "pca_", Layout::Current)?;
    check_pca(npz, &p, state, d)?;
    let kept = npz.count("n_components")?;
    if kept != p.n_components() as u64 {
        return Err(npz.bad(
            "n_components",
            format!("{kept}, but pca_components holds {}", p.n_components()),
        ));
    }
    if p.whitening != options.whitening || p.convention != options.convention {
        return Err(npz.bad(
            "pca_whitening",
            "the PCA step's whitening or convention disagrees with the pipeline's",
        ));
    }
    Ok(p)
}

/// The standardizer of a saved pipeline, checked against the state it was
/// computed from.
fn read_standardizer<R: Read + Seek>(
    npz: &mut NpzReader<R>,
    state: &PipelineState,
    center: bool,
    scale: bool,
) -> Result<Option<Standardizer>> {
    if !(center || scale) {
        return Ok(None);
    }
    let d = state.dim();
    let mean = npz.f64s("scaler_mean", Some(d))?;
    let var = npz.f64s("scaler_var", Some(d))?;
    let scale_ = npz.f64s("scaler_scale", Some(d))?;
    for (name, a) in [
        ("scaler_mean", &mean),
        ("scaler_var", &var),
        ("scaler_scale", &scale_),
    ] {
        if let Some(c) = a.iter().position(|v| !v.is_finite()) {
            return Err(npz.bad(name, format!("column {c} is {}", a[c])));
        }
    }
    if let Some(c) = (0..d).find(|&c| scale_[c] <= 0.0 || var[c] < 0.0) {
        return Err(npz.bad(
            "scaler_scale",
            format!(
                "column {c}: scale {} and variance {}; scales must be positive, variances not negative",
                scale_[c], var[c]
            ),
        ));
    }
    if state.count() > 0 {
        // What the state says the standardizer is, to rounding.
        let from = Standardizer::from_moments(&state.moments, center, scale)
            .map_err(|e| npz.bad("state_mean", e))?;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
        for (name, a, b) in [
            ("scaler_mean", &mean, &from.mean),
            ("scaler_var", &var, &from.var),
        ] {
            if let Some(c) = (0..d).find(|&c| !close(a[c], b[c])) {
                return Err(npz.bad(
                    name,
                    format!(
                        "column {c} is {}, but the state's moments give {}: the model is inconsistent",
                        a[c], b[c]
                    ),
                ));
            }
        }
    }
    Ok(Some(Standardizer {
        mean,
        var,
        scale: scale_,
        with_mean: center,
        with_std: scale,
        n_samples: usize::try_from(state.count()).unwrap_or(usize::MAX),
    }))
}

/// Checks a pipeline's PCA step against its width and state.
fn check_pca<R: Read + Seek>(
    npz: &NpzReader<R>,
    p: &PcaModel,
    state: &PipelineState,
    d: usize,
) -> Result<()> {
    if p.n_features() != d {
        return Err(npz.bad(
            "pca_mean",
            format!("the PCA step has {} features, the pipeline {d}", p.n_features()),
        ));
    }
    if let Some(c) = &state.comoments {
        if c.count > 0 && c.count != p.n_samples as u64 {
            return Err(npz.bad(
                "pca_n_samples",
                format!(
                    "{}, but the state holds {} rows: the model is inconsistent",
                    p.n_samples, c.count
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a pipeline of format version 1: integer codes for the enums,
/// `n_components` 0 with `variance_fraction` for a fraction, `eps` NaN for
/// the convention's, components as `D x k`.
fn read_v1<R: Read + Seek>(npz: &mut NpzReader<R>) -> Result<Pipeline> {
    let version = npz.i64("format_version")?;
    let kind = npz.i64("kind")?;
    if version != 1 || kind != 1 {
        return Err(npz.bad(
            "format_version",
            format!("a pipeline of format_version {version} (kind {kind}) without a format name: this gpuprep reads version 1 and \"gpuprep.pipeline\" version {FORMAT_VERSION}"),
        ));
    }
    let center = npz.bool("center")?;
    let scale = npz.bool("scale")?;
    let wcode = npz.i64("whitening")?;
    let whitening =
        Whitening::from_code(wcode).ok_or_else(|| npz.bad("whitening", format!("code {wcode}")))?;
    let ccode = npz.i64("convention")?;
    let convention =
        Convention::from_code(ccode).ok_or_else(|| npz.bad("convention", format!("code {ccode}")))?;
    let count = npz.i64("n_components")?;
    let fraction = npz.f64("variance_fraction")?;
    let pca = match (count, fraction) {
        (0, 0.0) => None,
        (0, fr) => Some(NComponents::Fraction(fr)),
        (-1, _) => Some(NComponents::All),
        (k, _) if k > 0 => Some(NComponents::Count(k as usize)),
        (k, _) => return Err(npz.bad("n_components", format!("{k}"))),
    };
    let eps = npz.f64("eps")?;
    let options = PipelineOptions {
        center,
        scale,
        pca,
        whitening,
        convention,
        eps: (!eps.is_nan()).then_some(eps),
        solver: Solver::Auto,
    };
    options
        .validate()
        .map_err(|e| npz.bad("format_version", format!("the options: {e}")))?;
    let moments = ColumnMoments::load_npz(npz, "state_", None)?;
    let d = moments.dim();
    let comoments = if options.has_pca() {
        Some(CoMoments::load_npz(npz, "state_co_", Some(d))?)
    } else {
        None
    };
    let state = PipelineState {
        moments,
        comoments,
        feature_names: None,
        fit_ids: Vec::new(),
    };
    state.validate().map_err(|e| npz.bad("state_co_count", e))?;
    let standardizer = read_standardizer(npz, &state, center, scale)?;
    let pca = if options.has_pca() {
        let p = PcaModel::read_npz(npz, "pca_", Layout::Coded)?;
        check_pca(npz, &p, &state, d)?;
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
