//! A minimal GGUF writer the loader's tests share.
#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;

/// A minimal GGUF v3 writer: llama metadata for a 1-layer model and the given tensors
/// (GGUF name, dims in GGUF order, type id, raw bytes).
pub fn write_gguf(path: &Path, tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) {
    write_gguf_with(path, "llama", &[], tensors)
}

/// [`write_gguf`] for architecture `arch`, with extra metadata (`{arch}.`-prefixed keys: a
/// string or an f32 each).
pub fn write_gguf_with(path: &Path, arch: &str, extra: &[(&str, Meta)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    let kv: Vec<(&str, u32)> = vec![
        ("block_count", 1),
        ("embedding_length", 64),
        ("feed_forward_length", 64),
        ("attention.head_count", 2),
        ("attention.head_count_kv", 1),
        ("vocab_size", 32),
    ];
    b.extend((kv.len() as u64 + 1 + extra.len() as u64).to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, arch);
    for (k, v) in kv {
        s(&mut b, &format!("{arch}.{k}"));
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    for (k, v) in extra {
        s(&mut b, &format!("{arch}.{k}"));
        match v {
            Meta::Str(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
            Meta::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            Meta::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for (_, _, _, data) in tensors {
        b.extend(data);
        while b.len() % 32 != 0 {
            b.push(0);
        }
    }
    std::fs::write(path, b).unwrap();
}

/// A metadata value [`write_gguf_with`] writes.
pub enum Meta {
    Str(&'static str),
    F32(f32),
    U32(u32),
}

