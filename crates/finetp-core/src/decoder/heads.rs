//! Which attention heads one TP rank runs.

use std::ops::Range;

/// A TP rank's query and KV heads, as vLLM splits them: query heads in `t` equal consecutive
/// blocks; KV heads likewise when `t` divides them, else (TP a multiple of the KV heads)
/// replicated: rank `j` holds the one KV head its query heads share, `j / (t / n_kv)`.
/// [`ModelConfig::validate_tensor_parallel`](crate::config::ModelConfig::validate_tensor_parallel)
/// checks the divisibility first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadShard {
    pub q: Range<usize>,
    pub kv: Range<usize>,
}

impl HeadShard {
    /// Rank `tp_rank` of `tp_size` over `num_heads` query and `num_kv_heads` KV heads.
    pub fn new(num_heads: usize, num_kv_heads: usize, tp_rank: usize, tp_size: usize) -> Self {
        let (t, j) = (tp_size.max(1), tp_rank);
        let per_q = num_heads / t;
        let kv = if num_kv_heads >= t {
            let per = num_kv_heads / t;
            j * per..(j + 1) * per
        } else {
            let head = j / (t / num_kv_heads.max(1)).max(1);
            head..head + 1
        };
        Self { q: j * per_q..(j + 1) * per_q, kv }
    }

    /// Every head (TP 1).
    pub fn all(num_heads: usize, num_kv_heads: usize) -> Self {
        Self::new(num_heads, num_kv_heads, 0, 1)
    }

    pub fn q_heads(&self) -> usize {
        self.q.len()
    }

    pub fn kv_heads(&self) -> usize {
        self.kv.len()
    }
}

#[cfg(test)]
mod tests {
    use super::HeadShard;

    #[test]
    fn splits_and_replicates_as_vllm() {
        // SmolLM2-135M at TP 3: 9 heads, 3 KV heads → 3 and 1 per rank.
        assert_eq!(HeadShard::new(9, 3, 2, 3), HeadShard { q: 6..9, kv: 2..3 });
        // TP 4 over 2 KV heads: ranks 0,1 share KV head 0, ranks 2,3 KV head 1.
        let kv: Vec<_> = (0..4).map(|j| HeadShard::new(8, 2, j, 4).kv).collect();
        assert_eq!(kv, [0..1, 0..1, 1..2, 1..2]);
        // Each rank's query heads all use the KV head it holds (GQA group = q / (nh / nkv)).
        for j in 0..4 {
            let s = HeadShard::new(8, 2, j, 4);
            assert!(s.q.clone().all(|q| s.kv.contains(&(q / 4))));
        }
        assert_eq!(HeadShard::all(9, 3), HeadShard { q: 0..9, kv: 0..3 });
    }
}
