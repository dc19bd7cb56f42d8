//! The conformance suite on the CPU backend: it is the reference, so this checks the suite and
//! the CPU together (the CPU's own tests check it against naive references).

fn main() {
    finetp_testkit::suite::main::<finetp_backend_cpu::CpuBackend>("FINETP_REQUIRE_CPU")
}
