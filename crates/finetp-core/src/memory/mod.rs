//! Per-rank weight memory, by module class, with and without each component's fine-grained TP.
//!
//! Shapes are HF's; the vocabulary is padded as vLLM pads it ([`pad_vocab`](crate::config::pad_vocab)).
//! Without fine-grained TP a component is sharded by the standard `--tensor-parallel-size`
//! (1 = replicated); with it, each TP part is split again by the fine-grained size (`TP × size`
//! parts, as `finetp_core::layers::LayerGroups` loads it; vLLM-Ascend instead lets the
//! fine-grained size replace TP, research §2.2). Routed experts are spread over the
//! expert-parallel world when `--enable-expert-parallel` (what a future EP run would hold;
//! `finetp run` refuses it for MoE models today), else sharded by standard TP.

mod kv;
mod shapes;

use crate::backend::DType;
use crate::config::{Component, ModelConfig, ParallelConfig};

pub use kv::{kv_bytes_per_token, reserved_kv_bytes};
pub use shapes::{LinearShape, ModelShapes};

/// How linear-layer weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Every weight in the model dtype.
    #[default]
    None,
    /// W8A8 (as DeepSeek-R1-W8A8 on Ascend): linear weights int8 plus an f32 scale and offset
    /// per output channel; embedding, lm_head, norms and the MoE router stay in the model dtype.
    W8A8,
    /// Block formats kept as stored (a GGUF file's `Q8_0` / `Q4_0` / `Q4_1`): the vocabulary
    /// tables in `vocab`, linear weights in `linear`; norms in the format's `dtype`. A shard
    /// whose columns would cut a block is held decoded, in f32 (as the layers load it).
    Blocks { vocab: DType, linear: DType },
}

/// The storage policy of a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WeightFormat {
    /// dtype of non-quantized weights (embedding, lm_head, norms; linears when not quantized).
    pub dtype: DType,
    pub quantization: Quantization,
}

impl Default for WeightFormat {
    fn default() -> Self {
        Self { dtype: DType::BF16, quantization: Quantization::None }
    }
}

impl WeightFormat {
    /// Bytes of a linear weight `[out, in]` holding `out/out_split` rows and `in/in_split`
    /// columns. Per-channel quantization parameters follow the output rows.
    pub fn linear_bytes(&self, shape: LinearShape, out_split: usize, in_split: usize) -> u64 {
        let (out, inp) = ((shape.out / out_split) as u64, (shape.inp / in_split) as u64);
        match self.quantization {
            Quantization::None => out * inp * self.dtype.size_in_bytes() as u64,
            Quantization::W8A8 => out * inp + out * 8,
            Quantization::Blocks { linear, .. } => out * block_row_bytes(linear, inp),
        }
    }

    /// Bytes of `rows` rows of a vocabulary table (embedding or lm_head) `cols` wide.
    pub fn vocab_bytes(&self, rows: u64, cols: u64) -> u64 {
        match self.quantization {
            Quantization::Blocks { vocab, .. } => rows * block_row_bytes(vocab, cols),
            _ => self.plain_bytes(rows * cols),
        }
    }

    /// Bytes of a non-quantized tensor of `numel` elements.
    pub fn plain_bytes(&self, numel: u64) -> u64 {
        numel * self.dtype.size_in_bytes() as u64
    }
}

/// Bytes of one row of `cols` elements of `dtype`: whole blocks, or f32 where a row would cut one.
fn block_row_bytes(dtype: DType, cols: u64) -> u64 {
    usize::try_from(cols).ok().and_then(|c| dtype.storage_bytes(c)).map_or(cols * 4, |b| b as u64)
}

/// The module classes of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleClass {
    Embedding,
    LmHead,
    /// q/k/v (or MLA) projections and their norms, without o_proj.
    Attention,
    OProj,
    DenseMlp,
    /// Routed and shared experts and the router.
    Moe,
    /// Layer norms and the final norm.
    Norms,
}

impl ModuleClass {
    pub const ALL: [ModuleClass; 7] = [
        ModuleClass::Embedding,
        ModuleClass::LmHead,
        ModuleClass::Attention,
        ModuleClass::OProj,
        ModuleClass::DenseMlp,
        ModuleClass::Moe,
        ModuleClass::Norms,
    ];

    /// The fine-grained component that shards this class, if any.
    pub fn component(self) -> Option<Component> {
        match self {
            ModuleClass::Embedding => Some(Component::Embedding),
            ModuleClass::LmHead => Some(Component::LmHead),
            ModuleClass::OProj => Some(Component::OProj),
            ModuleClass::DenseMlp => Some(Component::Mlp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModuleClass::Embedding => "embedding",
            ModuleClass::LmHead => "lm_head",
            ModuleClass::Attention => "attention (q/kv)",
            ModuleClass::OProj => "o_proj",
            ModuleClass::DenseMlp => "dense mlp",
            ModuleClass::Moe => "moe experts",
            ModuleClass::Norms => "norms",
        }
    }
}

/// One row of the report: one module class on one rank.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModuleMemory {
    pub module: ModuleClass,
    /// The fine-grained size applied (1 when the class has no component or none is configured).
    pub finegrained_size: usize,
    /// Bytes per rank without fine-grained TP.
    pub baseline_bytes: u64,
    /// Bytes per rank with the configured fine-grained TP.
    pub bytes: u64,
}

