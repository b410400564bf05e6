//! Where models run: CUDA when present (and wanted), else CPU.

use tch::Device;

use super::LoadError;
use crate::config::DevicePreference;

/// Whether LibTorch sees a usable CUDA device. Only true if `libtorch_cuda.so` was linked
/// (build.rs forces it: the linker would drop it under `--as-needed`).
pub fn cuda_is_available() -> bool {
    tch::Cuda::is_available()
}

/// The device for `preference`. `Cuda` without a GPU is an error, not a silent CPU fallback.
pub fn select_device(preference: DevicePreference) -> Result<Device, LoadError> {
    match preference {
        DevicePreference::Cpu => Ok(Device::Cpu),
        DevicePreference::Auto if cuda_is_available() => Ok(Device::Cuda(0)),
        DevicePreference::Auto => Ok(Device::Cpu),
        DevicePreference::Cuda if cuda_is_available() => Ok(Device::Cuda(0)),
        DevicePreference::Cuda => Err(LoadError::NoCuda),
    }
}
