//! `cinecut gpu-lock -- COMMAND`: runs a command while holding a GPU's
//! lease, so that no worker's llama-server shares the GPU with it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::GpuLockArgs;
use crate::db::Store;
use crate::db::lease::{Acquire, Purpose};
use crate::error::Error;
use crate::gpu::Nvml;

/// Runs a command under a GPU lease and returns its exit code.
pub async fn run(db: &Store, args: GpuLockArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let me = crate::db::lease::this_process(Purpose::GpuLock);
    let ttl = args.lease_ttl;
    let started = tokio::time::Instant::now();
    let gpu = crate::config::resolve_gpu(&Nvml::default(), args.gpu, args.gpu_name.clone()).lease;
    let mut told = false;
    let epoch = loop {
        db.wait_for_gpu(&gpu, &me).await?;
        match db.acquire_lease(&gpu, &me, ttl).await? {
            Acquire::Acquired {
                epoch,
                orphan_server,
                ..
            } => {
                // A dead worker's server must not share the GPU with the command.
                if let Some(o) = orphan_server {
                    crate::server::reap_recorded(o).await;
                }
                break epoch;
            }
            Acquire::Held { holder, .. } if !told => {
                tracing::info!("GPU {gpu} is held by {holder}; waiting for it to yield");
                told = true;
            }
            _ => {}
        }
        if let Some(limit) = args.timeout
            && started.elapsed() >= limit
        {
            db.stop_waiting(&gpu, &me).await?;
            return Err(Error::GpuLockTimeout {
                gpu,
                waited_s: limit.as_secs(),
            }
            .into());
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => { db.stop_waiting(&gpu, &me).await?; return Ok(130); }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    db.stop_waiting(&gpu, &me).await?;
    tracing::info!(gpu = %gpu, epoch, "holding the GPU lease; running the command");
    let program = args.command[0].clone();
    let mut child = tokio::process::Command::new(&program)
        .args(&args.command[1..])
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        });
    let code = match &mut child {
        Err(_) => None,
        Ok(child) => {
            let mut beat = tokio::time::interval(args.lease_ttl / 3);
            loop {
                tokio::select! {
                    status = child.wait() => break Some(status?),
                    _ = beat.tick() => {
                        db.renew_lease(&gpu, &me, epoch, ttl).await?;
                    }
                }
            }
        }
    };
    db.release_lease(&gpu, &me, epoch).await?;
    let status = match code {
        Some(status) => status,
        None => return Err(child.expect_err("spawn failed").into()),
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    })
}
