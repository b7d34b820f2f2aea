//! A dense layer with f16 weights and f32 arithmetic, for small batches.
//!
//! Embedding one short text through all-MiniLM-L6-v2 multiplies a dozen
//! token rows by every weight matrix: too few rows to reuse a weight once
//! it is loaded, so the pass streams all 42 MB of f32 weights from memory
//! and is bound by that, not by arithmetic (OpenBLAS takes as long for 13
//! rows as for 32). Stored as f16 the weights are half the bytes; each is
//! widened to f32 in registers (F16C) and multiplied in f32, so only the
//! weight rounding (relative 2⁻¹¹) differs from the f32 layer.
//!
//! Weights are kept in panels of [`PANEL`] outputs, input-major, so the
//! AVX2 kernel reads each panel front to back while it computes a tile of
//! 16 outputs × up to 4 tokens in registers.

use half::f16;

/// Outputs per panel: two AVX registers of f32.
pub const PANEL: usize = 16;

/// Token rows one tile computes.
const TILE_ROWS: usize = 4;

/// A weight matrix `outputs × inputs` (PyTorch's layout when built) stored
/// as f16 in panels, applied as `y += x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct HalfLinear {
    outputs: usize,
    inputs: usize,
    /// Panel p holds outputs `p·PANEL ..`: for each input, PANEL values
    /// (zero past the last output).
    panels: Vec<f16>,
}

