//! The decoder [`Kernels`] on the GPU: every one an NVRTC kernel from `cu/` (see `ptx.rs`),
//! launched on the rank's stream with its index tensors read on the device, so a decode step
//! (sampling included) has no host round trip and is captured whole. MoE routing alone runs on
//! the host with the CPU reference's code (a sync point, refused during a capture).

use std::collections::HashMap;
use std::ffi::{CString, c_void};

use cudarc::driver::sys as cu;
use cudarc::nvrtc::Ptx;
use finetp_backend_cpu::on_host;
use finetp_core::backend::{AttentionParams, BackendError, DType, Kernels, KvIndex, MoeRouting, RopeStyle, RopeTable, Tensor, checks};

use crate::CudaBackend;
use crate::runtime::driver_err;

/// The loaded module's functions, by name.
pub(crate) struct Functions {
    module: cu::CUmodule,
    by_name: HashMap<&'static str, cu::CUfunction>,
}

// SAFETY: module and function handles are usable from any thread with the context current.
unsafe impl Send for Functions {}
unsafe impl Sync for Functions {}

impl Functions {
    /// Loads `ptx` into the current context and resolves every kernel in [`crate::ptx::KERNELS`].
    pub(crate) fn load(ptx: &Ptx) -> Result<Self, BackendError> {
        let src = CString::new(ptx.to_src()).map_err(|_| BackendError::device("NVRTC", "PTX with a NUL byte"))?;
        // SAFETY: a NUL-terminated PTX image, loaded into the current context.
        let module = unsafe { cudarc::driver::result::module::load_data(src.as_ptr().cast()) }.map_err(|e| driver_err("cuModuleLoadData (finetp's kernels)", e))?;
        let mut by_name = HashMap::new();
        for name in crate::ptx::KERNELS {
            let c = CString::new(name).map_err(|_| BackendError::device("NVRTC", "kernel name"))?;
            // SAFETY: the module just loaded.
            let f = unsafe { cudarc::driver::result::module::get_function(module, c) }.map_err(|e| driver_err(&format!("cuModuleGetFunction({name})"), e))?;
            by_name.insert(name, f);
        }
        Ok(Self { module, by_name })
    }
}

impl Drop for Functions {
    fn drop(&mut self) {
        // SAFETY: loaded once by `load`; nothing launches after the handle is gone.
        unsafe { cu::cuModuleUnload(self.module) };
    }
}

/// One kernel argument (kernels take device addresses and scalars only).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    Ptr(cu::CUdeviceptr),
    U64(u64),
    U32(u32),
    I32(i32),
    F32(f32),
}

/// A grid for a grid-stride element-wise kernel of `n` elements in blocks of 256.
pub(crate) fn elementwise_grid(n: usize) -> (u32, u32) {
    ((n.div_ceil(256)).clamp(1, 65_535) as u32, 1)
}

fn u32_of(n: usize, what: &str) -> Result<u32, BackendError> {
    u32::try_from(n).map_err(|_| BackendError::Shape(format!("{what} {n} does not fit the kernels' u32 indices")))
}


/// The `dt` argument of kernels that read any float dtype.
fn float_code(t: &Tensor<CudaBackend>, op: &'static str) -> Result<i32, BackendError> {
    match t.dtype() {
        DType::F32 => Ok(0),
        DType::BF16 => Ok(1),
        DType::F16 => Ok(2),
        got => Err(BackendError::DType { op, expected: "f32, bf16 or f16", got }),
    }
}

fn ptr(t: &Tensor<CudaBackend>) -> Arg {
    Arg::Ptr(t.buffer().device_ptr())
}

impl CudaBackend {
    /// Enqueues kernel `name` on the rank's stream, grid `(x, y)` of `block`-thread blocks.
    pub(crate) fn launch(&self, name: &'static str, (gx, gy): (u32, u32), block: u32, args: &[Arg]) -> Result<(), BackendError> {
        let f = *self.shared.funcs.by_name.get(name).ok_or_else(|| BackendError::device("CUDA", format!("kernel {name} is not loaded")))?;
        let mut vals: Vec<Arg> = args.to_vec();
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|a| match a {
                Arg::Ptr(v) | Arg::U64(v) => std::ptr::from_mut(v).cast(),
                Arg::U32(v) => std::ptr::from_mut(v).cast(),
                Arg::I32(v) => std::ptr::from_mut(v).cast(),
                Arg::F32(v) => std::ptr::from_mut(v).cast(),
            })
            .collect();
        self.bind()?;
        self.enqueued();
        // SAFETY: `ptrs` point at `vals`, alive across the call (the driver copies them); the
        // kernels' argument lists are those written in `cu/`, and every device address is a
        // live buffer the caller checked the shape of.
        unsafe { cudarc::driver::result::launch_kernel(f, (gx, gy, 1), (block, 1, 1), 0, self.stream(), &mut ptrs) }.map_err(|e| driver_err(&format!("cuLaunchKernel({name})"), e))
    }
}

