//! Where models run: CUDA when present (and wanted), else CPU.

use tch::Device;

use super::DevicePreference;

/// Whether LibTorch sees a usable CUDA device. Only true if `libtorch_cuda.so` was linked
/// (build.rs forces it: the linker would drop it under `--as-needed`).
pub fn cuda_is_available() -> bool {
    tch::Cuda::is_available()
}

/// The device for `preference`. `Cuda` on a node without a usable GPU falls back to CPU and
/// says so in the log: one configuration can then serve GPU and CPU nodes alike, and
/// `bedside check` prints where each model ended up.
pub fn select_device(preference: DevicePreference, model: &str) -> Device {
    match preference {
        DevicePreference::Cpu => Device::Cpu,
        DevicePreference::Auto | DevicePreference::Cuda if cuda_is_available() => Device::Cuda(0),
        DevicePreference::Auto => Device::Cpu,
        DevicePreference::Cuda => {
            tracing::warn!(
                model,
                "CUDA requested but no usable GPU (or libtorch_cuda not loaded); running on CPU"
            );
            Device::Cpu
        }
    }
}