impl HalfLinear {
    /// Rounds a row-major `outputs × inputs` f32 matrix to f16.
    pub fn from_f32(weight: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let count = outputs.div_ceil(PANEL);
        let mut panels = vec![f16::ZERO; count * inputs * PANEL];
        for (o, row) in weight.chunks_exact(inputs.max(1)).enumerate() {
            let panel = &mut panels[(o / PANEL) * inputs * PANEL..][..inputs * PANEL];
            for (i, w) in row.iter().enumerate() {
                panel[i * PANEL + o % PANEL] = f16::from_f32(*w);
            }
        }
        Self {
            outputs,
            inputs,
            panels,
        }
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `y[rows × outputs] += x[rows × inputs] · Wᵀ` (y usually holds the
    /// bias on entry).
    pub fn matmul_add(&self, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / self.inputs.max(1);
        assert_eq!(x.len(), rows * self.inputs, "input width");
        assert_eq!(y.len(), rows * self.outputs, "output size");
        let panels = self.outputs.div_ceil(PANEL);
        let out = Out(y.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(panels, |range| {
            for panel in range {
                // SAFETY: each panel writes only its own output columns.
                unsafe { self.panel(x, rows, panel, &out) };
            }
        });
    }

    /// Every token row for the outputs of `panel`.
    ///
    /// # Safety
    /// `out` points at `rows × outputs` floats and no other caller writes
    /// this panel's columns at the same time.
    unsafe fn panel(&self, x: &[f32], rows: usize, panel: usize, out: &Out) {
        let weights = &self.panels[panel * self.inputs * PANEL..][..self.inputs * PANEL];
        let first = panel * PANEL;
        let width = (self.outputs - first).min(PANEL);
        let mut row = 0;
        while row < rows {
            let count = (rows - row).min(TILE_ROWS);
            let tile = self.tile(x, row, count, weights);
            for (t, values) in tile.iter().take(count).enumerate() {
                for (o, v) in values.iter().take(width).enumerate() {
                    // SAFETY: in bounds; this panel owns these columns.
                    unsafe { *out.0.add((row + t) * self.outputs + first + o) += v };
                }
            }
            row += count;
        }
    }

    /// Up to [`TILE_ROWS`] rows from `row` times one panel.
    fn tile(
        &self,
        x: &[f32],
        row: usize,
        count: usize,
        weights: &[f16],
    ) -> [[f32; PANEL]; TILE_ROWS] {
        #[cfg(target_arch = "x86_64")]
        if simd() {
            // SAFETY: AVX2, FMA and F16C are present; every row read lies
            // inside `x` and the panel holds inputs × PANEL values.
            return unsafe {
                match count {
                    4 => avx2_tile::<4>(x, self.inputs, row, weights),
                    3 => avx2_tile::<3>(x, self.inputs, row, weights),
                    2 => avx2_tile::<2>(x, self.inputs, row, weights),
                    _ => avx2_tile::<1>(x, self.inputs, row, weights),
                }
            };
        }
        self.plain_tile(x, row, count, weights)
    }

    /// [`HalfLinear::tile`] in plain Rust: the path on CPUs without F16C
    /// and the reference for the SIMD one.
    fn plain_tile(
        &self,
        x: &[f32],
        row: usize,
        count: usize,
        weights: &[f16],
    ) -> [[f32; PANEL]; TILE_ROWS] {
        let mut tile = [[0f32; PANEL]; TILE_ROWS];
        for (t, acc) in tile.iter_mut().take(count).enumerate() {
            let xs = &x[(row + t) * self.inputs..][..self.inputs];
            for (xi, w) in xs.iter().zip(weights.chunks_exact(PANEL)) {
                for (a, wv) in acc.iter_mut().zip(w) {
                    *a += xi * wv.to_f32();
                }
            }
        }
        tile
    }
}

/// The output buffer, shared by the workers, each writing its own columns.
struct Out(*mut f32);

// SAFETY: workers write disjoint elements (see `HalfLinear::matmul_add`).
unsafe impl Sync for Out {}

#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// `T` rows from `row` times one panel: per input, two 8-wide f16 loads
/// widened to f32 and `T` broadcast activations, `2·T` fused multiply-adds.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; rows `row..row + T` lie inside `x`;
/// `weights` holds `inputs × PANEL` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const T: usize>(
    x: &[f32],
    inputs: usize,
    row: usize,
    weights: &[f16],
) -> [[f32; PANEL]; TILE_ROWS] {
    use std::arch::x86_64::*;
    debug_assert!((row + T) * inputs <= x.len() && weights.len() >= inputs * PANEL);
    let x = x.as_ptr().wrapping_add(row * inputs);
    let w = weights.as_ptr().cast::<__m128i>();
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    for i in 0..inputs {
        // SAFETY: i < inputs, so both halves of the panel row and every
        // token's element i are in bounds.
        let (lo, hi) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i))),
                _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i + 1))),
            )
        };
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row + t < row + T, whose element i lies inside `x`.
            let a = unsafe { _mm256_broadcast_ss(&*x.add(t * inputs + i)) };
            acc[0] = _mm256_fmadd_ps(a, lo, acc[0]);
            acc[1] = _mm256_fmadd_ps(a, hi, acc[1]);
        }
    }
    let mut out = [[0f32; PANEL]; TILE_ROWS];
    for (t, acc) in acc.iter().enumerate() {
        // SAFETY: each half is 8 floats of the 16 in the row.
        unsafe {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(out[t].as_mut_ptr().add(8), acc[1]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_tile_equals_the_plain_one() {
        let (outputs, inputs) = (32, 384);
        let layer = HalfLinear::from_f32(&values(outputs * inputs, 4), outputs, inputs);
        let x = values(4 * inputs, 5);
        for panel in 0..2 {
            let weights = &layer.panels[panel * inputs * PANEL..][..inputs * PANEL];
            for count in 1..=TILE_ROWS {
                let simd = layer.tile(&x, 0, count, weights);
                let plain = layer.plain_tile(&x, 0, count, weights);
                for (s, p) in simd.iter().flatten().zip(plain.iter().flatten()) {
                    // Fused multiply-adds round once, the plain loop twice.
                    assert!((s - p).abs() <= 1e-4 * p.abs().max(1.0), "{s} vs {p}");
                }
            }
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn equals_the_f32_product_of_the_rounded_weights() {
        // Row counts for every tile height and a tail; an output count that
        // leaves a partial panel.
        for (rows, outputs, inputs) in [(1, 16, 8), (3, 20, 7), (6, 48, 384), (13, 1536, 384)] {
            let w = values(outputs * inputs, 1);
            let x = values(rows * inputs, 2);
            let bias = values(outputs, 3);
            let layer = HalfLinear::from_f32(&w, outputs, inputs);
            let mut y: Vec<f32> = (0..rows).flat_map(|_| bias.iter().copied()).collect();
            layer.matmul_add(&x, &mut y);
            for r in 0..rows {
                for o in 0..outputs {
                    let (mut exact, mut rounded, mut size) = (0f64, 0f64, 0f64);
                    for i in 0..inputs {
                        let (xv, wv) = (x[r * inputs + i] as f64, w[o * inputs + i]);
                        exact += xv * wv as f64;
                        rounded += xv * f16::from_f32(wv).to_f32() as f64;
                        size += (xv * wv as f64).abs();
                    }
                    let got = (y[r * outputs + o] - bias[o]) as f64;
                    // The kernel computes the rounded-weight product up to
                    // f32 summation error, and so lies within the f16
                    // rounding of the exact one.
                    assert!(
                        (got - rounded).abs() <= 1e-6 * size + 1e-6,
                        "{got} vs {rounded}"
                    );
                    assert!((got - exact).abs() <= 2f64.powi(-11) * size + 1e-6);
                }
            }
        }
    }
}
