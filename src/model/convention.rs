//! Whose conventions a fit follows: the lecture's (the default), scikit-learn's
//! or PyTorch's. One switch: [`Convention`] on the options
//! ([`PcaOptions`](crate::model::pca::PcaOptions),
//! [`PipelineOptions`](crate::model::pipeline::PipelineOptions)), `--convention`
//! on the command line.
//!
//! | | lecture | sklearn | pytorch |
//! | --- | --- | --- | --- |
//! | covariance, explained variance | `/ N` | `/ (N - 1)` | `/ N` |
//! | whitening divides by | `sqrt(S + eps)`, eps 1e-5 | `sqrt(S)` clipped below at machine epsilon (no eps), so rank-deficient data stays finite | as lecture |
//! | a fraction f of variance keeps | the fewest components reaching at least f | components while the cumulative ratio is not yet strictly greater than f, plus one (`searchsorted(side='right') + 1`); f must be in (0, 1) | as lecture |
//! | n_components larger than min(N, D) | allowed (zero eigenvalues) | an error | as lecture |
//! | standardization | variance `/ N`; a (numerically) constant column scales by 1 | the same (StandardScaler) | the same |
//!
//! PyTorch has no preprocessing estimators: its convention matters for the
//! normalization layers (running variance unbiased, momentum 0.1; see
//! [`RunningStatsConfig::pytorch`](crate::model::norm::RunningStatsConfig::pytorch)),
//! and the preprocessing steps follow the lecture's formulas under it.

/// Default `eps` of whitening (the lecture's `1e-5`).
pub const DEFAULT_EPS: f64 = 1e-5;

/// Whose conventions a fit follows (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Convention {
    /// cs231n's: `/ N`, eps 1e-5 under the square root, "at least" for fractions.
    #[default]
    Lecture,
    /// scikit-learn's `PCA` and `StandardScaler`.
    Sklearn,
    /// PyTorch's (the lecture's formulas for preprocessing).
    Pytorch,
}

crate::model::names!(Convention, "\"lecture\", \"sklearn\" or \"pytorch\"" {
    Lecture => "lecture",
    Sklearn => "sklearn",
    Pytorch => "pytorch",
});

impl Convention {
    /// The code stored in a saved model: 0 lecture, 1 sklearn, 2 pytorch.
    pub fn code(self) -> i64 {
        match self {
            Convention::Lecture => 0,
            Convention::Sklearn => 1,
            Convention::Pytorch => 2,
        }
    }

    /// Inverse of [`Convention::code`].
    pub fn from_code(code: i64) -> Option<Convention> {
        match code {
            0 => Some(Convention::Lecture),
            1 => Some(Convention::Sklearn),
            2 => Some(Convention::Pytorch),
            _ => None,
        }
    }

    /// The covariance's ddof: 1 for scikit-learn, else 0.
    pub fn ddof(self) -> usize {
        match self {
            Convention::Sklearn => 1,
            _ => 0,
        }
    }

    /// The eps added under whitening's square root: 0 for scikit-learn (which
    /// clips instead), else the lecture's 1e-5.
    pub fn whitening_eps(self) -> f64 {
        match self {
            Convention::Sklearn => 0.0,
            _ => DEFAULT_EPS,
        }
    }
}
