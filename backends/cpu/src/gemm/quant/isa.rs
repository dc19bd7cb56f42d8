//! The instruction-set paths of the block-format GEMM, and which one this CPU runs.

use finetp_core::backend::DType;

use super::TILE_ROWS;
use super::acts::ActRow;

/// The most activation rows any path's kernel takes at once ([`Isa::act_rows`]).
pub(crate) const MAX_ACT_ROWS: usize = 4;

/// One path of the block-format dot products; all compute the same bits ([`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The reference: plain Rust, any CPU.
    Scalar,
    /// AVX2 + FMA: `maddubs` then `madd` for the 4-element lane sums.
    Avx2,
    /// AVX-VNNI (256-bit `vpdpbusd`).
    AvxVnni,
    /// AVX-512 VNNI: two weight rows per 512-bit register.
    Avx512Vnni,
}

impl Isa {
    pub(crate) const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU can run the path.
    pub(crate) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::AvxVnni => avx2 && has!("avxvnni"),
                Isa::Avx512Vnni => avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// The fastest available path.
    pub(crate) fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2].into_iter().find(|i| i.available()).unwrap_or(Isa::Scalar)
    }

    /// The path `FINETP_CPU_ISA=name` asks for, if this CPU has it.
    pub(crate) fn forced(name: &str) -> Result<Isa, String> {
        let names = Isa::ALL.map(Isa::name).join(", ");
        let isa = Isa::ALL.into_iter().find(|i| i.name() == name.trim()).ok_or_else(|| format!("FINETP_CPU_ISA={name}: not a path (one of {names})"))?;
        if !isa.available() {
            return Err(format!("FINETP_CPU_ISA={name}: this CPU lacks the instructions"));
        }
        Ok(isa)
    }

    /// Activation rows [`dots_rows`](Self::dots_rows) takes at once (1: the path has only
    /// the one-row kernel).
    pub(crate) fn act_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => super::x86::ACT_ROWS,
            _ => 1,
        }
    }

    /// `out[i][r] = w_r · a[first + i]` for a whole tile of `TILE_ROWS` weight rows and
    /// [`act_rows`](Self::act_rows) activation rows from `first`: the bits of
    /// [`dots`](Self::dots) row by row.
    pub(crate) fn dots_rows(self, dtype: DType, tile: &[u8], row_bytes: usize, a: &super::QActs, first: usize, out: &mut [[f32; TILE_ROWS]; MAX_ACT_ROWS]) {
        let n = self.act_rows();
        assert!(tile.len() >= TILE_ROWS * row_bytes && first + n <= a.m && row_bytes == a.row(first).blocks() * dtype.block_bytes(), "dots_rows: operands disagree");
        assert!(dtype != DType::Q4_1 || a.row(first).s.len() == a.row(first).blocks(), "dots_rows: activations not quantised for Q4_1 weights");
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                let rows = std::array::from_fn(|i| a.row(first + i));
                let mut o = [[0f32; TILE_ROWS]; super::x86::ACT_ROWS];
                // SAFETY: the path is available (checked by `forced` / `best`, and by the tests
                // before they call one); the operand lengths were checked above.
                unsafe { super::x86::tile4x4(dtype, tile, row_bytes, rows, &mut o) };
                out[..n].copy_from_slice(&o);
            }
            _ => {
                for (i, o) in out.iter_mut().enumerate().take(n) {
                    self.dots(dtype, tile, row_bytes, TILE_ROWS, a.row(first + i), o);
                }
            }
        }
    }

    /// `out[r] = w_r · a` for the `rows <= TILE_ROWS` weight rows in `tile` (each `row_bytes`
    /// of `dtype` blocks).
    pub(crate) fn dots(self, dtype: DType, tile: &[u8], row_bytes: usize, rows: usize, a: ActRow<'_>, out: &mut [f32; TILE_ROWS]) {
        assert!(rows <= TILE_ROWS && tile.len() >= rows * row_bytes && row_bytes == a.blocks() * dtype.block_bytes(), "dots: operands disagree");
        assert!(dtype != DType::Q4_1 || a.s.len() == a.blocks(), "dots: activations not quantised for Q4_1 weights");
        match self {
            Isa::Scalar => {
                for (r, o) in out.iter_mut().enumerate().take(rows) {
                    *o = super::scalar::dot(dtype, &tile[r * row_bytes..(r + 1) * row_bytes], a);
                }
            }
            #[cfg(target_arch = "x86_64")]
            simd => {
                use super::x86::{Path, dots};
                let path = match simd {
                    Isa::Avx2 => Path::Avx2,
                    Isa::AvxVnni => Path::AvxVnni,
                    _ => Path::Avx512Vnni,
                };
                // SAFETY: a forced or detected path is available (checked by `forced` / `best`,
                // and by the tests before they call one); the operand lengths were checked above.
                unsafe { dots(path, dtype, tile, row_bytes, rows, a, out) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the scalar path exists off x86"),
        }
    }
}
