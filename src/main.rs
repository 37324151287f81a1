//! The `blockwatch` binary: see [`blockwatch::cli`].

fn main() {
    limit_malloc_arenas();
    std::process::exit(blockwatch::cli::main());
}

/// How many malloc arenas glibc may create, unless `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

/// Bounds glibc's malloc arenas before the first thread starts. By default glibc gives threads up to
/// eight arenas per core; the runtime's workers and its blocking threads (the state database, file
/// writes) each took one, and memory freed in an arena that still held one long-lived allocation was
/// never returned: the resident memory of an agent following 200 chains grew by about 10 MiB a
/// minute for 15 minutes while its heap stayed flat. With two arenas it levels off as the chains'
/// bounded histories fill (BENCHMARKS.md, "Memory over time"). `MALLOC_ARENA_MAX` in the environment
/// still wins.
#[allow(unsafe_code)] // the one call below; the crate denies unsafe code everywhere else
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; no thread but this one exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}
