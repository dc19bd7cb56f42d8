//! Graph capture: a backend either refuses it (and the engine runs graph mode's static shapes
//! eagerly), or records a step that, replayed on rewritten inputs, equals running it eagerly;
//! host round trips inside a capture are refused. (Collectives inside a captured step are
//! covered by the sharded layers' graph case.)

use finetp_core::backend::{BackendError, CapturedGraph, DType, Device, Tensor};

use super::data::{f32s, fail, host};
use super::{Case, Env, ensure};
use crate::Rng;
use crate::tolerance::{Op, close};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![Case::new(
        "graph_replay_on_new_inputs_equals_eager_or_capture_is_refused",
        &["Backend::begin_capture", "Backend::end_capture", "CapturedGraph::ops", "CapturedGraph::replay"],
        replay::<B>,
    )]
}

/// The step under capture: `y = rms_norm(linear(x, w) + x) · g` with fresh intermediates (which
/// the backend must re-zero or re-create at every replay).
fn step<B: Device>(be: &B, x: &Tensor<B>, w: &Tensor<B>, g: &Tensor<B>, y: &mut Tensor<B>) -> Result<(), BackendError> {
    let mut h = be.zeros(x.shape(), be.activation_dtype())?;
    be.linear(x, w, None, &mut h)?;
    be.add_assign(&mut h, x)?;
    be.rms_norm(&h, g, 1e-5, y)
}

fn replay<B: Device>(env: &Env<B>) -> Result<(), String> {
    let be = &env.be;
    let act = be.activation_dtype();
    let mut r = Rng::new(12);
    let (t, h) = (3, 40);
    let w = be.upload(&host(&r.f32s(h * h), &[h, h], DType::F32)).map_err(fail("upload"))?;
    let g = be.upload(&host(&r.f32s(h), &[h], DType::F32)).map_err(fail("upload"))?;
    let mut x = be.upload(&host(&r.f32s(t * h), &[t, h], act)).map_err(fail("upload"))?;
    let mut y = be.zeros(&[t, h], act).map_err(fail("zeros"))?;
    match be.begin_capture() {
        Err(BackendError::Unsupported(_)) => {
            ensure(be.end_capture().is_err(), || "end_capture without a capture must fail".into())?;
            return step(be, &x, &w, &g, &mut y).map_err(fail("eager step after a refused capture"));
        }
        Err(e) => return Err(format!("begin_capture failed with {e} (only Unsupported is allowed)")),
        Ok(()) => {}
    }
    let captured = step(be, &x, &w, &g, &mut y);
    let refused = be.download(&y);
    let graph = be.end_capture();
    captured.map_err(fail("the captured step"))?;
    ensure(matches!(refused, Err(BackendError::Unsupported(_))), || "a download during capture must be refused (Unsupported)".into())?;
    let mut graph: Box<dyn CapturedGraph> = graph.map_err(fail("end_capture"))?;
    ensure(graph.ops() >= 4, || format!("{} recorded calls for a step of at least four", graph.ops()))?;
    for i in 0..3 {
        let xs = r.f32s(t * h);
        be.write(&mut x, &host(&xs, &[t, h], act)).map_err(fail("write"))?;
        // SAFETY: every tensor the graph recorded (x, w, g, y) is alive and untouched while it
        // replays; the intermediates it made are its own.
        unsafe { graph.replay() }.map_err(|e| format!("replay {i}: {e}"))?;
        let got = f32s(be, &y)?;
        let mut eager = be.zeros(&[t, h], act).map_err(fail("zeros"))?;
        step(be, &x, &w, &g, &mut eager).map_err(fail("eager step"))?;
        close(&got, &f32s(be, &eager)?, Op::Exact.tol(act), &format!("replay {i} against the eager step on the same inputs"))?;
    }
    Ok(())
}
