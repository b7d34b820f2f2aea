//! An 8-bit linear layer with its own matrix multiply, for the projections
//! of the local model.
//!
//! candle 0.11's Q8_0 kernel on x86 computes every (token, output) dot
//! product on its own: each one reloads its weight block, converts two f16
//! scales in software and takes the absolute value of the same activations
//! again. During prefill that was half of all the time to first token. Here
//! the weights keep the same 8-bit grid (blocks of 32 with one scale) but
//! with f32 scales, and the AVX2 kernel computes a tile of four outputs for
//! two tokens at once, so each weight block is loaded once per pair of
//! tokens and each activation block once per four outputs. Activations are
//! quantized per block of 32 like ggml's Q8_0, so results match candle's
//! up to float rounding.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};

/// Values that share one scale.
pub const BLOCK: usize = 32;

/// One matrix of 8-bit values in blocks of [`BLOCK`] along each row, each
/// block with an f32 scale.
#[derive(Debug, Clone, Default)]
struct Quantized {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Quantized {
    /// Quantizes `rows` rows of `data` (row-major, each `BLOCK`-aligned):
    /// scale = largest magnitude / 127, value = round(x / scale).
    fn from_f32(data: &[f32], row_len: usize) -> Self {
        debug_assert!(row_len.is_multiple_of(BLOCK) && data.len().is_multiple_of(row_len));
        let mut values = vec![0i8; data.len()];
        let mut scales = vec![0f32; data.len() / BLOCK];
        for ((block, out), scale) in data
            .chunks_exact(BLOCK)
            .zip(values.chunks_exact_mut(BLOCK))
            .zip(&mut scales)
        {
            let max = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            *scale = max / 127.0;
            let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
            for (x, q) in block.iter().zip(out) {
                *q = (x * inverse).round() as i8;
            }
        }
        Self { values, scales }
    }
}

/// A weight matrix `out × in` applied as `x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    outputs: usize,
    inputs: usize,
    weights: Quantized,
}

impl Int8Linear {
    /// Takes a GGUF weight of shape (outputs, inputs): Q8_0 as it is (the
    /// same values and scales), other types dequantized and re-quantized;
    /// `None` when the inputs are not a whole number of blocks.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (outputs, inputs) = t.shape().dims2()?;
        if !inputs.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        if t.dtype() == GgmlDType::Q8_0 {
            return Ok(Some(Self::from_q8_0(&t.data()?, outputs, inputs)?));
        }
        let dense = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Some(Self::from_f32(&dense, outputs, inputs)))
    }

    /// Reads ggml Q8_0 blocks (an f16 scale, then 32 values) without going
    /// through f32, which for an embedding table would take gigabytes.
    fn from_q8_0(bytes: &[u8], outputs: usize, inputs: usize) -> Result<Self> {
        const BLOCK_BYTES: usize = 2 + BLOCK;
        let blocks = outputs * inputs / BLOCK;
        if bytes.len() != blocks * BLOCK_BYTES {
            candle_core::bail!(
                "Q8_0 data of {} bytes for {outputs} × {inputs} values",
                bytes.len()
            );
        }
        let mut values = Vec::with_capacity(outputs * inputs);
        let mut scales = Vec::with_capacity(blocks);
        for block in bytes.chunks_exact(BLOCK_BYTES) {
            scales.push(half::f16::from_le_bytes([block[0], block[1]]).to_f32());
            values.extend(block[2..].iter().map(|&b| b as i8));
        }
        Ok(Self {
            outputs,
            inputs,
            weights: Quantized { values, scales },
        })
    }

    /// Quantizes a row-major `outputs × inputs` matrix.
    pub fn from_f32(data: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(data.len(), outputs * inputs, "weight shape");
        Self {
            outputs,
            inputs,
            weights: Quantized::from_f32(data, inputs),
        }
    }

    /// `x · Wᵀ` for `x` of shape (..., inputs).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let last = dims.pop().unwrap_or(0);
        if last != self.inputs {
            candle_core::bail!(
                "int8 linear: input width {last}, weight expects {}",
                self.inputs
            );
        }
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let out = self.matmul(&input);
        dims.push(self.outputs);
        Tensor::from_vec(out, dims, x.device())
    }

    /// `x · Wᵀ` for `x` row-major with `inputs` columns.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let tokens = x.len() / self.inputs;
        let acts = Quantized::from_f32(x, self.inputs);
        let mut out = vec![0f32; tokens * self.outputs];
        let quads = self.outputs.div_ceil(4);
        let dst = Dst(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(quads, |range| {
            for quad in range {
                let first = quad * 4;
                let count = (self.outputs - first).min(4);
                // SAFETY: each quad writes only its own output columns.
                unsafe { self.quad(&acts, tokens, first, count, &dst) };
            }
        });
        out
    }

    /// Outputs `first..first + count` (count ≤ 4) for every token.
    ///
    /// # Safety
    /// `dst` points at `tokens × outputs` floats and no other caller writes
    /// these columns at the same time.
    unsafe fn quad(&self, acts: &Quantized, tokens: usize, first: usize, count: usize, dst: &Dst) {
        #[cfg(target_arch = "x86_64")]
        if count == 4 && avx2() {
            let mut token = 0;
            while token + 2 <= tokens {
                // SAFETY: AVX2 and FMA checked; the indexes are in bounds.
                let tile = unsafe { avx2_tile::<2>(self, acts, first, token) };
                unsafe { dst.put(self.outputs, first, token, &tile) };
                token += 2;
            }
            if token < tokens {
                let tile = unsafe { avx2_tile::<1>(self, acts, first, token) };
                unsafe { dst.put(self.outputs, first, token, &tile) };
            }
            return;
        }
        let blocks = self.inputs / BLOCK;
        for token in 0..tokens {
            for o in first..first + count {
                let value = dot(&self.weights, o, acts, token, blocks);
                // SAFETY: in bounds, and this column belongs to this quad.
                unsafe { *dst.0.add(token * self.outputs + o) = value };
            }
        }
    }
}

