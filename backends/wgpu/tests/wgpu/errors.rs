//! Bad input comes back as an `Err`, never a panic: shapes and dtypes are checked when a call
//! is enqueued; KV-cache rows outside the cache (device-side indices) are found by the kernel
//! and reported at the next sync point, after which the backend keeps working.

use finetp_core::backend::{AttentionParams, Backend, BackendError, Block, DType, Gemm, HostData, HostTensor, Kernels, KvIndex, RopeStyle, RopeTable};

use super::common::*;

fn shape_err<T: std::fmt::Debug>(r: Result<T, BackendError>, what: &str) {
    assert!(matches!(r, Err(BackendError::Shape(_))), "{what}: expected a shape error, got {r:?}");
}

fn dtype_err<T: std::fmt::Debug>(r: Result<T, BackendError>, what: &str) {
    assert!(matches!(r, Err(BackendError::DType { .. })), "{what}: expected a dtype error, got {r:?}");
}

pub fn bad_shapes_and_dtypes_are_errors() {
    let be = backend();
    let f = |shape: &[usize]| be.zeros(shape, DType::F32).unwrap();
    let u = |shape: &[usize]| be.zeros(shape, DType::U32).unwrap();
    let bf = |shape: &[usize]| be.zeros(shape, DType::BF16).unwrap();
    // GEMM
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 5]), None, &mut f(&[2, 4])), "linear k mismatch");
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 3]), None, &mut f(&[2, 5])), "linear y shape");
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 3]), Some(&f(&[5])), &mut f(&[2, 4])), "linear bias length");
    shape_err(be.linear(&f(&[6]), &f(&[4, 3]), None, &mut f(&[2, 4])), "linear 1-D x");
    dtype_err(be.linear(&f(&[2, 3]), &u(&[4, 3]), None, &mut f(&[2, 4])), "linear u32 weights");
    dtype_err(be.linear(&bf(&[2, 3]), &f(&[4, 3]), None, &mut f(&[2, 4])), "linear bf16 x");
    // Kernels
    shape_err(be.embedding(&u(&[3]), &f(&[10, 4]), 0, &mut f(&[3, 5])), "embedding y width");
    dtype_err(be.embedding(&f(&[3]), &f(&[10, 4]), 0, &mut f(&[3, 4])), "embedding f32 ids");
    dtype_err(be.embedding(&u(&[3]), &u(&[10, 4]), 0, &mut f(&[3, 4])), "embedding u32 table");
    shape_err(be.rms_norm(&f(&[2, 8]), &f(&[7]), 1e-5, &mut f(&[2, 8])), "rms_norm weight length");
    shape_err(be.rms_norm(&f(&[2, 8]), &f(&[8]), 1e-5, &mut f(&[2, 9])), "rms_norm y shape");
    let table = |n: usize| RopeTable { inv_freq: f(&[n]), style: RopeStyle::Neox, attention_factor: 1.0 };
    shape_err(be.rope(&mut f(&[2, 8]), &u(&[2]), &table(2)), "rope 2-D x");
    shape_err(be.rope(&mut f(&[2, 1, 8]), &u(&[3]), &table(2)), "rope positions length");
    shape_err(be.rope(&mut f(&[2, 1, 8]), &u(&[2]), &table(5)), "rope rotary dim");
    dtype_err(be.rope(&mut f(&[2, 1, 8]), &f(&[2]), &table(2)), "rope f32 positions");
    shape_err(be.silu_mul(&f(&[2, 7]), &mut f(&[2, 4])), "silu_mul odd gate_up");
    shape_err(be.add_assign(&mut f(&[2, 3]), &f(&[3, 2])), "add_assign shapes");
    let (table2, s2, s3) = (u(&[2, 1]), u(&[2]), u(&[3]));
    let ix = |s| KvIndex { block_table: &table2, slots: s, positions: &s2 };
    shape_err(be.kv_cache_write(&f(&[2, 1, 4]), &mut f(&[2, 5, 1, 3]), &ix(&s2)), "kv write row width");
    shape_err(be.kv_cache_write(&f(&[2, 1, 4]), &mut f(&[2, 5, 1, 4]), &ix(&s3)), "kv write slots length");
    let p = AttentionParams { scale: 1.0, sliding_window: None };
    let (s1, one_table) = (u(&[1]), u(&[1, 1]));
    let ix1 = KvIndex { block_table: &one_table, slots: &s1, positions: &s1 };
    shape_err(be.kv_cache_attention(&f(&[1, 3, 4]), &f(&[2, 5, 2, 4]), &f(&[2, 5, 2, 4]), &ix1, &p, &mut f(&[1, 3, 4])), "attention heads not a multiple of kv heads");
    shape_err(be.kv_cache_attention(&f(&[1, 4, 4]), &f(&[2, 5, 2, 4]), &f(&[2, 6, 2, 4]), &ix1, &p, &mut f(&[1, 4, 4])), "attention k/v caches differ");
    shape_err(be.sample(&f(&[2, 3, 4]), &f(&[2, 4]), &mut u(&[2])), "sample 3-D logits");
    shape_err(be.sample(&f(&[2, 3]), &f(&[2, 3]), &mut u(&[2])), "sample params width");
    // Memory
    shape_err(be.copy_block(&f(&[3, 4]), &mut f(&[3, 4]), Block::at((2, 0), (0, 0), 2, 4)), "copy_block past the source");
    shape_err(be.copy_block(&f(&[3, 4]), &mut bf(&[3, 4]), Block::rows(0, 0, 1, 1)), "copy_block dtype");
    shape_err(be.write(&mut f(&[2, 2]), &HostTensor::f32(vec![0.0; 6], &[2, 3]).unwrap()), "write shape");
    let bad = HostTensor { data: HostData::F32(vec![1.0; 3]), shape: vec![2, 2] };
    shape_err(be.upload(&bad), "upload of a host tensor whose data does not fill its shape");
    shape_err(f(&[2, 3]).reshape(&[7]), "reshape");
    // Still usable.
    let t = be.upload(&HostTensor::f32(vec![1.0, 2.0], &[2]).unwrap()).unwrap();
    assert_eq!(f32s_of(&be, &t), vec![1.0, 2.0]);
}

