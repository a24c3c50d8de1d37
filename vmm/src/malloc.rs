//! How glibc's allocator is set up, so that no thread can reach a system
//! call outside its seccomp filter ([`crate::seccomp`]) through `malloc` or
//! `free`, whatever library does the allocating.
//!
//! The bug this answers (issue #11): glibc gives each thread that
//! allocates while another holds the main arena a heap of its own (a
//! non-main arena, up to 64 MiB of mapped address space). When a `free`
//! leaves a large free chunk at the top of such a heap, glibc shrinks the
//! heap, and the first shrink in a process opens
//! `/proc/sys/vm/overcommit_memory` to choose between `mmap(PROT_NONE)` and
//! `madvise`. A virtio-blk worker inflating a compressed qcow2 cluster for
//! copy-on-write (a cluster buffer, a compressed-input buffer, the zstd
//! decoder's window) did exactly that, and its filter, which has no
//! `openat`, killed kiln-vmm with SIGSYS.
//!
//! The choice: one arena for the whole process (`M_ARENA_MAX` = 1), set
//! before any thread starts. Then no thread heap exists, so the heap-shrink
//! path is unreachable; the main arena gives memory back with `brk` and
//! `madvise`, and large blocks are `mmap`/`munmap`/`mremap`ed, all of which
//! every filter allows. It also skips the CPU count glibc would look up when
//! it decides how many arenas to make. The alternatives, and why not:
//!
//! - Large reusable buffers per worker (nothing freed per request) covers
//!   only our own buffers: the zstd decoder, `std` and logging allocate and
//!   free inside themselves, and glibc may trim a thread heap on any free
//!   that leaves enough free memory at its top. Not a guarantee.
//! - `openat` in every filter: seccomp sees only the path pointer, not the
//!   path, so that allows opening any file the (root) process can, from
//!   every thread a guest drives, even if limited to read-only flags (Cloud
//!   Hypervisor's choice after the same bug: a read-only `openat` in all
//!   threads). Firecracker ships with musl, whose allocator never opens a
//!   file, and keeps `openat` out of its vCPU and device threads. We keep it
//!   out too: it is the call an attacker who took over a worker wants most.
//! - An allocator of our own choosing (jemalloc, mimalloc): both are C
//!   libraries that read `/proc` and `/sys` themselves, a new global
//!   allocator for every allocation in the process, and more build time;
//!   more than this needs.
//! - `M_TRIM_THRESHOLD` large enough that no heap is ever shrunk: also
//!   closes the path, but stops the main arena giving memory back and turns
//!   off glibc's adaptive mmap threshold.
//!
//! The cost of one arena is lock sharing between threads that allocate at
//! the same time; glibc's per-thread cache (tcache) serves small blocks
//! without the lock, and the request paths (virtio queues, segments)
//! allocate nothing per request in the common case.

/// Set the allocator up for seccomp-filtered threads. Call it in `main`
/// before any thread starts (a thread that allocated before keeps its own
/// heap); calling it again does no harm. `vmm/tests/malloc_arena.rs` shows
/// a filtered worker that dies without it and lives with it.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of glibc's allocator; it takes
        // no pointers.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if ok != 1 {
            log::warn!("mallopt(M_ARENA_MAX, 1) failed: threads may get heaps of their own");
        }
    }
}
