//! `cinecut gpu-lock -- COMMAND`: runs a command while holding a GPU's
//! lease, so that no worker's llama-server shares the GPU with it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::GpuLockArgs;
use crate::db::lease::{self, Acquire, Holder, Purpose};
use crate::db::{self, Db};
use crate::error::Error;
use crate::gpu::Nvml;

/// Runs a command under a GPU lease and returns its exit code.
pub async fn run(db: &Db, args: GpuLockArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let pool = db.pool();
    let me = Holder::this_process(Purpose::GpuLock);
    let ttl = args.lease_ttl.as_millis() as i64;
    let started = tokio::time::Instant::now();
    let gpu = crate::config::resolve_gpu(&Nvml::default(), args.gpu, args.gpu_name.clone()).lease;
    let mut told = false;
    let epoch = loop {
        lease::wait_for(pool, &gpu, &me, db::now_ms()).await?;
        match lease::acquire(pool, &gpu, &me, ttl, db::now_ms()).await? {
            Acquire::Acquired { epoch, .. } => break epoch,
            Acquire::Held { holder, .. } if !told => {
                tracing::info!("GPU {gpu} is held by {holder}; waiting for it to yield");
                told = true;
            }
            _ => {}
        }
        if let Some(limit) = args.timeout
            && started.elapsed() >= limit
        {
            lease::stop_waiting(pool, &me).await?;
            return Err(Error::GpuLockTimeout {
                gpu,
                waited_s: limit.as_secs(),
            }
            .into());
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => { lease::stop_waiting(pool, &me).await?; return Ok(130); }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    lease::stop_waiting(pool, &me).await?;
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
                        lease::renew(pool, &gpu, &me.id, epoch, ttl, db::now_ms()).await?;
                    }
                }
            }
        }
    };
    lease::release(pool, &gpu, &me.id, epoch, db::now_ms()).await?;
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
