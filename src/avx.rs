//! AVX hygiene after faer's kernels (see [`clear_avx_upper_state`]).

/// Clears the upper halves of the AVX registers (`vzeroupper`) on every rayon
/// worker and on this thread. faer's x86 matrix kernels return without doing
/// so, and on the threads that ran them every later SSE-encoded instruction
/// pays a transition penalty: measured on this project's 2-core AMD EPYC
/// machine, 4M Philox normals on the rayon pool took 62 ms before a faer
/// product and 390 ms after it, back to 90 ms after this. The twins call it
/// after each faer call (products, the eigendecomposition, QR).
pub(crate) fn clear_avx_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        rayon::broadcast(|_| clear_avx_upper_state_here());
    }
    clear_avx_upper_state_here();
}

/// [`clear_avx_upper_state`] on this thread only (cheap: for loops that
/// alternate faer calls with their own work on the calling thread).
pub(crate) fn clear_avx_upper_state_here() {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above), which is all `vzeroupper`
        // needs; it zeroes bits 128.. of the vector registers, which hold no
        // live value between calls.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}
