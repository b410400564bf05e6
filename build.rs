//! Link-time set-up for LibTorch.
//!
//! 1. rpath to the libtorch folder torch-sys found (the venv's `torch/lib`), so `bedside` and
//!    the test binaries start without `LD_LIBRARY_PATH`.
//! 2. Keep `libtorch_cuda.so` linked. Nothing in bedside references a CUDA symbol directly,
//!    so under `--as-needed` the linker drops the library and `tch::Cuda::is_available()`
//!    is false even on a GPU node. `--no-as-needed` around it keeps it in `DT_NEEDED`.
//!    CPU-only LibTorch builds have no such file; then nothing is forced.
//! 3. Rebuild when a migration is added: `sqlx::migrate!` embeds `src/store/migrations/*` at
//!    compile time, and a new file alone would not make cargo recompile the crate.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/store/migrations");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch folder; no rpath set");
        return;
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
