//! The wgpu backend against the CPU reference: the whole conformance suite (finetp-testkit),
//! then wgpu's own cases. Without a Vulkan/Metal/DX12 adapter every case is listed as ignored
//! with the reason; `FINETP_REQUIRE_WGPU=1` (CI, on lavapipe) makes that a failure.

mod wgpu;

use wgpu::{errors, gemm_order, options};

fn main() {
    finetp_testkit::suite::main_with::<finetp_backend_wgpu::WgpuBackend>(
        "FINETP_REQUIRE_WGPU",
        vec![
            ("wgpu_gemm_order_is_the_cpus_under_the_drivers_fma", gemm_order::linear_matches_for_every_weight_dtype_bias_and_shape),
            ("wgpu_f16_weights_same_bits_with_and_without_shader_f16", gemm_order::f16_weights_give_the_same_bits_with_and_without_shader_f16),
            ("wgpu_weights_past_one_binding_are_read_through_windows", gemm_order::weights_larger_than_one_binding_are_split_into_row_windows),
            ("wgpu_embedding_tables_past_one_binding_are_read_through_windows", options::embedding_of_a_table_larger_than_one_binding_reads_it_through_windows),
            ("wgpu_rms_norm_exact_with_shader_f64_close_without", options::rms_norm_is_exact_with_shader_f64_and_close_without),
            ("wgpu_adapter_is_described", options::the_adapter_is_described_and_its_limits_taken),
            ("wgpu_bad_shapes_and_dtypes_are_errors", errors::bad_shapes_and_dtypes_are_errors),
            ("wgpu_kv_rows_outside_the_cache_are_reported_at_the_next_sync", errors::kv_cache_rows_outside_the_cache_are_reported_at_the_next_sync_point),
            ("wgpu_unsplittable_tensors_past_the_binding_limit_are_errors", errors::tensors_beyond_the_binding_limit_that_cannot_be_split_are_errors),
        ],
    )
}
