//! GPU memory through NVML, behind [`VramProbe`] so tests and machines
//! without an NVIDIA driver can stand in. `libnvidia-ml.so.1` is loaded at
//! run time; its absence is an answer ([`ProbeError::NoDriver`]), not a crash.

use std::sync::OnceLock;

use serde::Serialize;

/// One GPU's identity and memory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GpuMemory {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub free_mib: u64,
    pub total_mib: u64,
    /// Compute processes holding memory: (pid, MiB if known).
    pub processes: Vec<(u32, Option<u64>)>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("no NVIDIA driver (NVML could not be loaded: {0})")]
    NoDriver(String),
    #[error("NVML error: {0}")]
    Failed(String),
}

/// Reads GPU memory.
pub trait VramProbe: Send + Sync {
    fn device_count(&self) -> Result<u32, ProbeError>;
    fn probe(&self, index: u32) -> Result<GpuMemory, ProbeError>;
}

/// The real probe, through nvml-wrapper.
#[derive(Default)]
pub struct Nvml {
    nvml: OnceLock<Result<nvml_wrapper::Nvml, ProbeError>>,
}

impl Nvml {
    fn handle(&self) -> Result<&nvml_wrapper::Nvml, ProbeError> {
        self.nvml
            .get_or_init(|| {
                nvml_wrapper::Nvml::init().map_err(|e| ProbeError::NoDriver(e.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn failed(e: nvml_wrapper::error::NvmlError) -> ProbeError {
    ProbeError::Failed(e.to_string())
}

impl VramProbe for Nvml {
    fn device_count(&self) -> Result<u32, ProbeError> {
        self.handle()?.device_count().map_err(failed)
    }

    fn probe(&self, index: u32) -> Result<GpuMemory, ProbeError> {
        let device = self.handle()?.device_by_index(index).map_err(failed)?;
        let mem = device.memory_info().map_err(failed)?;
        let processes = device
            .running_compute_processes()
            .map_err(failed)?
            .into_iter()
            .map(|p| {
                let used = match p.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b / (1024 * 1024)),
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                };
                (p.pid, used)
            })
            .collect();
        Ok(GpuMemory {
            index,
            uuid: device.uuid().map_err(failed)?,
            name: device.name().map_err(failed)?,
            free_mib: mem.free / (1024 * 1024),
            total_mib: mem.total / (1024 * 1024),
            processes,
        })
    }
}

/// How strictly the worker checks VRAM before starting llama-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VramCheck {
    /// Check with NVML; without an NVIDIA driver, run on CPU.
    #[default]
    Auto,
    /// Check with NVML; without an NVIDIA driver, fail.
    Required,
    /// Do not check.
    Off,
}

/// Names the processes holding a GPU's memory, for error messages.
pub fn describe_holders(mem: &GpuMemory) -> String {
    if mem.processes.is_empty() {
        return "no compute process reported".into();
    }
    mem.processes
        .iter()
        .map(|(pid, mib)| {
            let cmd = crate::process::cmdline(i64::from(*pid)).unwrap_or_else(|| "?".into());
            let mib = mib.map_or("? MiB".into(), |m| format!("{m} MiB"));
            format!("pid {pid} ({cmd}) {mib}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
