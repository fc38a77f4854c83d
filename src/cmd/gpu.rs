//! `cinecut gpu`: what NVML sees and who holds each GPU's lease.

use std::io::Write;

use super::render::describe_lease;
use crate::cli::GpuArgs;
use crate::db::Store;
use crate::gpu::{Nvml, VramProbe};

/// Prints every GPU NVML sees (index, UUID, memory, processes) with its
/// lease (the name a worker and gpu-lock use for it) and the lease's holder,
/// then leases held under other names.
pub async fn run(db: &Store, args: GpuArgs) -> anyhow::Result<()> {
    let probe = Nvml::default();
    let leases = db.lease_holders().await?;
    let devices: Result<Vec<_>, _> = probe
        .device_count()
        .and_then(|n| (0..n).map(|i| probe.probe(i)).collect());
    let holder_of = |lease: &str| leases.iter().find(|l| l.gpu == lease);
    let others: Vec<_> = leases
        .iter()
        .filter(|l| {
            devices
                .as_ref()
                .map_or(true, |list| list.iter().all(|d| d.uuid != l.gpu))
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let (list, error) = match &devices {
            Ok(list) => (
                Some(
                    list.iter()
                        .map(|d| {
                            serde_json::json!({
                                "index": d.index, "uuid": d.uuid, "name": d.name,
                                "free_mib": d.free_mib, "total_mib": d.total_mib,
                                "processes": d.processes, "lease": d.uuid,
                                "holder": holder_of(&d.uuid),
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "devices": list, "error": error, "gpu_leases": leases }),
        )?;
        writeln!(out)?;
    } else {
        match &devices {
            Ok(list) if list.is_empty() => writeln!(out, "NVML found no GPU")?,
            Ok(list) => {
                for d in list {
                    writeln!(
                        out,
                        "GPU {} {} ({}): {} MiB free of {} MiB",
                        d.index, d.name, d.uuid, d.free_mib, d.total_mib
                    )?;
                    let holder = match holder_of(&d.uuid) {
                        Some(l) => describe_lease(l),
                        None => "free".into(),
                    };
                    writeln!(out, "    lease {}: {holder}", d.uuid)?;
                    if !d.processes.is_empty() {
                        writeln!(out, "    processes: {}", crate::gpu::describe_holders(d))?;
                    }
                }
            }
            Err(e) => writeln!(
                out,
                "{e}; llama-server would run on CPU (--vram-check auto); leases are named gpu<INDEX>"
            )?,
        }
        for l in &others {
            writeln!(out, "lease {}: {}", l.gpu, describe_lease(l))?;
        }
        if leases.is_empty() {
            writeln!(out, "no GPU lease is held")?;
        }
    }
    devices.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
}