impl Kernels for CudaBackend {
    /// `ids` u32 `[T]`, `table` `[Vs, H]` (this rank's vocab shard, any float), `y` f32 `[T, H]`.
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (vs, h, t) = checks::embedding(ids, table, y)?;
        if t == 0 || h == 0 {
            return Ok(());
        }
        let dt = float_code(table, "embedding table")?;
        let args = [ptr(ids), ptr(table), Arg::I32(dt), Arg::U32(u32_of(row_start, "row start")?), Arg::U32(u32_of(vs, "rows")?), Arg::U32(u32_of(h, "hidden")?), ptr(y), Arg::U32(u32_of(t, "rows")?)];
        self.launch("finetp_embedding", (u32_of(t, "rows")?, 1), 256, &args)
    }

    /// `x`, `y` f32 `[.., H]`, `w` `[H]` any float; one block a row.
    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let h = w.numel();
        if h == 0 || x.shape().last() != Some(&h) || x.shape() != y.shape() {
            return Err(BackendError::Shape(format!("rms_norm: x {:?}, w {:?}, y {:?}", x.shape(), w.shape(), y.shape())));
        }
        checks::f32_activation(x, "rms_norm x")?;
        checks::f32_activation(y, "rms_norm y")?;
        let rows = x.numel() / h;
        if rows == 0 {
            return Ok(());
        }
        let args = [ptr(x), ptr(w), Arg::I32(float_code(w, "rms_norm w")?), Arg::F32(eps), ptr(y), Arg::U32(u32_of(rows, "rows")?), Arg::U32(u32_of(h, "hidden")?)];
        self.launch("finetp_rms_norm", (u32_of(rows, "rows")?, 1), 256, &args)
    }

    /// `x` f32 `[T, nh, hd]` in place, `positions` u32 `[T]`, `inv_freq` f32 `[rd / 2]`.
    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, table: &RopeTable<Self>) -> Result<(), BackendError> {
        let [t, nh, hd] = *x.shape() else {
            return Err(BackendError::Shape(format!("rope: x must be [T, heads, head_dim], got {:?}", x.shape())));
        };
        let half = table.inv_freq.numel();
        if positions.numel() != t || positions.dtype() != DType::U32 || 2 * half > hd || table.inv_freq.dtype() != DType::F32 {
            return Err(BackendError::Shape(format!("rope: {} positions for {t} rows, rotary dim {} for head_dim {hd}", positions.numel(), 2 * half)));
        }
        checks::f32_activation(x, "rope x")?;
        if t == 0 || nh == 0 || half == 0 {
            return Ok(());
        }
        let style = i32::from(table.style == RopeStyle::Interleaved);
        let args = [ptr(x), ptr(positions), ptr(&table.inv_freq), Arg::U32(t as u32), Arg::U32(nh as u32), Arg::U32(hd as u32), Arg::U32(half as u32), Arg::I32(style), Arg::F32(table.attention_factor)];
        self.launch("finetp_rope", (u32_of(t, "rows")?, u32_of(nh, "heads")?), 64, &args)
    }

    /// `gate_up` f32 `[T, 2I]` → `y` f32 `[T, I]`.
    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let [t, two_i] = *gate_up.shape() else {
            return Err(BackendError::Shape(format!("silu_mul: gate_up must be [T, 2I], got {:?}", gate_up.shape())));
        };
        if !two_i.is_multiple_of(2) || y.shape() != [t, two_i / 2] {
            return Err(BackendError::Shape(format!("silu_mul: gate_up {:?} into y {:?}", gate_up.shape(), y.shape())));
        }
        checks::f32_activation(gate_up, "silu_mul gate_up")?;
        checks::f32_activation(y, "silu_mul y")?;
        if t == 0 || two_i == 0 {
            return Ok(());
        }
        let args = [ptr(gate_up), ptr(y), Arg::U32(u32_of(t, "rows")?), Arg::U32(u32_of(two_i / 2, "intermediate")?)];
        self.launch("finetp_silu_mul", elementwise_grid(t * two_i / 2), 256, &args)
    }

    /// `a += b`, f32, same shape.
    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        if a.shape() != b.shape() {
            return Err(BackendError::Shape(format!("add_assign: {:?} += {:?}", a.shape(), b.shape())));
        }
        checks::f32_activation(a, "add_assign a")?;
        checks::f32_activation(b, "add_assign b")?;
        if a.numel() == 0 {
            return Ok(());
        }
        self.launch("finetp_add_f32", elementwise_grid(a.numel()), 256, &[ptr(a), ptr(b), Arg::U64(a.numel() as u64)])
    }

    /// `x` f32 `[T, n, d]` into `cache` f32 `[blocks, bs, n, d]` at each row's place.
    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, index: &KvIndex<'_, Self>) -> Result<(), BackendError> {
        let d = checks::kv_cache_write(x, cache, index)?;
        checks::f32_activation(x, "kv_cache_write x")?;
        checks::f32_activation(cache, "kv_cache_write cache")?;
        let t = x.rows();
        if t == 0 || x.row_len() == 0 {
            return Ok(());
        }
        let args = [
            ptr(x),
            ptr(cache),
            ptr(index.block_table),
            ptr(index.slots),
            ptr(index.positions),
            Arg::U32(u32_of(t, "rows")?),
            Arg::U32(u32_of(d.heads * d.dim, "row")?),
            Arg::U32(u32_of(d.block_size, "block size")?),
            Arg::U32(u32_of(d.max_blocks, "blocks per slot")?),
            Arg::U32(u32_of(d.blocks, "blocks")?),
            Arg::U32(u32_of(d.seqs, "slots")?),
            Arg::Ptr(self.shared.err_flag),
        ];
        self.shared.err_armed.store(true, std::sync::atomic::Ordering::Release);
        self.launch("finetp_kv_write", (t as u32, 1), 128, &args)
    }

    /// `q` f32 `[T, nh, dk]`, caches f32 `[blocks, bs, nkv, dk|dv]`, `y` f32 `[T, nh, dv]`.
    fn kv_cache_attention(&self, q: &Tensor<Self>, k_cache: &Tensor<Self>, v_cache: &Tensor<Self>, index: &KvIndex<'_, Self>, params: &AttentionParams, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let a = checks::kv_cache_attention(q, k_cache, v_cache, index, y)?;
        for (t, op) in [(q, "attention q"), (k_cache, "attention k cache"), (v_cache, "attention v cache"), (&*y, "attention y")] {
            checks::f32_activation(t, op)?;
        }
        if a.dv > 1024 {
            return Err(BackendError::Unsupported(format!("kv_cache_attention: value heads of {} dims (the kernel holds at most 1024)", a.dv)));
        }
        if a.t == 0 || a.heads == 0 {
            return Ok(());
        }
        let c = a.cache;
        let args = [
            ptr(q),
            ptr(k_cache),
            ptr(v_cache),
            ptr(index.block_table),
            ptr(index.slots),
            ptr(index.positions),
            ptr(y),
            Arg::U32(a.t as u32),
            Arg::U32(a.heads as u32),
            Arg::U32(a.kv_heads as u32),
            Arg::U32(a.dk as u32),
            Arg::U32(a.dv as u32),
            Arg::U32(u32_of(c.block_size, "block size")?),
            Arg::U32(u32_of(c.max_blocks, "blocks per slot")?),
            Arg::U32(u32_of(c.blocks, "blocks")?),
            Arg::U32(u32_of(c.seqs, "slots")?),
            Arg::F32(params.scale),
            Arg::U32(params.sliding_window.unwrap_or(0)),
            Arg::Ptr(self.shared.err_flag),
        ];
        self.shared.err_armed.store(true, std::sync::atomic::Ordering::Release);
        self.launch("finetp_attention", (u32_of(a.t, "rows")?, u32_of(a.heads, "heads")?), 32, &args)
    }

    /// `logits` f32 `[M, V]`, `params` f32 `[M, 4]` → `ids` u32 `[M]`, all on the device.
    fn sample(&self, logits: &Tensor<Self>, params: &Tensor<Self>, ids: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (m, v) = checks::sample(logits, params, ids)?;
        checks::f32_activation(logits, "sample logits")?;
        if m == 0 {
            return Ok(());
        }
        // Each row's weights, computed once by the kernel (f64, as the contract says).
        let scratch = self.alloc(m * v * 8)?;
        let args = [ptr(logits), ptr(params), ptr(ids), Arg::U32(u32_of(m, "rows")?), Arg::U32(u32_of(v, "vocabulary")?), Arg::Ptr(scratch.device_ptr())];
        self.launch("finetp_sample", (m as u32, 1), 1024, &args)
    }

    fn moe_route(&self, router_logits: &Tensor<Self>, bias: Option<&Tensor<Self>>, rule: &MoeRouting, ids: &mut Tensor<Self>, weights: &mut Tensor<Self>) -> Result<(), BackendError> {
        checks::moe_route(router_logits, bias, rule, ids, weights)?;
        self.no_host_during_capture("moe_route (on the host)")?;
        on_host::moe_route(self, self.cpu()?, router_logits, bias, rule, ids, weights)
    }
}
