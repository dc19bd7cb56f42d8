//! Compiled kernels, built on first use and cached per backend handle.
//!
//! A kernel is a WGSL module specialised on the host (dtype of its float inputs, rows per
//! invocation): one pipeline per distinct source. Compilation runs inside a validation error
//! scope, so a shader the driver rejects is a [`BackendError::Device`], not wgpu's default
//! panic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use finetp_core::backend::BackendError;

use crate::WgpuBackend;

/// A compute pipeline and the layout of its bind group 0.
pub(crate) struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct Pipelines {
    map: Mutex<HashMap<String, Arc<Kernel>>>,
}

impl WgpuBackend {
    /// The kernel called `key`, compiling `source()` the first time.
    pub(crate) fn kernel(&self, key: &str, source: impl FnOnce() -> String) -> Result<Arc<Kernel>, BackendError> {
        let cache = &self.inner.pipelines.map;
        if let Some(k) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(key) {
            return Ok(k.clone());
        }
        let k = Arc::new(self.compile(key, &source())?);
        Ok(cache.lock().unwrap_or_else(PoisonError::into_inner).entry(key.to_string()).or_insert(k).clone())
    }

    fn compile(&self, key: &str, src: &str) -> Result<Kernel, BackendError> {
        let dev = self.device();
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(key), source: wgpu::ShaderSource::Wgsl(src.into()) });
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::device(format!("compiling kernel {key}"), e));
        }
        Ok(Kernel { name: key.to_string(), pipeline, layout })
    }
}
