//! The Ascend backend against the CPU reference: the whole conformance suite (finetp-testkit).
//! Without CANN or an NPU every case is listed as ignored with the reason (the line `open`
//! reports); `FINETP_REQUIRE_ASCEND=1` makes that a failure.

fn main() {
    finetp_testkit::suite::main::<finetp_backend_ascend::AscendBackend>("FINETP_REQUIRE_ASCEND")
}
