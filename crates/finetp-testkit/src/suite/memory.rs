//! The memory half of the contract: exact everywhere (it only moves bytes).

use finetp_core::backend::{Backend, Block, DType, DTypeKind, Device, HostTensor};

use super::data::{f32s, fail, host, host_u32};
use super::{Case, Env, ensure};
use crate::Rng;

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new(
            "memory_round_trips_every_dtype_and_shape",
            &["Backend::open", "Backend::describe", "Backend::activation_dtype", "Backend::zeros", "Backend::upload", "Backend::download", "Backend::synchronize"],
            round_trips::<B>,
        ),
        Case::new("memory_copy_block_and_write_equal_the_cpu", &["Backend::copy_block", "Backend::write"], copies::<B>),
        Case::new("memory_bad_shapes_are_errors", &["Backend::copy_block", "Backend::write"], bad_shapes::<B>),
    ]
}

fn round_trips<B: Device>(env: &Env<B>) -> Result<(), String> {
    let be = &env.be;
    ensure(!be.describe().is_empty(), || "describe() is empty".into())?;
    let act = be.activation_dtype();
    ensure(act.kind() == DTypeKind::Float, || format!("activation dtype {act} is not a float"))?;
    let mut r = Rng::new(1);
    for shape in [vec![0], vec![1], vec![3], vec![5, 7], vec![2, 0, 3], vec![4, 3, 5]] {
        let n: usize = shape.iter().product();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let h = host(&r.f32s(n), &shape, dt);
            let back = be.download(&be.upload(&h).map_err(fail("upload"))?).map_err(fail("download"))?;
            ensure(back == h, || format!("{dt} {shape:?}: download(upload(h)) != h"))?;
        }
        let u = host_u32(&(0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect::<Vec<_>>(), &shape);
        ensure(be.download(&be.upload(&u).map_err(fail("upload"))?).map_err(fail("download"))? == u, || format!("u32 {shape:?}: not exact"))?;
        for dt in [DType::F32, DType::BF16, DType::U32] {
            let z = be.zeros(&shape, dt).map_err(fail("zeros"))?;
            ensure(z.shape() == shape.as_slice() && z.dtype() == dt, || format!("zeros {shape:?} {dt} gave {:?} {}", z.shape(), z.dtype()))?;
            let v = be.download(&z).map_err(fail("download"))?;
            let zero = match &v.data {
                finetp_core::backend::HostData::U32(x) => x.iter().all(|&x| x == 0),
                _ => v.to_f32_vec().is_some_and(|x| x.iter().all(|x| x.to_bits() == 0)),
            };
            ensure(zero, || format!("zeros {shape:?} {dt} are not +0"))?;
        }
    }
    be.synchronize().map_err(fail("synchronize"))
}

fn copies<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(2);
    for dt in [DType::F32, DType::U32, DType::BF16, DType::F16] {
        let (sr, sc, dr, dc) = (7, 9, 6, 11);
        let data = |r: &mut Rng, n: usize| if dt == DType::U32 { host_u32(&(0..n as u32).collect::<Vec<_>>(), &[n]) } else { host(&r.f32s(n), &[n], dt) };
        let src = data(&mut r, sr * sc);
        let src = HostTensor::new(src.data, &[sr, sc]).map_err(fail("src"))?;
        let dst = data(&mut r, dr * dc);
        let dst = HostTensor::new(dst.data, &[dr, dc]).map_err(fail("dst"))?;
        // Blocks: odd offsets and widths (16-bit halves of shared words), whole rows, one
        // element, nothing.
        for b in [Block::at((1, 2), (3, 5), 3, 5), Block::rows(0, 0, 6, 9), Block::at((2, 0), (1, 2), 4, 9), Block::at((6, 3), (5, 10), 1, 1), Block::at((0, 1), (0, 0), 0, 3)] {
            let (sg, scp) = p.both(&src)?;
            let (mut dg, mut dcp) = p.both(&dst)?;
            p.be.copy_block(&sg, &mut dg, b).map_err(fail("copy_block"))?;
            p.cpu.copy_block(&scp, &mut dcp, b).map_err(fail("cpu copy_block"))?;
            let (g, c) = (p.be.download(&dg).map_err(fail("download"))?, p.cpu.download(&dcp).map_err(fail("download"))?);
            ensure(g == c, || format!("{dt} copy_block {b:?}: differs from the CPU"))?;
        }
        let (mut dg, _) = p.both(&dst)?;
        p.be.write(&mut dg, &dst).map_err(fail("write"))?;
        ensure(p.be.download(&dg).map_err(fail("download"))? == dst, || format!("{dt} write: not exact"))?;
    }
    // write is ordered after the work enqueued before it, and before the work after it.
    let (a, b) = (host(&[1.0, 2.0, 3.0], &[1, 3], DType::F32), host(&[10.0, 20.0, 30.0], &[1, 3], DType::F32));
    let be = &env.be;
    let mut t = be.upload(&a).map_err(fail("upload"))?;
    let mut u = be.zeros(&[1, 3], DType::F32).map_err(fail("zeros"))?;
    be.copy_block(&t, &mut u, Block::rows(0, 0, 1, 3)).map_err(fail("copy_block"))?;
    be.write(&mut t, &b).map_err(fail("write"))?;
    be.copy_block(&t, &mut u, Block::at((0, 0), (0, 1), 1, 2)).map_err(fail("copy_block"))?;
    ensure(f32s(be, &u)? == [1.0, 10.0, 20.0], || "copy, write, copy did not run in issue order".into())
}

fn bad_shapes<B: Device>(env: &Env<B>) -> Result<(), String> {
    let be = &env.be;
    let a = be.upload(&host(&[0.0; 6], &[2, 3], DType::F32)).map_err(fail("upload"))?;
    let mut b = be.zeros(&[2, 3], DType::F32).map_err(fail("zeros"))?;
    ensure(be.copy_block(&a, &mut b, Block::at((1, 0), (0, 0), 2, 3)).is_err(), || "a block past the source's rows was accepted".into())?;
    ensure(be.copy_block(&a, &mut b, Block::at((0, 1), (0, 1), 1, 3)).is_err(), || "a block past the row width was accepted".into())?;
    let mut c = be.zeros(&[2, 3], DType::BF16).map_err(fail("zeros"))?;
    ensure(be.copy_block(&a, &mut c, Block::rows(0, 0, 1, 3)).is_err(), || "a copy between dtypes was accepted".into())?;
    ensure(be.write(&mut b, &host(&[0.0; 3], &[1, 3], DType::F32)).is_err(), || "a write of another shape was accepted".into())?;
    ensure(be.write(&mut b, &host(&[0.0; 6], &[2, 3], DType::BF16)).is_err(), || "a write of another dtype was accepted".into())?;
    be.synchronize().map_err(fail("synchronize after refused calls"))
}
