//! What the GPU ops ([`crate::ops`]) and the CPU twins ([`crate::cpu`]) share:
//! options, fitted models and plans. Both depend on this layer and never on
//! each other.
//!
//! | module | holds |
//! | --- | --- |
//! | [`stats`] | [`ColumnSummary`](stats::ColumnSummary): per-column statistics on the host |
//! | [`standardize`] | [`StandardizeOptions`](standardize::StandardizeOptions) and the zero-variance rule |
//! | [`moments`] | [`ColumnMoments`](moments::ColumnMoments) and [`CoMoments`](moments::CoMoments): mergeable accumulator states, saved in `.npz` |
//! | [`matmul`] | the fused [`Activation`](matmul::Activation) |
//! | [`eigen`] | [`top_eigenpairs`](eigen::top_eigenpairs): the leading eigenpairs of a covariance without the full eigendecomposition |
//! | [`pca`] | [`PcaOptions`](pca::PcaOptions), [`PcaModel`](pca::PcaModel) with its eigendecomposition and `.npz` form |
//! | [`norm`] | [`NormKind`](norm::NormKind), [`NormShape`](norm::NormShape), [`NormPlan`](norm::NormPlan), [`NormSummary`](norm::NormSummary), [`RunningStatsConfig`](norm::RunningStatsConfig) |
//! | [`train`] | [`MlpConfig`](train::MlpConfig), [`SgdOptions`](train::SgdOptions), the epoch shuffle, the metrics layout |
//! | [`init`] | [`Scheme`](init::Scheme), [`Fill`](init::Fill), [`SparsePlan`](init::SparsePlan), fans, the orthogonal matrix, the lecture experiment's streams |

/// `name()` and `from_name()` for a fieldless enum, from one table of its
/// variants' names (the names saved models and the command line use).
macro_rules! names {
    ($ty:ident, $what:literal { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            #[doc = concat!("Its name: ", $what, ".")]
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }

            #[doc = concat!("Inverse of [`", stringify!($ty), "::name`].")]
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use names;

pub mod convention;
pub mod eigen;
pub mod init;
pub mod matmul;
pub mod moments;
pub mod norm;
pub mod pca;
pub mod pipeline;
pub mod standardize;
pub mod stats;
pub mod train;
pub mod tridiag;
