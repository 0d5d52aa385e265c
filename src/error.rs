//! The crate's error type. Every fallible call in gpuprep returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in gpuprep. Library code never panics on bad
/// input: it returns one of these.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter could be found (or none matched `WGPU_ADAPTER_NAME`).
    #[error("no GPU adapter found{detail}; on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` gives a software Vulkan adapter (lavapipe)")]
    NoAdapter {
        /// Extra context (which backends were tried, which name was asked for).
        detail: String,
    },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter {adapter}: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// An input has the wrong shape for this op.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The op that refused the input.
        op: &'static str,
        /// What the op needs, in words.
        expected: String,
        /// What it was given.
        got: String,
    },

    /// An argument is outside the range the op accepts.
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// The op that refused the argument.
        op: &'static str,
        /// Why.
        reason: String,
    },

    /// The work does not fit one of the adapter's limits, or the host's
    /// memory.
    #[error("{op}: {what} needs {needed}, beyond the limit of {limit}")]
    ExceedsLimit {
        /// The op that hit the limit.
        op: &'static str,
        /// Which limit (for example "storage buffer binding size in bytes").
        what: &'static str,
        /// What the op needed.
        needed: u64,
        /// The limit (the adapter's, or the host memory available now; 0
        /// where the allocator refused outright).
        limit: u64,
    },

    /// The input holds NaN or infinity where the op cannot accept it.
    #[error("{op}: non-finite input at {location}")]
    NonFinite {
        /// The op that refused the input.
        op: &'static str,
        /// Where the first non-finite value sits (for example "row 3, column 7").
        location: String,
    },

    /// Finite input whose result is beyond the output type's range (it
    /// would be written as infinity).
    #[error("{op}: the result at {location} is beyond {dtype}'s range (from finite input); {hint}")]
    Overflow {
        /// The op whose result overflowed.
        op: &'static str,
        /// Where the first such value sits (for example "row 3, column 7").
        location: String,
        /// The output's element type ("f32").
        dtype: &'static str,
        /// What to do instead.
        hint: &'static str,
    },

    /// wgpu reported a validation or out-of-memory error.
    #[error("{op}: GPU error: {message}")]
    Gpu {
        /// What gpuprep was doing.
        op: &'static str,
        /// wgpu's message.
        message: String,
    },

    /// An iterative solver did not converge: the eigendecomposition of a
    /// covariance matrix (finite input, but the solver gave up).
    #[error("{op}: {what} did not converge")]
    NoConvergence {
        /// The op whose solver gave up.
        op: &'static str,
        /// What was being solved, with its size.
        what: String,
    },

    /// The device was lost, or a wait on it failed.
    #[error("GPU device lost or unusable: {0}")]
    DeviceLost(String),

    /// The GPU did not finish within the readback timeout.
    #[error("timed out after {seconds:.1} s waiting for the GPU ({op})")]
    Timeout {
        /// What gpuprep was waiting for.
        op: &'static str,
        /// How long it waited.
        seconds: f64,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// A file could be read but its contents are not what was expected.
    #[error("{path}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line, where the format has lines.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with gpuprep's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// `Ok` where `needed` is within `limit`, else [`Error::ExceedsLimit`].
    pub(crate) fn check_limit(op: &'static str, what: &'static str, needed: u64, limit: u64) -> Result<()> {
        if needed > limit {
            return Err(Error::ExceedsLimit {
                op,
                what,
                needed,
                limit,
            });
        }
        Ok(())
    }

    pub(crate) fn shape(op: &'static str, expected: impl Into<String>, got: impl Into<String>) -> Self {
        Error::ShapeMismatch {
            op,
            expected: expected.into(),
            got: got.into(),
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }
}

/// Refuses a matrix without rows or columns.
pub(crate) fn check_nonempty(op: &'static str, (n, d): (usize, usize)) -> Result<()> {
    if n == 0 || d == 0 {
        return Err(Error::shape(
            op,
            "at least 1 row and 1 column",
            format!("{n} x {d}"),
        ));
    }
    Ok(())
}

/// Refuses a `ddof` that leaves no degrees of freedom in `n` rows.
pub(crate) fn check_ddof(op: &'static str, ddof: usize, n: usize) -> Result<()> {
    if ddof >= n {
        return Err(Error::invalid(
            op,
            format!("ddof = {ddof} needs more than {ddof} rows, got n_samples = {n}"),
        ));
    }
    Ok(())
}
