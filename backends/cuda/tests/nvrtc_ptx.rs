//! Every kernel the backend launches, compiled by the real NVRTC (the PyPI wheel
//! `nvidia-cuda-nvrtc==13.0.88` in CI: PTX ISA 9.0, what driver 580 / CUDA 13.0 loads) for
//! `sm_90a` (H100/H200) and `sm_80` (A100), and the sm_90a PTX assembled by `ptxas` (PyPI
//! `nvidia-cuda-nvcc==13.0.88`), so a kernel that does not compile fails here, with no GPU.
//!
//! NVRTC is found as the backend finds it (`libnvrtc.so.13` on `LD_LIBRARY_PATH`); `ptxas`
//! through `FINETP_PTXAS` or `PATH`. Absent, each case is listed as ignored with the reason;
//! `FINETP_REQUIRE_NVRTC=1` / `FINETP_REQUIRE_PTXAS=1` (ci/cuda.sh) make that a failure. The
//! PTX is written to `FINETP_PTX_OUT` when set.

use std::path::PathBuf;
use std::process::Command;

use finetp_backend_cuda::ptx;
use finetp_testkit::harness::{self, Case, Need};

fn main() {
    // SAFETY: only tries to dlopen the candidate names.
    let nvrtc = if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Need::present("NVRTC (libnvrtc.so.13)", "FINETP_REQUIRE_NVRTC")
    } else {
        Need::absent("NVRTC (libnvrtc.so.13)", "FINETP_REQUIRE_NVRTC", "libnvrtc.so.13 is not on LD_LIBRARY_PATH (ci/cuda.sh installs nvidia-cuda-nvrtc==13.0.88)".into())
    };
    let ptxas = std::env::var("FINETP_PTXAS").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "ptxas".into());
    let ptxas_need = match Command::new(&ptxas).arg("--version").output() {
        Ok(o) if o.status.success() => Need::present("ptxas", "FINETP_REQUIRE_PTXAS"),
        _ => Need::absent("ptxas", "FINETP_REQUIRE_PTXAS", format!("cannot run {ptxas} (set FINETP_PTXAS; ci/cuda.sh installs nvidia-cuda-nvcc==13.0.88)")),
    };
    let out = std::env::var_os("FINETP_PTX_OUT").map_or_else(|| std::env::temp_dir().join(format!("finetp-ptx-{}", std::process::id())), PathBuf::from);
    let o1 = out.clone();
    harness::run(vec![
        Case::new("nvrtc::every_kernel_compiles_for_sm_80", std::slice::from_ref(&nvrtc), move || compile("sm_80", &o1).map(drop)),
        Case::new("nvrtc::every_kernel_compiles_for_sm_90a_and_ptxas_assembles_it", &[nvrtc, ptxas_need], move || {
            let file = compile("sm_90a", &out)?;
            let cubin = file.with_extension("cubin");
            let o = Command::new(&ptxas).args(["-arch=sm_90a", "-O3"]).arg(&file).arg("-o").arg(&cubin).output().map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!("ptxas rejected {}:\n{}", file.display(), String::from_utf8_lossy(&o.stderr)));
            }
            let size = std::fs::metadata(&cubin).map_err(|e| e.to_string())?.len();
            println!("ptxas assembled {} into {} ({size} bytes)", file.display(), cubin.display());
            Ok(())
        }),
    ])
}

/// Compiles the kernels for `arch`, checks the PTX, writes it under `out`.
fn compile(arch: &'static str, out: &std::path::Path) -> Result<PathBuf, String> {
    let text = ptx::compile(Some(arch))?.to_src();
    let version = text.lines().find_map(|l| l.strip_prefix(".version ")).ok_or("no .version in the PTX")?.trim().to_string();
    let (major, minor) = version.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))).ok_or_else(|| format!("PTX version {version}"))?;
    if (major, minor) > (9, 0) {
        return Err(format!("PTX ISA {version}: driver 580 (CUDA 13.0) loads at most 9.0; use NVRTC 13.0"));
    }
    if !text.lines().any(|l| l.trim() == format!(".target {arch}")) {
        return Err(format!("the PTX does not target {arch}"));
    }
    let entries: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix(".visible .entry ")).map(|l| l.split('(').next().unwrap_or("").trim()).collect();
    let mut want: Vec<&str> = ptx::KERNELS.to_vec();
    let mut got = entries.clone();
    want.sort_unstable();
    got.sort_unstable();
    if want != got {
        return Err(format!("kernels in the PTX {got:?}, in ptx::KERNELS {want:?} (keep the list in step with cu/)"));
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let file = out.join(format!("finetp_{arch}.ptx"));
    std::fs::write(&file, &text).map_err(|e| e.to_string())?;
    println!("NVRTC: {} kernels, PTX ISA {version}, {arch}, {} bytes -> {}", entries.len(), text.len(), file.display());
    Ok(file)
}
