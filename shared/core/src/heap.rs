//! Keeping freed memory for the next invocation.
//!
//! A Lambda process handles one batch after another, and every batch allocates the same large
//! buffers: the event body (up to ~12 MB of JSON), the decoded records (one ~4–6 MB buffer),
//! the Arrow columns and the Parquet pages. glibc returns blocks over its mmap threshold to the
//! kernel when they are freed and trims the top of its heaps, so the next batch page-faults
//! every 4 KiB page of those buffers back in and the kernel zeroes each one. Raising both
//! thresholds once at start keeps the pages in the process: the memory is the batch's peak,
//! which the function is sized for anyway. BENCHMARKS.md has the measured effect.

/// glibc's largest allowed mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`):
/// blocks up to this size come from the heap and are reused once freed.
pub const MMAP_THRESHOLD_BYTES: usize = 32 * 1024 * 1024;

/// Free memory at the top of a heap that glibc keeps instead of handing back to the kernel.
/// Several batches' worth of buffers, far above one batch's peak.
pub const TRIM_THRESHOLD_BYTES: usize = 512 * 1024 * 1024;

/// Tells the allocator to keep freed memory for reuse. Returns whether it took effect: `false`
/// on a C library without these settings (musl, non-Linux), where it does nothing.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are in glibc's range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
