//! GPU memory through NVML, behind [`VramProbe`] so tests and machines
//! without an NVIDIA driver can stand in. `libnvidia-ml.so.1` is loaded at
//! run time; its absence is an answer ([`ProbeError::NoDriver`]), not a crash.
//!
//! [`resolve`] names a physical GPU the same way in every command (worker,
//! `gpu-lock`, `gpu`), so that the lease row really is one lock per GPU:
//! `--gpu-name` if given, else the NVML UUID of the chosen GPU, else
//! `gpu<INDEX>` without NVML. NVML numbers GPUs in PCI bus order; the server
//! is started with `CUDA_DEVICE_ORDER=PCI_BUS_ID` so an index means the same
//! GPU to CUDA.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// Which GPU a command was asked to use, as the user said it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuChoice {
    /// `--gpu INDEX`.
    pub index: Option<u32>,
    /// `--gpu-name NAME`: the lease name, whatever the GPU.
    pub name: Option<String>,
}

/// The GPU a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGpu {
    /// The `gpu_leases` row every process uses for this GPU.
    pub lease: String,
    /// Where NVML finds it (for the VRAM check); `None` without NVML or when
    /// NVML does not list it.
    pub nvml_index: Option<u32>,
    /// The value to set as `CUDA_VISIBLE_DEVICES` for the server; `None`
    /// leaves an inherited one (Slurm, a container runtime) as it is.
    pub cuda_visible_devices: Option<String>,
}

/// What an inherited `CUDA_VISIBLE_DEVICES` selects: its first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inherited {
    Index(u32),
    Uuid(String),
}

fn parse_visible_devices(value: &str) -> Option<Inherited> {
    let first = value.split(',').next()?.trim();
    if first.is_empty() {
        return None;
    }
    if let Ok(i) = first.parse::<u32>() {
        return Some(Inherited::Index(i));
    }
    (first.starts_with("GPU-") || first.starts_with("MIG-"))
        .then(|| Inherited::Uuid(first.to_string()))
}

/// Resolves `choice` to a lease name and an NVML index. `inherited` is the
/// process's own `CUDA_VISIBLE_DEVICES`, honoured when `--gpu` is not given.
pub fn resolve(probe: &dyn VramProbe, choice: &GpuChoice, inherited: Option<&str>) -> ResolvedGpu {
    let inherited = match (choice.index, inherited) {
        (None, Some(v)) => {
            let parsed = parse_visible_devices(v);
            if parsed.is_none() {
                tracing::warn!(
                    "CUDA_VISIBLE_DEVICES={v:?} names no GPU cinecut understands; using GPU 0 for the lease and the VRAM check"
                );
            }
            parsed
        }
        _ => None,
    };
    let keep_inherited = choice.index.is_none() && inherited.is_some();
    let (lease, nvml_index) = match inherited {
        Some(Inherited::Uuid(uuid)) => match find_uuid(probe, &uuid) {
            Some(mem) => (mem.uuid, Some(mem.index)),
            None => (uuid, None),
        },
        Some(Inherited::Index(i)) => by_index(probe, i),
        None => by_index(probe, choice.index.unwrap_or(0)),
    };
    ResolvedGpu {
        lease: choice.name.clone().unwrap_or(lease),
        nvml_index,
        cuda_visible_devices: (!keep_inherited).then(|| choice.index.unwrap_or(0).to_string()),
    }
}

fn by_index(probe: &dyn VramProbe, index: u32) -> (String, Option<u32>) {
    match probe.probe(index) {
        Ok(mem) => (mem.uuid, Some(index)),
        Err(_) => (format!("gpu{index}"), None),
    }
}

/// The GPU whose UUID is `uuid` or starts with it (CUDA accepts a prefix).
fn find_uuid(probe: &dyn VramProbe, uuid: &str) -> Option<GpuMemory> {
    let count = probe.device_count().ok()?;
    (0..count)
        .filter_map(|i| probe.probe(i).ok())
        .find(|mem| mem.uuid.starts_with(uuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two GPUs, or none (no driver).
    struct Fixed(Vec<&'static str>);

    impl VramProbe for Fixed {
        fn device_count(&self) -> Result<u32, ProbeError> {
            if self.0.is_empty() {
                return Err(ProbeError::NoDriver("test".into()));
            }
            Ok(self.0.len() as u32)
        }
        fn probe(&self, index: u32) -> Result<GpuMemory, ProbeError> {
            self.device_count()?;
            let uuid = self
                .0
                .get(index as usize)
                .ok_or_else(|| ProbeError::Failed("no such GPU".into()))?;
            Ok(GpuMemory {
                index,
                uuid: uuid.to_string(),
                name: "test".into(),
                free_mib: 1,
                total_mib: 2,
                processes: vec![],
            })
        }
    }

    fn choice(index: Option<u32>, name: Option<&str>) -> GpuChoice {
        GpuChoice {
            index,
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn one_gpu_gets_one_name_whatever_the_command() {
        let two = Fixed(vec!["GPU-aaaa-1111", "GPU-bbbb-2222"]);
        let r = resolve(&two, &choice(None, None), None);
        assert_eq!(r.lease, "GPU-aaaa-1111");
        assert_eq!(r.nvml_index, Some(0));
        assert_eq!(r.cuda_visible_devices.as_deref(), Some("0"));
        let r = resolve(&two, &choice(Some(1), None), Some("0"));
        assert_eq!(r.lease, "GPU-bbbb-2222", "--gpu wins over the environment");
        assert_eq!(r.cuda_visible_devices.as_deref(), Some("1"));
        let r = resolve(&two, &choice(Some(1), Some("mine")), None);
        assert_eq!((r.lease.as_str(), r.nvml_index), ("mine", Some(1)));
    }

    #[test]
    fn an_inherited_cuda_visible_devices_is_kept_and_mapped() {
        let two = Fixed(vec!["GPU-aaaa-1111", "GPU-bbbb-2222"]);
        let r = resolve(&two, &choice(None, None), Some("GPU-bbbb"));
        assert_eq!(r.lease, "GPU-bbbb-2222");
        assert_eq!(r.nvml_index, Some(1));
        assert_eq!(
            r.cuda_visible_devices, None,
            "never overwrite a scheduler's choice"
        );
        let r = resolve(&two, &choice(None, None), Some("1,0"));
        assert_eq!((r.lease.as_str(), r.nvml_index), ("GPU-bbbb-2222", Some(1)));
        assert_eq!(r.cuda_visible_devices, None);
        let r = resolve(&two, &choice(None, None), Some("all"));
        assert_eq!(r.lease, "GPU-aaaa-1111");
    }

    #[test]
    fn without_nvml_the_index_names_the_lease() {
        let none = Fixed(vec![]);
        assert_eq!(resolve(&none, &choice(None, None), None).lease, "gpu0");
        assert_eq!(resolve(&none, &choice(Some(3), None), None).lease, "gpu3");
        assert_eq!(resolve(&none, &choice(None, None), Some("2")).lease, "gpu2");
        let r = resolve(&none, &choice(None, None), Some("GPU-cccc"));
        assert_eq!((r.lease.as_str(), r.nvml_index), ("GPU-cccc", None));
    }
}
