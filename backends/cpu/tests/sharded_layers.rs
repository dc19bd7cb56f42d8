//! The four sharded layers on CPU ranks against the unsharded ones, over a wider sweep than the
//! conformance suite runs on every backend: DP 8 and 16, every size 1–8, each component alone,
//! all four together and a mixed layout, eager and graph, prefill and decode, uneven and zero
//! token counts (`finetp_testkit::suite::sweep_layers`; tolerance `Op::Layer`).

#[test]
fn every_size_inside_dp_8_and_16_matches_unsharded() {
    finetp_testkit::suite::sweep_layers::<finetp_backend_cpu::CpuBackend>(&[8, 16], &[1, 2, 4, 8]).unwrap();
}
