//! The device sampler's algorithm (`src/cu/sample.cu`: candidates ordered by a 64-bit key,
//! every cut a binary search over it) compiled as host C (`tests/stubs/sample_host.h`: one
//! thread per block, so only the reductions change) and checked against the CPU reference's
//! `sample` on random rows — ties, NaN, ±inf, tiny and large temperatures, every top-k /
//! top-p / draw including the edges — for the exact same ids. On a GPU the only difference is
//! the order of the f64 sums (`tests/conformance.rs` checks that there).
//!
//! Without gcc the case is listed as ignored with the reason; `FINETP_REQUIRE_CUDA_STUBS=1`
//! makes that a failure.

use std::path::PathBuf;
use std::process::Command;

use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Backend, DType, HostTensor, Kernels, SampleParams};
use finetp_testkit::Rng;
use finetp_testkit::harness::{self, Case, Need};

type SampleFn = unsafe extern "C" fn(*const f32, *const f32, *mut u32, u32, u32, *mut f64);

fn main() {
    let dir = std::env::temp_dir().join(format!("finetp-cuda-sampler-{}", std::process::id()));
    let lib = dir.join("libsample_host.so");
    let need = match build(&dir, &lib) {
        Ok(()) => Need::present("the device sampler as host C (gcc)", "FINETP_REQUIRE_CUDA_STUBS"),
        Err(why) => Need::absent("the device sampler as host C (gcc)", "FINETP_REQUIRE_CUDA_STUBS", why),
    };
    harness::run(vec![Case::new("cuda_sampler::the_device_algorithm_picks_the_cpus_tokens", &[need], move || compare(&lib))])
}

fn build(dir: &std::path::Path, lib: &std::path::Path) -> Result<(), String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let kernel = std::fs::read_to_string(here.join("src/cu/sample.cu")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let src = dir.join("sample_host.c");
    let shim = here.join("tests/stubs/sample_host.h");
    std::fs::write(&src, format!("#include \"{}\"\n{}", shim.display(), kernel.replace("extern \"C\" ", ""))).map_err(|e| e.to_string())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let out = Command::new(&cc).args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-Wno-unused-function", "-ffp-contract=off"]).arg(&src).arg("-o").arg(lib).arg("-lm").output().map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cc} failed on the sampler: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// A random row: mostly ordinary logits, with ties, NaN and ±inf mixed in now and then, and
/// rarely all -inf or all NaN.
fn row(r: &mut Rng, v: usize) -> Vec<f32> {
    let spread = [0.1f32, 1.0, 8.0, 40.0][(r.next_u64() % 4) as usize];
    let mut x: Vec<f32> = (0..v).map(|_| r.f32() * spread).collect();
    for _ in 0..(r.next_u64() % 4) {
        let (i, j) = ((r.next_u64() as usize) % v, (r.next_u64() as usize) % v);
        x[i] = x[j]; // a tie
    }
    match r.next_u64() % 10 {
        0 => x[(r.next_u64() as usize) % v] = f32::NAN,
        1 => x[(r.next_u64() as usize) % v] = f32::INFINITY,
        2 => x[(r.next_u64() as usize) % v] = f32::NEG_INFINITY,
        3 => x.iter_mut().for_each(|l| *l = (*l * 2.0).round() / 2.0), // many ties
        4 if r.next_u64().is_multiple_of(4) => x.iter_mut().for_each(|l| *l = f32::NEG_INFINITY), // every weight NaN
        5 if r.next_u64().is_multiple_of(4) => x.iter_mut().for_each(|l| *l = f32::NAN),
        _ => {}
    }
    x
}

fn params(r: &mut Rng, v: usize) -> SampleParams {
    let pick = |r: &mut Rng, xs: &[f32]| xs[(r.next_u64() as usize) % xs.len()];
    let temperature = pick(r, &[0.0, -1.0, 1e-4, 0.3, 0.7, 1.0, 1.5, 4.0, 100.0]);
    let top_p = pick(r, &[0.0, 0.1, 0.5, 0.9, 0.95, 1.0, 1.5]);
    let top_k = [0, 1, 2, 5, 40, v as u32, v as u32 + 3][(r.next_u64() % 7) as usize];
    let uniform = if r.next_u64().is_multiple_of(5) { pick(r, &[0.0, 0.999_999_9, 0.5]) } else { r.f32().abs().min(0.999_999) };
    SampleParams { temperature, top_p, top_k, uniform }
}

fn compare(lib: &std::path::Path) -> Result<(), String> {
    // SAFETY: the library just built from sample.cu, whose finetp_sample has this signature.
    let l = unsafe { libloading::Library::new(lib) }.map_err(|e| e.to_string())?;
    let f: SampleFn = *unsafe { l.get::<SampleFn>(b"finetp_sample\0") }.map_err(|e| e.to_string())?;
    let set_block: unsafe extern "C" fn(u32) = *unsafe { l.get::<unsafe extern "C" fn(u32)>(b"finetp_host_set_block\0") }.map_err(|e| e.to_string())?;
    let cpu = CpuBackend::new(1).map_err(|e| e.to_string())?;
    let mut r = Rng::new(2024);
    let mut sampled = 0;
    for case in 0..4000 {
        let v = [1usize, 2, 3, 7, 64, 257, 1000][case % 7];
        let m = 1 + case % 3;
        let x: Vec<f32> = (0..m).flat_map(|_| row(&mut r, v)).collect();
        let ps: Vec<SampleParams> = (0..m).map(|_| params(&mut r, v)).collect();
        sampled += ps.iter().filter(|p| p.temperature > 0.0).count();
        let pt = SampleParams::tensor(&ps);
        let pv = pt.to_f32_vec().ok_or("params")?;
        let mut got = vec![0u32; m];
        let mut scratch = vec![0f64; m * v];
        for row in 0..m {
            // One block per row, as the launch does (blockIdx.x is the row).
            // SAFETY: buffers of the sizes the kernel reads and writes.
            unsafe {
                set_block(row as u32);
                f(x.as_ptr(), pv.as_ptr(), got.as_mut_ptr(), m as u32, v as u32, scratch.as_mut_ptr());
            }
        }
        let lg = cpu.upload(&HostTensor::f32(x.clone(), &[m, v]).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let pg = cpu.upload(&pt).map_err(|e| e.to_string())?;
        let mut ids = cpu.zeros(&[m], DType::U32).map_err(|e| e.to_string())?;
        cpu.sample(&lg, &pg, &mut ids).map_err(|e| e.to_string())?;
        let want = match cpu.download(&ids).map_err(|e| e.to_string())?.data {
            finetp_core::backend::HostData::U32(v) => v,
            _ => return Err("ids are not u32".into()),
        };
        if got != want {
            return Err(format!("case {case} [{m}, {v}]: the device algorithm picked {got:?}, the CPU {want:?}; params {ps:?}; logits {x:?}"));
        }
    }
    println!("4000 cases, {sampled} rows sampled with a temperature: all ids equal the CPU's");
    Ok(())
}
