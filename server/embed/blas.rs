//! The BERT encoder's forward pass on OpenBLAS, for CPU speed.
//!
//! Profiling candle's BERT here (perf, batches of 32 short texts) showed the
//! time in its generic GEMM (the AVX2 microkernel and operand packing: ~47%)
//! and in a scalar `erf` for GELU (~8%); it reached 0.6× of PyTorch's
//! throughput. OpenBLAS, already linked for FAISS, runs the same GEMMs at
//! about 200 GFLOPS on two cores. This module keeps candle for loading the
//! weights and does the arithmetic itself:
//!
//! - tokens of all sequences are packed row after row with no padding, since
//!   only attention mixes tokens, and attention is computed per sequence;
//! - passes of up to [`HALF_ROWS`] tokens (one text, a few short ones) run
//!   the dense layers on an f16 copy of the weights (`agentd_kernels::
//!   HalfLinear`, f32 arithmetic): such a pass is bound by reading 42 MB of
//!   f32 weights, not by arithmetic, and f16 halves that (see BENCHMARKS.md;
//!   cosine with sentence-transformers stays above 0.999999); larger passes
//!   are bound by arithmetic and stay on OpenBLAS;
//! - Q, K and V come from one GEMM against the concatenated weights;
//! - GELU uses an erf approximation accurate to 1.5e-7.
//!
//! Numerically it follows Hugging Face's `BertModel` (post-LayerNorm
//! residuals, absolute positions, token type 0); the reference-vector test
//! checks it against sentence-transformers.

use agentd_kernels::HalfLinear;
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::model::Encoded;
use crate::error::{Error, Result};

#[allow(unsafe_code)] // an extern block is unsafe by nature; calls are checked in `gemm`
mod ffi {
    //! The one OpenBLAS entry point used, bound by hand (a -sys crate would
    //! pull in a second OpenBLAS build).
    use std::ffi::c_int;

    pub const ROW_MAJOR: c_int = 101;
    pub const NO_TRANS: c_int = 111;
    pub const TRANS: c_int = 112;

    #[link(name = "openblas")]
    unsafe extern "C" {
        pub fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }
}

/// A row-major matrix view: `rows` rows of `cols` values, `stride` apart.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> View<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        assert!(cols <= stride, "view wider than its stride");
        assert!(
            rows == 0 || (rows - 1) * stride + cols <= data.len(),
            "view runs past its buffer"
        );
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }
}

fn int(n: usize) -> std::ffi::c_int {
    std::ffi::c_int::try_from(n).expect("matrix dimension fits in a C int")
}

/// `c = alpha * a · op(b) + beta * c`, where op(b) is b or bᵀ; `c` has
/// `a.rows` rows of `n` values, `ldc` apart.
fn gemm(
    alpha: f32,
    a: View<'_>,
    b: View<'_>,
    b_transposed: bool,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, n) = if b_transposed {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    assert_eq!(a.cols, k, "inner dimensions differ");
    assert!(n <= ldc);
    assert!(
        a.rows == 0 || (a.rows - 1) * ldc + n <= c.len(),
        "output too small"
    );
    if a.rows == 0 || n == 0 {
        return;
    }
    let trans_b = if b_transposed {
        ffi::TRANS
    } else {
        ffi::NO_TRANS
    };
    // SAFETY: the asserts above and in `View::new` guarantee that every
    // element OpenBLAS reads (a: rows×k with stride lda; b: k×n or n×k with
    // stride ldb) and writes (c: rows×n with stride ldc) lies inside the
    // slices, which stay borrowed for the duration of the call.
    #[allow(unsafe_code)]
    unsafe {
        ffi::cblas_sgemm(
            ffi::ROW_MAJOR,
            ffi::NO_TRANS,
            trans_b,
            int(a.rows),
            int(n),
            int(k),
            alpha,
            a.data.as_ptr(),
            int(a.stride),
            b.data.as_ptr(),
            int(b.stride),
            beta,
            c.as_mut_ptr(),
            int(ldc),
        );
    }
}

