//! Recording one kernel launch: its parameters, its bindings, its grid.

use finetp_core::backend::BackendError;

use crate::WgpuBackend;
use crate::pipelines::Kernel;

/// Kernel parameters: 32-bit words (floats as their bits), bound as the uniform at binding 0.
pub(crate) struct Params(Vec<u32>);

impl Params {
    pub(crate) fn new() -> Self {
        Params(Vec::with_capacity(16))
    }

    /// Appends a count or index; values that do not fit 32 bits are an error (the kernels
    /// index in u32).
    pub(crate) fn u(mut self, v: usize) -> Result<Self, BackendError> {
        self.0.push(u32::try_from(v).map_err(|_| BackendError::Unsupported(format!("{v} does not fit a 32-bit kernel index")))?);
        Ok(self)
    }

    pub(crate) fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }

    /// The uniform's bytes, padded to a multiple of 16 (uniform structs round up to vec4).
    fn bytes(&self) -> Vec<u8> {
        let mut w = self.0.clone();
        w.resize(w.len().div_ceil(4).max(1) * 4, 0);
        bytemuck::cast_slice(&w).to_vec()
    }
}

impl WgpuBackend {
    /// Workgroups covering `n` invocations of a 1-D kernel: `x` up to the per-dimension
    /// limit, then rows of `y` (the kernels rebuild the flat index from both).
    pub(crate) fn grid(&self, n: usize) -> Result<[u32; 3], BackendError> {
        let caps = self.caps();
        let groups = n.div_ceil(caps.wg as usize).max(1);
        let max = caps.max_groups as usize;
        if groups <= max {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(BackendError::Unsupported(format!("a launch of {n} invocations exceeds the adapter's grid")));
        }
        Ok([max as u32, y as u32, 1])
    }

    /// Records `k` over `grid` workgroups with `params` at binding 0 and `args` at bindings
    /// 1, 2, …. Binding errors come back typed.
    pub(crate) fn launch(&self, k: &Kernel, params: Params, args: &[wgpu::BindingResource<'_>], grid: [u32; 3]) -> Result<(), BackendError> {
        let caps = self.caps();
        if grid.iter().any(|&g| g > caps.max_groups) {
            return Err(BackendError::Unsupported(format!("{}: grid {grid:?} exceeds the adapter's {} workgroups per dimension", k.name, caps.max_groups)));
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let uniform = self.create_buffer_init(&params.bytes(), wgpu::BufferUsages::UNIFORM, "params")?;
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(args.iter().enumerate().map(|(i, r)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: r.clone() }));
        let dev = self.device();
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(&k.name), layout: &k.layout, entries: &entries });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::device(format!("{}: binding its buffers", k.name), e));
        }
        self.record(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(&k.name), timestamp_writes: None });
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        });
        Ok(())
    }
}