pub fn kv_cache_rows_outside_the_cache_are_reported_at_the_next_sync_point() {
    let be = backend();
    // Two slots of one block of 4 rows each (the pool's blocks 1 and 0).
    let (blocks, bs, n, d) = (2, 4, 1, 8);
    let mut cache = be.zeros(&[blocks, bs, n, d], DType::F32).unwrap();
    let u32s = |v: Vec<u32>, shape: &[usize]| be.upload(&HostTensor::u32(v, shape).unwrap()).unwrap();
    let table = u32s(vec![1, 0], &[2, 1]);
    let x = be.upload(&HostTensor::f32(vec![1.0; 3 * n * d], &[3, n, d]).unwrap()).unwrap();
    let (slots, pos) = (u32s(vec![0, 1, 2], &[3]), u32s(vec![0, 3, 0], &[3]));
    be.kv_cache_write(&x, &mut cache, &KvIndex { block_table: &table, slots: &slots, positions: &pos }).expect("enqueued: the indices are on the device");
    let err = be.synchronize().expect_err("row 2 addresses slot 2 of 2");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Shape(_)) && msg.contains("kv_cache_write") && msg.contains("row 2") && msg.contains("slot 2"), "{msg}");
    // The in-range rows were written (slot 0 = block 1, slot 1 = block 0) and the error is cleared.
    let c = f32s_of(&be, &cache);
    assert!(c[bs * d..(bs + 1) * d].iter().all(|v| *v == 1.0) && c[3 * d..4 * d].iter().all(|v| *v == 1.0), "{c:?}");
    be.synchronize().expect("the error was reported once");
    // Attention too, reported by a download.
    let q = be.zeros(&[1, 2, d], DType::F32).unwrap();
    let mut y = be.zeros(&[1, 2, d], DType::F32).unwrap();
    let (s0, p9) = (u32s(vec![0], &[1]), u32s(vec![9], &[1]));
    let p = AttentionParams { scale: 1.0, sliding_window: None };
    be.kv_cache_attention(&q, &cache, &cache, &KvIndex { block_table: &table, slots: &s0, positions: &p9 }, &p, &mut y).expect("enqueued");
    let err = be.download(&y).expect_err("position 9 of one block of 4");
    assert!(err.to_string().contains("kv_cache_attention"), "{err}");
    assert_eq!(f32s_of(&be, &y), vec![0.0; 2 * d], "the bad row got zeros");
}

pub fn tensors_beyond_the_binding_limit_that_cannot_be_split_are_errors() {
    let be = open(finetp_backend_wgpu::WgpuOptions { max_binding_bytes: Some(4096), ..Default::default() });
    let x = be.zeros(&[2, 1024], DType::F32).unwrap(); // 8 KiB activation: one binding only
    let mut y = be.zeros(&[2, 1024], DType::F32).unwrap();
    let r = be.silu_mul(&be.zeros(&[2, 2048], DType::F32).unwrap(), &mut y);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
    let r = be.add_assign(&mut y, &x);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
    // A weight row wider than a binding cannot be windowed.
    let w = be.zeros(&[2, 2048], DType::F32).unwrap();
    let mut o = be.zeros(&[1, 2], DType::F32).unwrap();
    let r = be.linear(&be.zeros(&[1, 2048], DType::F32).unwrap(), &w, None, &mut o);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
}
