//! Building blocks with no knowledge of sessions: the bounded bincode codec, OS
//! randomness in bulk, crash points for tests, the directory lock, private files and
//! directories, a cache-line padding, hashers for keys that are random already, and
//! the file-system seam (the operating system's, or a simulated disk that fails and
//! crashes on demand), the operator's events (`tracing`, when enabled) and metrics
//! handles (`metrics`, when enabled).

pub(crate) mod codec;
pub(crate) mod entropy;
pub(crate) mod failpoint;
pub(crate) mod fs;
pub(crate) mod hash;
pub(crate) mod lock;
pub(crate) mod metrics;
pub(crate) mod padded;
pub(crate) mod parallel;
pub(crate) mod trace;
pub mod vfs;

/// Where the run of zero bytes that ends `bytes` begins (`bytes.len()` if it ends in
/// a non-zero byte). Compared a page at a time: a log's tail is often a megabyte of
/// preallocated zeros, and a byte loop over it, instrumented under a fuzzer, cost more
/// than the rest of a run.
pub(crate) fn zeros_from(bytes: &[u8]) -> usize {
    static PAGE: [u8; 4096] = [0; 4096];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(PAGE.len());
        if bytes[start..end] != PAGE[..end - start] {
            break;
        }
        end = start;
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// The cores this process may run on, asked of the OS once (`available_parallelism`
/// reads cgroup files on Linux at every call).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeros_from_finds_where_the_trailing_zeros_begin() {
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            assert_eq!(super::zeros_from(&vec![0u8; len]), 0, "all zeros, {len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at >= len {
                    continue;
                }
                let mut v = vec![0u8; len];
                v[at] = 7;
                assert_eq!(super::zeros_from(&v), at + 1, "len {len}, byte at {at}");
                v[0] = 1;
                assert_eq!(
                    super::zeros_from(&v),
                    at + 1,
                    "len {len}, bytes at 0 and {at}"
                );
            }
        }
    }
}
