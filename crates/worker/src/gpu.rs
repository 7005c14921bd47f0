//! GPU readings from NVML, where it exists.
//!
//! NVML is loaded at run time (`libnvidia-ml.so`), so the worker builds and runs
//! on machines without an NVIDIA driver; there the readings are simply absent.

use nvml_wrapper::Nvml;

/// One reading of the worker's GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuReading {
    pub name: Option<String>,
    /// MiB.
    pub memory_used: Option<u64>,
    /// MiB.
    pub memory_total: Option<u64>,
    /// Percent.
    pub utilization: Option<f32>,
}

/// The GPU a worker reads, if NVML could be loaded.
pub struct Gpu {
    nvml: Nvml,
    index: u32,
}

impl Gpu {
    /// Opens NVML and the device at `index`; `None` (logged once) where there is none.
    pub fn open(index: u32) -> Option<Self> {
        match Nvml::init() {
            Ok(nvml) => match nvml.device_by_index(index) {
                Ok(_) => Some(Self { nvml, index }),
                Err(e) => {
                    tracing::info!(error = %e, index, "NVML has no such GPU; GPU readings are absent");
                    None
                }
            },
            Err(e) => {
                tracing::info!(error = %e, "NVML not available; GPU readings are absent");
                None
            }
        }
    }

    /// Reads the GPU now; a field NVML cannot give is absent.
    pub fn read(&self) -> GpuReading {
        let Ok(device) = self.nvml.device_by_index(self.index) else {
            return GpuReading::default();
        };
        let memory = device.memory_info().ok();
        GpuReading {
            name: device.name().ok(),
            memory_used: memory.as_ref().map(|m| m.used / (1024 * 1024)),
            memory_total: memory.as_ref().map(|m| m.total / (1024 * 1024)),
            utilization: device.utilization_rates().ok().map(|u| u.gpu as f32),
        }
    }
}