impl ModuleMemory {
    /// Bytes saved per rank by fine-grained TP (negative when it costs memory, e.g. a tied
    /// embedding whose lm_head shard must be loaded separately).
    pub fn saving_bytes(&self) -> i64 {
        self.baseline_bytes as i64 - self.bytes as i64
    }
}

/// Per-rank weight memory of a model under a parallel layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryReport {
    pub format: WeightFormat,
    pub rows: Vec<ModuleMemory>,
}

impl MemoryReport {
    /// Computes the report. `parallel` should have been validated against `model`
    /// ([`ModelConfig::validate_parallel`]); sizes are divided as integers.
    pub fn new(model: &ModelConfig, parallel: &ParallelConfig, format: WeightFormat) -> Self {
        let s = ModelShapes::new(model);
        let tp = parallel.tensor_parallel_size;
        let fg = |c: Component| parallel.finegrained_tp.get(c);
        let vocab_rows = |split: usize| format.vocab_bytes((s.padded_vocab / split) as u64, s.hidden as u64);
        // Standard TP splits every component; fine-grained TP splits each TP part again
        // (`finetp_core::layers::LayerGroups`).
        let split = |c: Component| tp * fg(c).unwrap_or(1);

        let embedding = (vocab_rows(tp), vocab_rows(split(Component::Embedding)));
        let lm_head = if model.tie_word_embeddings {
            // Baseline shares the embedding's tensor; a different lm_head size needs its own shard.
            let separate = !model.shares_embedding_shard(parallel);
            (0, if separate { vocab_rows(split(Component::LmHead)) } else { 0 })
        } else {
            (vocab_rows(tp), vocab_rows(split(Component::LmHead)))
        };
        let layers = model.num_hidden_layers as u64;
        let attention = layers * s.attention_bytes(&format, tp);
        let o_proj = |by: usize| layers * format.linear_bytes(s.o_proj, 1, by);
        let dense_layers = model.dense_mlp_layers() as u64;
        let mlp = |by: usize| dense_layers * s.dense_mlp_bytes(&format, by);
        let moe = (model.num_hidden_layers as u64 - dense_layers) * s.moe_layer_bytes(&format, parallel);
        let norms = format.plain_bytes(((2 * model.num_hidden_layers + 1) * s.hidden) as u64);

        let row = |module: ModuleClass, (baseline_bytes, bytes): (u64, u64)| ModuleMemory {
            module,
            finegrained_size: module.component().and_then(fg).unwrap_or(1),
            baseline_bytes,
            bytes,
        };
        let rows = vec![
            row(ModuleClass::Embedding, embedding),
            row(ModuleClass::LmHead, lm_head),
            row(ModuleClass::Attention, (attention, attention)),
            row(ModuleClass::OProj, (o_proj(tp), o_proj(split(Component::OProj)))),
            row(ModuleClass::DenseMlp, (mlp(tp), mlp(split(Component::Mlp)))),
            row(ModuleClass::Moe, (moe, moe)),
            row(ModuleClass::Norms, (norms, norms)),
        ];
        Self { format, rows }
    }

    /// The row-parallel weights (o_proj, the MLP's down projection) whose per-rank column
    /// slice would cut the blocks of a block format: they are held decoded to f32 instead
    /// (the report's bytes already count them so). Empty for other formats.
    pub fn cut_blocks(model: &ModelConfig, parallel: &ParallelConfig, format: &WeightFormat) -> Vec<BlockCut> {
        let Quantization::Blocks { linear, .. } = format.quantization else { return Vec::new() };
        let s = ModelShapes::new(model);
        let tp = parallel.tensor_parallel_size;
        let mut out = Vec::new();
        let dense = model.dense_mlp_layers() > 0;
        for (component, width) in [(Component::OProj, Some(s.o_proj.inp)), (Component::Mlp, dense.then_some(s.dense_mlp[2].inp))] {
            let Some(width) = width else { continue };
            let parts = tp * parallel.finegrained_tp.get(component).unwrap_or(1);
            if parts > 1 && !(width / parts).is_multiple_of(linear.block_elems()) {
                out.push(BlockCut { component, parts, width, dtype: linear });
            }
        }
        out
    }

    pub fn row(&self, m: ModuleClass) -> &ModuleMemory {
        self.rows.iter().find(|r| r.module == m).expect("every class has a row")
    }

    /// The saving of one component, in bytes per rank.
    pub fn saving(&self, c: Component) -> i64 {
        self.rows.iter().filter(|r| r.module.component() == Some(c)).map(ModuleMemory::saving_bytes).sum()
    }

    pub fn baseline_total(&self) -> u64 {
        self.rows.iter().map(|r| r.baseline_bytes).sum()
    }

    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.bytes).sum()
    }
}

/// A row-parallel weight whose shards would cut blocks ([`MemoryReport::cut_blocks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCut {
    pub component: Component,
    /// Parts the input width is split into (standard TP × the fine-grained size).
    pub parts: usize,
    pub width: usize,
    pub dtype: DType,
}

impl std::fmt::Display for BlockCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} split in {} cuts {} blocks of {} ({} / {} = {} columns per rank): its shards are held decoded to f32",
            self.component,
            self.parts,
            self.dtype,
            self.dtype.block_elems(),
            self.width,
            self.parts,
            self.width / self.parts
        )
    }
}

/// Bytes → GiB, for printing.
pub fn gib(bytes: i64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests;
