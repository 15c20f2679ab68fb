//! `keep_freed_memory` against the real allocator: a freed batch-sized buffer is reused
//! without the kernel faulting its pages in again. Its own test binary, one test, so no other
//! test thread shares the allocator's arena while the faults are counted.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::hint::black_box;

/// Minor page faults this thread has taken so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one rusage into the zeroed value we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_minflt
}

/// Allocates a zeroed buffer the size of a decoded batch, writes every page, frees it.
fn batch_sized_buffer() {
    let mut buffer = vec![0u8; 8 << 20];
    for page in buffer.chunks_mut(4096) {
        page[0] = 1;
    }
    black_box(&buffer);
}

#[test]
fn a_freed_batch_buffer_comes_back_without_page_faults() {
    // Given the allocator told to keep freed memory, and one batch already handled
    assert!(streamload_core::heap::keep_freed_memory());
    batch_sized_buffer();
    // When the next batch allocates and writes a buffer of the same size
    let before = minor_faults();
    batch_sized_buffer();
    let faults = minor_faults() - before;
    // Then its 2,048 pages are the ones already held: (almost) no page faults
    assert!(
        faults < 64,
        "{faults} page faults for a reused 8 MiB buffer"
    );
}
