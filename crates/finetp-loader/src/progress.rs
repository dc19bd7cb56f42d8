//! A progress bar over weight loading.

use finetp_core::backend::HostTensor;
use finetp_core::shard::{LoadError, ShardSpec, WeightSource};
use indicatif::{ProgressBar, ProgressStyle};

/// Wraps a source and advances a bar (tensors read) on every load. The bar draws only when
/// stderr is a terminal, so CI logs stay clean.
pub struct ProgressWeights<'a> {
    inner: &'a dyn WeightSource,
    bar: ProgressBar,
}

impl<'a> ProgressWeights<'a> {
    /// `expected`: tensors the caller will read (the bar's length), e.g. per rank.
    pub fn new(inner: &'a dyn WeightSource, expected: u64, label: &str) -> Self {
        let bar = ProgressBar::new(expected);
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors {elapsed}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Self { inner, bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl WeightSource for ProgressWeights<'_> {
    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        self.inner.shape(name)
    }

    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let t = self.inner.load(name, spec);
        self.bar.inc(1);
        t
    }

    /// Forwarded, with the bar advanced: a source that keeps blocks as stored keeps them
    /// behind the bar too.
    fn load_stored(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let t = self.inner.load_stored(name, spec);
        self.bar.inc(1);
        t
    }

    fn stored_block_dtype(&self, name: &str) -> Option<finetp_core::backend::DType> {
        self.inner.stored_block_dtype(name)
    }

    fn loaded_dtype(&self, name: &str) -> Option<finetp_core::backend::DType> {
        self.inner.loaded_dtype(name)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
