//! The CUDA backend against the CPU reference: the whole conformance suite (finetp-testkit).
//! Without CUDA or a GPU every case is listed as ignored with the reason (the line `open`
//! reports); `FINETP_REQUIRE_CUDA=1` (ci/cuda-device.sh) makes that a failure.

fn main() {
    finetp_testkit::suite::main::<finetp_backend_cuda::CudaBackend>("FINETP_REQUIRE_CUDA")
}
