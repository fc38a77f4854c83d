//! Models by name (`--hf user/repo[:quant]`): llama.cpp's own downloader
//! and cache pick the files, so cinecut loads, hashes and binds exactly
//! what llama.cpp would for that name.
//!
//! The files are fetched with `llama download -hf NAME` (the unified
//! `llama` binary built beside `llama-server`), which prints the model's
//! path and its mmproj's. With `--offline` it reads only the cache
//! (`LLAMA_CACHE`, else `HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), so a host without internet uses what an
//! earlier run or a copied cache holds. Its errors go to the user's
//! terminal as it prints them; it draws no progress with its output piped,
//! so cinecut says before that a download may take a while.

use std::path::{Path, PathBuf};

/// The files a name stands for in llama.cpp's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub model: PathBuf,
    pub mmproj: PathBuf,
}

/// The `llama` binary beside `llama-server` (both are built from the same
/// llama.cpp tree).
pub fn downloader(server_bin: &Path) -> anyhow::Result<PathBuf> {
    let bin = server_bin.with_file_name("llama");
    if bin.is_file() {
        return Ok(bin);
    }
    anyhow::bail!(
        "--hf needs llama.cpp's `llama` binary (its `download` command) beside {}; \
         none at {} (a llama.cpp build makes both; or download the files and pass --model and --mmproj)",
        server_bin.display(),
        bin.display()
    )
}

/// The cache directory llama.cpp reads for `-hf`, as it decides it.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("LLAMA_CACHE")
        .or_else(|| var("HF_HUB_CACHE"))
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from("~/.cache/huggingface/hub"))
}

/// `user/repo` or `user/repo:quant`, as llama.cpp accepts it.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let repo = name.split_once(':').map_or(name, |(repo, _)| repo);
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() == 2
        && parts.iter().all(|p| {
            // Hugging Face's rule: these characters, no `--` or `..`, and
            // neither `-` nor `.` at either end.
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !p.contains("--")
                && !p.contains("..")
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
                && !p.is_empty()
        });
    if !ok {
        anyhow::bail!(
            "{name:?} is not USER/REPO or USER/REPO:QUANT, e.g. ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0"
        );
    }
    Ok(())
}

/// Fetches (or, `offline`, finds in the cache) the model `name` stands
/// for and its mmproj, with llama.cpp's downloader.
pub async fn resolve(server_bin: &Path, name: &str, offline: bool) -> anyhow::Result<Resolved> {
    check_name(name)?;
    let bin = downloader(server_bin)?;
    let cache = cache_dir();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("download").arg("-hf").arg(name);
    if offline {
        cmd.arg("--offline");
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    match offline {
        true => tracing::info!(
            "--hf {name}: looking in llama.cpp's cache {} (--offline), with {}",
            cache.display(),
            bin.display()
        ),
        false => tracing::info!(
            "--hf {name}: fetching what llama.cpp's cache {} lacks with {} (a first download of a model takes minutes, silently)",
            cache.display(),
            bin.display()
        ),
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        let why = if offline {
            format!(
                "not in llama.cpp's cache {} and --offline asks no server (run once without --offline \
                 where there is internet, or copy that cache here)",
                cache.display()
            )
        } else {
            format!(
                "llama.cpp's downloader failed ({}; its message is above): check the name and the connection \
                 (--offline uses only the cache {})",
                out.status,
                cache.display()
            )
        };
        anyhow::bail!("--hf {name}: {why}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let resolved = parse_paths(&stdout).ok_or_else(|| {
        anyhow::anyhow!(
            "--hf {name}: the repository has a model but no mmproj (vision projector) llama.cpp could pick; \
             cinecut needs both: pass --model and --mmproj"
        )
    })?;
    tracing::info!(
        "--hf {name}: model {}, mmproj {}",
        resolved.model.display(),
        resolved.mmproj.display()
    );
    Ok(resolved)
}

/// `llama download` prints the model's path, then the mmproj's (then any
/// draft model's), one per line.
fn parse_paths(stdout: &str) -> Option<Resolved> {
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    let model = PathBuf::from(lines.next()?);
    let mmproj = PathBuf::from(lines.next()?);
    Some(Resolved { model, mmproj })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_user_repo_and_an_optional_quant() {
        for good in [
            "ggml-org/SmolVLM-500M-Instruct-GGUF",
            "a/b:Q4_K_M",
            "x.y/z_w-1:F16",
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "repo", "a/b/c", "/b", "a/", "a b/c", "../x", "a/b;rm"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_downloaders_lines_are_the_model_then_the_mmproj() {
        let r = parse_paths("/c/m-Q8_0.gguf\n/c/mmproj-F16.gguf\n").unwrap();
        assert_eq!(r.model, PathBuf::from("/c/m-Q8_0.gguf"));
        assert_eq!(r.mmproj, PathBuf::from("/c/mmproj-F16.gguf"));
        assert_eq!(parse_paths("/c/m-Q8_0.gguf\n"), None, "no mmproj");
        assert_eq!(parse_paths(""), None);
    }
}