/// The output buffer, shared by the workers, each writing its own columns.
struct Dst(*mut f32);

// SAFETY: workers write disjoint elements (see `Int8Linear::matmul`).
unsafe impl Sync for Dst {}

impl Dst {
    /// Writes `tile[t][i]` to (token + t, first + i).
    ///
    /// # Safety
    /// In bounds, and no one else writes these elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn put<const T: usize>(
        &self,
        outputs: usize,
        first: usize,
        token: usize,
        tile: &[[f32; 4]; T],
    ) {
        for (t, row) in tile.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                unsafe { *self.0.add((token + t) * outputs + first + i) = *v };
            }
        }
    }
}

/// One output of one token, in plain Rust: the reference for the SIMD tile
/// and the path on CPUs without AVX2.
fn dot(weights: &Quantized, output: usize, acts: &Quantized, token: usize, blocks: usize) -> f32 {
    let w = output * blocks;
    let a = token * blocks;
    (0..blocks)
        .map(|b| {
            let wv = &weights.values[(w + b) * BLOCK..][..BLOCK];
            let av = &acts.values[(a + b) * BLOCK..][..BLOCK];
            let sum: i32 = wv.iter().zip(av).map(|(&x, &y)| x as i32 * y as i32).sum();
            sum as f32 * weights.scales[w + b] * acts.scales[a + b]
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Four outputs from `first` for `T` tokens from `token`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `first + 4 ≤ outputs`, `token + T ≤ tokens`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // (token, output) indexes read as the tile they are
unsafe fn avx2_tile<const T: usize>(
    layer: &Int8Linear,
    acts: &Quantized,
    first: usize,
    token: usize,
) -> [[f32; 4]; T] {
    use std::arch::x86_64::*;
    let blocks = layer.inputs / BLOCK;
    let w_values = layer.weights.values.as_ptr();
    let w_scales = layer.weights.scales.as_ptr();
    let a_values = acts.values.as_ptr();
    let a_scales = acts.scales.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    for b in 0..blocks {
        let mut a = [_mm256_setzero_si256(); T];
        let mut a_abs = [_mm256_setzero_si256(); T];
        let mut a_scale = [_mm256_setzero_ps(); T];
        for t in 0..T {
            let block = (token + t) * blocks + b;
            // SAFETY: the block lies inside the activations.
            unsafe {
                a[t] = _mm256_loadu_si256(a_values.add(block * BLOCK).cast());
                a_scale[t] = _mm256_set1_ps(*a_scales.add(block));
            }
            a_abs[t] = _mm256_sign_epi8(a[t], a[t]);
        }
        for i in 0..4 {
            let block = (first + i) * blocks + b;
            // SAFETY: the block lies inside the weights.
            let (w, w_scale) = unsafe {
                (
                    _mm256_loadu_si256(w_values.add(block * BLOCK).cast()),
                    _mm256_set1_ps(*w_scales.add(block)),
                )
            };
            for t in 0..T {
                // |a| · (w · sign(a)) = a · w, in unsigned × signed pairs
                // that cannot saturate (127 · 127 · 2 < 32767).
                let products = _mm256_maddubs_epi16(a_abs[t], _mm256_sign_epi8(w, a[t]));
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
                acc[t][i] = _mm256_fmadd_ps(sums, _mm256_mul_ps(w_scale, a_scale[t]), acc[t][i]);
            }
        }
    }
    let mut out = [[0f32; 4]; T];
    for t in 0..T {
        for i in 0..4 {
            out[t][i] = hsum(acc[t][i]);
        }
    }
    out
}

/// Sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
    _mm_cvtss_f32(one)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    /// Deterministic values in [-1, 1) with a few large ones, as real
    /// activations have.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let x = ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                if i % 97 == 0 { x * 20.0 } else { x }
            })
            .collect()
    }

    /// The exact product, and for each output the most that rounding both
    /// sides to their 8-bit grids can move it: Σ |x|·εw + |w|·εx + εw·εx
    /// with ε half a grid step of the element's block.
    fn reference(w: &[f32], x: &[f32], outputs: usize, inputs: usize) -> Vec<(f32, f32)> {
        let step = |v: &[f32], i: usize| {
            let block = &v[i / BLOCK * BLOCK..][..BLOCK];
            block.iter().fold(0f32, |m, a| m.max(a.abs())) / 127.0 / 2.0
        };
        let tokens = x.len() / inputs;
        let mut out = Vec::with_capacity(tokens * outputs);
        for t in 0..tokens {
            let x = &x[t * inputs..][..inputs];
            for o in 0..outputs {
                let w = &w[o * inputs..][..inputs];
                let (mut exact, mut bound) = (0f64, 0f64);
                for i in 0..inputs {
                    let (ew, ex) = (step(w, i) as f64, step(x, i) as f64);
                    exact += x[i] as f64 * w[i] as f64;
                    bound += (x[i].abs() as f64) * ew + (w[i].abs() as f64) * ex + ew * ex;
                }
                out.push((exact as f32, bound as f32));
            }
        }
        out
    }

    #[test]
    fn the_tiled_product_matches_exact_arithmetic_within_8_bit_error() {
        // Token counts that exercise the pair tile and the single-token
        // tail; an output count that leaves a partial quad.
        for (tokens, outputs, inputs) in [(1, 8, 64), (2, 12, 96), (5, 6, 640), (20, 256, 640)] {
            let w = values(outputs * inputs, 1);
            let x = values(tokens * inputs, 2);
            let layer = Int8Linear::from_f32(&w, outputs, inputs);
            let got = layer.matmul(&x);
            let want = reference(&w, &x, outputs, inputs);
            assert_eq!(got.len(), want.len());
            for (i, (g, (e, bound))) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= bound * 1.001 + 1e-5,
                    "({tokens},{outputs},{inputs}) #{i}: {g} vs {e} ± {bound}"
                );
            }
        }
    }

    #[test]
    fn the_simd_tile_equals_the_plain_dot_product() {
        let (tokens, outputs, inputs) = (7, 16, 2048);
        let layer = Int8Linear::from_f32(&values(outputs * inputs, 3), outputs, inputs);
        let x = values(tokens * inputs, 4);
        let got = layer.matmul(&x);
        let acts = Quantized::from_f32(&x, inputs);
        for t in 0..tokens {
            for o in 0..outputs {
                let plain = dot(&layer.weights, o, &acts, t, inputs / BLOCK);
                let simd = got[t * outputs + o];
                // The same integer sums, added in another order.
                assert!(
                    (plain - simd).abs() <= 1e-4 * plain.abs().max(1.0),
                    "{plain} vs {simd}"
                );
            }
        }
    }

    #[test]
    fn q8_0_tensors_keep_their_values() {
        let (outputs, inputs) = (6, 64);
        let w = values(outputs * inputs, 5);
        let dense = Tensor::from_vec(w, (outputs, inputs), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&dense, GgmlDType::Q8_0).unwrap();
        let layer = Int8Linear::from_qtensor(&q).unwrap().unwrap();
        // The same grid and scales: products agree with candle's Q8_0
        // matmul up to the order of additions.
        let x = Tensor::from_vec(values(3 * inputs, 6), (3, inputs), &Device::Cpu).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let want = flat(candle.forward(&x).unwrap());
        let got = flat(layer.forward(&x).unwrap());
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() <= 1e-3 * e.abs().max(1.0), "{g} vs {e}");
        }
    }

    #[test]
    fn zero_blocks_and_shapes_go_through_tensors() {
        let layer = Int8Linear::from_f32(&[0.0; 2 * 32], 2, 32);
        let x = Tensor::ones((1, 3, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = layer.forward(&x).unwrap();
        assert_eq!(y.dims(), [1, 3, 2]);
        assert!(
            y.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| *v == 0.0)
        );
        let wrong = Tensor::ones((1, 3, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(layer.forward(&wrong).is_err());
    }
}