/// Token rows up to which a layer runs on its f16 copy: there the product
/// is bound by reading the weights, and f16 halves the bytes. Measured over
/// all of MiniLM's dense layers: 20 vs 34 ms at 128 rows, even at 256 rows,
/// where OpenBLAS's f32 GEMM, bound by arithmetic, catches up.
const HALF_ROWS: usize = 128;

/// A dense layer: weight `[out × in]` (PyTorch's layout) and bias `[out]`,
/// also kept as f16 for small batches.
struct Linear {
    weight: Vec<f32>,
    half: HalfLinear,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    fn new(weight: Vec<f32>, bias: Vec<f32>, inputs: usize, outputs: usize) -> Self {
        Self {
            half: HalfLinear::from_f32(&weight, outputs, inputs),
            weight,
            bias,
            inputs,
            outputs,
        }
    }

    /// `y[rows × out] = x[rows × in] · Wᵀ + b`.
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = Vec::with_capacity(rows * self.outputs);
        for _ in 0..rows {
            y.extend_from_slice(&self.bias);
        }
        if rows <= HALF_ROWS {
            self.half.matmul_add(&x[..rows * self.inputs], &mut y);
            return y;
        }
        let w = View::new(&self.weight, self.outputs, self.inputs, self.inputs);
        gemm(
            1.0,
            View::new(x, rows, self.inputs, self.inputs),
            w,
            true,
            1.0,
            &mut y,
            self.outputs,
        );
        y
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        for row in x.chunks_exact_mut(h) {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The dimensions of a BERT encoder.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Feed-forward size.
    pub intermediate: usize,
    /// Position embeddings (the longest input).
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
}

/// BERT weights laid out for OpenBLAS.
pub struct BlasBert {
    shape: Shape,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

fn load(vb: &VarBuilder, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t: Tensor = vb
        .get(shape, name)
        .map_err(|e| Error::Internal(format!("loading weight {name}: {e}")))?;
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::Internal(format!("reading weight {name}: {e}")))
}

impl std::fmt::Debug for BlasBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlasBert")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl BlasBert {
    /// Copies the weights out of `vb` (a Hugging Face BERT checkpoint, with or
    /// without the `bert.` prefix).
    pub fn load(vb: VarBuilder, shape: Shape) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = shape.hidden;
        let norm = |prefix: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: load(&vb, &format!("{prefix}.weight"), &[h])?,
                beta: load(&vb, &format!("{prefix}.bias"), &[h])?,
                eps: shape.eps,
            })
        };
        let linear = |prefix: &str, inputs: usize, outputs: usize| -> Result<Linear> {
            Ok(Linear::new(
                load(&vb, &format!("{prefix}.weight"), &[outputs, inputs])?,
                load(&vb, &format!("{prefix}.bias"), &[outputs])?,
                inputs,
                outputs,
            ))
        };
        let vocab = vb
            .get_unchecked("embeddings.word_embeddings.weight")
            .map_err(|e| Error::Internal(format!("loading word embeddings: {e}")))?
            .dims()[0];
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("encoder.layer.{i}");
            let q = linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = Linear::new(
                [q.weight, k.weight, v.weight].concat(),
                [q.bias, k.bias, v.bias].concat(),
                h,
                3 * h,
            );
            layers.push(Layer {
                qkv,
                attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(&format!("{p}.intermediate.dense"), h, shape.intermediate)?,
                output: linear(&format!("{p}.output.dense"), shape.intermediate, h)?,
                output_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word: load(&vb, "embeddings.word_embeddings.weight", &[vocab, h])?,
            position: load(
                &vb,
                "embeddings.position_embeddings.weight",
                &[shape.max_positions, h],
            )?,
            token_type: load(&vb, "embeddings.token_type_embeddings.weight", &[2, h])?[..h]
                .to_vec(),
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            shape,
        })
    }

    /// Mean-pooled token embeddings of each input (not normalised).
    pub fn forward(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        let h = self.shape.hidden;
        let vocab = self.word.len() / h;
        let mut offsets = Vec::with_capacity(batch.len() + 1);
        offsets.push(0);
        for e in batch {
            if e.ids.len() > self.shape.max_positions {
                return Err(Error::Internal(format!(
                    "{} tokens exceed the model's {} positions",
                    e.ids.len(),
                    self.shape.max_positions
                )));
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + e.ids.len());
        }
        let rows = *offsets.last().unwrap_or(&0);

        let mut x = Vec::with_capacity(rows * h);
        for e in batch {
            for (pos, &id) in e.ids.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(Error::Internal(format!(
                        "token id {id} outside the vocabulary"
                    )));
                }
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(&self.token_type)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        self.embedding_norm.apply(&mut x);

        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x, rows);
            let context = self.attention(&qkv, &offsets);
            let mut attended = layer.attention_out.forward(&context, rows);
            attended.iter_mut().zip(&x).for_each(|(a, r)| *a += r);
            layer.attention_norm.apply(&mut attended);

            let mut inner = layer.intermediate.forward(&attended, rows);
            inner.iter_mut().for_each(|v| *v = gelu(*v));
            let mut out = layer.output.forward(&inner, rows);
            out.iter_mut().zip(&attended).for_each(|(o, r)| *o += r);
            layer.output_norm.apply(&mut out);
            x = out;
        }

        Ok(offsets
            .windows(2)
            .map(|w| {
                let n = (w[1] - w[0]).max(1) as f32;
                let mut mean = vec![0f32; h];
                for row in x[w[0] * h..w[1] * h].chunks_exact(h) {
                    mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                }
                mean.iter_mut().for_each(|m| *m /= n);
                mean
            })
            .collect())
    }

    /// Multi-head self-attention of each sequence over its own tokens.
    fn attention(&self, qkv: &[f32], offsets: &[usize]) -> Vec<f32> {
        let h = self.shape.hidden;
        let heads = self.shape.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let rows = *offsets.last().unwrap_or(&0);
        let mut context = vec![0f32; rows * h];
        let mut scores = Vec::new();
        for w in offsets.windows(2) {
            let (start, n) = (w[0], w[1] - w[0]);
            if n == 0 {
                continue;
            }
            scores.resize(n * n, 0.0);
            for head in 0..heads {
                let q = View::new(&qkv[start * 3 * h + head * d..], n, d, 3 * h);
                let k = View::new(&qkv[start * 3 * h + h + head * d..], n, d, 3 * h);
                let v = View::new(&qkv[start * 3 * h + 2 * h + head * d..], n, d, 3 * h);
                gemm(scale, q, k, true, 0.0, &mut scores, n);
                for row in scores.chunks_exact_mut(n) {
                    softmax(row);
                }
                let out = &mut context[start * h + head * d..];
                gemm(1.0, View::new(&scores, n, n, n), v, false, 0.0, out, h);
            }
        }
        context
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// GELU as BERT defines it, 0.5·x·(1 + erf(x/√2)).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf with absolute error below 1.5e-7 from the approximation (Abramowitz &
/// Stegun 7.1.26), plus f32 rounding: about 3e-7 in all, far below what
/// the reference test notices.
fn erf(x: f32) -> f32 {
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    sign * (1.0 - poly * (-x * x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // erf(0.5), erf(1), erf(2) to 9 digits.
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_876),
            (1.0, 0.842_700_793),
            (2.0, 0.995_322_265),
            (-1.0, -0.842_700_793),
        ] {
            assert!(
                (f64::from(erf(x)) - want).abs() < 3e-7,
                "erf({x}) = {} not {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn gemm_with_strides_and_transposes() {
        // a = [[1,2],[3,4]] inside a stride-3 buffer, b = [[5,6],[7,8]].
        let a = [1.0, 2.0, 99.0, 3.0, 4.0, 99.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0; 4];
        gemm(
            1.0,
            View::new(&a, 2, 2, 3),
            View::new(&b, 2, 2, 2),
            false,
            0.0,
            &mut c,
            2,
        );
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        gemm(
            1.0,
            View::new(&a, 2, 2, 3),
            View::new(&b, 2, 2, 2),
            true,
            0.0,
            &mut c,
            2,
        );
        assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut row = [1.0, 2.0, 3.0, 1000.0];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[3] > 0.999);
    }
}
