//! Host memory checks for the CPU paths: a buffer the allocator cannot give
//! aborts the process (Rust's `handle_alloc_error`), so every CPU op that
//! allocates in proportion to its input checks the size first and returns
//! [`Error::ExceedsLimit`] instead.
//!
//! [`check`] refuses a byte count that overflows, that exceeds the memory the
//! system says is available now (Linux: `MemAvailable` plus free swap in
//! `/proc/meminfo`, capped by a cgroup v2 `memory.max`), or that the
//! allocator refuses outright (a `try_reserve` probe, released at once).

use crate::error::{Error, Result};

/// Checks that `count` values of `T` can be allocated now.
pub(crate) fn check<T>(op: &'static str, count: usize) -> Result<()> {
    let bytes = (count as u128) * (std::mem::size_of::<T>() as u128);
    check_bytes(op, bytes)
}

/// Checks that `a x b` values of `T` can be allocated now.
pub(crate) fn check2<T>(op: &'static str, a: usize, b: usize) -> Result<()> {
    let bytes = (a as u128) * (b as u128) * (std::mem::size_of::<T>() as u128);
    check_bytes(op, bytes)
}

/// Checks that `bytes` bytes can be allocated now.
pub(crate) fn check_bytes(op: &'static str, bytes: u128) -> Result<()> {
    let too_big = |limit: u64| Error::ExceedsLimit {
        op,
        what: "host memory in bytes (available now)",
        needed: u64::try_from(bytes).unwrap_or(u64::MAX),
        limit,
    };
    if bytes > isize::MAX as u128 {
        return Err(too_big(isize::MAX as u64));
    }
    // Small buffers: not worth a look at /proc.
    if bytes < (64 << 20) {
        return Ok(());
    }
    if let Some(avail) = available_bytes() {
        if bytes > u128::from(avail) {
            return Err(too_big(avail));
        }
    }
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes as usize).map_err(|_| too_big(0))?;
    Ok(())
}

/// Bytes the system can give now, where it says (Linux); `None` elsewhere.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb.saturating_mul(1024))
    };
    let mut avail = field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0));
    // A cgroup v2 limit (containers) below that.
    let cg = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let (Some(max), Some(cur)) = (cg("memory.max"), cg("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused() {
        assert!(matches!(
            check::<f64>("t", usize::MAX),
            Err(Error::ExceedsLimit { .. })
        ));
        assert!(matches!(
            check2::<f64>("t", 200_000, 200_000),
            Err(Error::ExceedsLimit { .. })
        ));
        assert!(check::<f64>("t", 1 << 45).is_err());
        assert!(check::<f64>("t", 1000).is_ok());
        assert!(check_bytes("t", 100 << 20).is_ok());
    }
}
