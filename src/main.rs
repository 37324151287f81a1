//! The `blockwatch` binary: see [`blockwatch::cli`].

fn main() {
    std::process::exit(blockwatch::cli::main());
}
