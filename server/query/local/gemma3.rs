//! Gemma 3 on candle from a GGUF file: the forward pass of the `local`
//! provider.
//!
//! Written for agentd rather than taken from candle-transformers, whose
//! `quantized_gemma3` (0.11) uses SiLU where Gemma uses tanh-approximated
//! GELU (candle issue 3745), applies no sliding-window mask, builds RoPE
//! tables for 131,072 positions in every layer, and dequantizes the 262k ×
//! 640 embedding table to f32 (670 MB). Here: GELU, the sliding window of
//! the local layers masked, one pair of RoPE tables per base shared by all
//! layers and sized to the context cap, and embedding rows read straight
//! from the quantized table (which also serves as the tied output layer).
//! Projections stored in 8 bits or fewer (without k-quant super-blocks) run
//! on agentd's own 8-bit kernel (`agentd-kernels`), 2–2.5× faster than candle's
//! Q8_0 kernel on x86; candle has no AVX2 kernel at all for the Q5_0 that
//! most projections of Gemma 3 270M are stored in.
//!
//! The KV cache can be cut back to a prefix ([`Gemma3::truncate`]), so a
//! Resume on the same model only prefills what changed.

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

use agentd_kernels::{Int8Linear, gelu_mul};

/// The shape of the model, from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base of the global layers.
    pub rope_global: f32,
    /// RoPE base of the sliding-window layers.
    pub rope_local: f32,
    /// Keys a sliding-window layer sees.
    pub window: usize,
    /// Every n-th layer is global; the others slide.
    pub global_every: usize,
    /// Positions the model was trained for.
    pub context: usize,
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Tensor,
    sliding: bool,
    /// Keys and values of every position so far: (1, kv_heads, t, head_dim).
    cache: Option<(Tensor, Tensor)>,
}

/// The loaded model and its KV cache.
pub struct Gemma3 {
    config: Gemma3Config,
    /// The token embeddings, also the (tied) output layer.
    embed: QMatMul,
    layers: Vec<Layer>,
    final_norm: Tensor,
    /// cos/sin tables, (max_positions, head_dim / 2), per RoPE base.
    global_rope: (Tensor, Tensor),
    local_rope: (Tensor, Tensor),
    max_positions: usize,
    /// Positions held in the KV cache.
    cached: usize,
    device: Device,
}

impl std::fmt::Debug for Gemma3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3")
            .field("config", &self.config)
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

fn rope_tables(
    base: f32,
    head_dim: usize,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, head_dim / 2), device)?;
    let t = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let angles = t.matmul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Gemma3 {
    /// Loads the model in `content` (read from `reader`), with RoPE tables
    /// for at most `max_positions` positions.
    pub fn load<R: std::io::Seek + std::io::Read>(
        content: &gguf_file::Content,
        reader: &mut R,
        max_positions: usize,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let meta = |key: &str| {
            content
                .metadata
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("GGUF metadata gemma3.{key} is missing"))
                })
        };
        let heads = meta("attention.head_count")?.to_u32()? as usize;
        let hidden = meta("embedding_length")?.to_u32()? as usize;
        let config = Gemma3Config {
            layers: meta("block_count")?.to_u32()? as usize,
            hidden,
            heads,
            kv_heads: meta("attention.head_count_kv")?.to_u32()? as usize,
            head_dim: meta("attention.key_length")?.to_u32()? as usize,
            eps: f64::from(meta("attention.layer_norm_rms_epsilon")?.to_f32()?),
            rope_global: meta("rope.freq_base")
                .and_then(|v| v.to_f32())
                .unwrap_or(1_000_000.0),
            rope_local: meta("rope.local_freq_base")
                .and_then(|v| v.to_f32())
                .unwrap_or(10_000.0),
            window: meta("attention.sliding_window")?.to_u32()? as usize,
            global_every: 6,
            context: meta("context_length")?.to_u32()? as usize,
        };
        let max_positions = max_positions.min(config.context).max(1);
        let mut tensor = |name: &str| content.tensor(reader, name, &device);
        let dense = |t: QTensor| t.dequantize(&device);
        // candle's kernel, not agentd-kernels': as the output layer it runs for
        // one position at a time, where reading the 262k-row table from
        // memory is the cost, and ggml's Q8_0 blocks are the smaller.
        let embed = QMatMul::from_qtensor(fast_on_cpu(tensor("token_embd.weight")?)?)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut t = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
            layers.push(Layer {
                attn_norm: dense(t("attn_norm")?)?,
                q: Linear::new(t("attn_q")?)?,
                k: Linear::new(t("attn_k")?)?,
                v: Linear::new(t("attn_v")?)?,
                o: Linear::new(t("attn_output")?)?,
                q_norm: dense(t("attn_q_norm")?)?,
                k_norm: dense(t("attn_k_norm")?)?,
                post_attn_norm: dense(t("post_attention_norm")?)?,
                ffn_norm: dense(t("ffn_norm")?)?,
                gate: Linear::new(t("ffn_gate")?)?,
                up: Linear::new(t("ffn_up")?)?,
                down: Linear::new(t("ffn_down")?)?,
                post_ffn_norm: dense(t("post_ffw_norm")?)?,
                sliding: (i + 1) % config.global_every != 0,
                cache: None,
            });
        }
        let final_norm = dense(tensor("output_norm.weight")?)?;
        let global_rope = rope_tables(config.rope_global, config.head_dim, max_positions, &device)?;
        let local_rope = rope_tables(config.rope_local, config.head_dim, max_positions, &device)?;
        Ok(Gemma3 {
            embed,
            layers,
            final_norm,
            global_rope,
            local_rope,
            max_positions,
            cached: 0,
            device,
            config,
        })
    }

    /// The shape.
    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// Most positions (prompt and output) one sequence can hold.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Positions in the KV cache.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Cuts the KV cache back to its first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.cached {
            return Ok(());
        }
        for layer in &mut self.layers {
            layer.cache = match (len, layer.cache.take()) {
                (0, _) | (_, None) => None,
                (len, Some((k, v))) => Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)),
            };
        }
        self.cached = len;
        Ok(())
    }

    /// Feeds `tokens` after the cached positions; returns the logits of the
    /// last one, (vocab,).
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let seq = tokens.len();
        let start = self.cached;
        if start + seq > self.max_positions {
            candle_core::bail!(
                "sequence of {} positions exceeds the model's limit of {}",
                start + seq,
                self.max_positions
            );
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut h =
            (self.embed.embedding(&ids)?.unsqueeze(0)? * (self.config.hidden as f64).sqrt())?;
        let global_mask = mask(seq, start, None, &self.device)?;
        let local_mask = mask(seq, start, Some(self.config.window), &self.device)?;
        let c = self.config.clone();
        for layer in &mut self.layers {
            let (rope, mask) = if layer.sliding {
                (&self.local_rope, &local_mask)
            } else {
                (&self.global_rope, &global_mask)
            };
            let cos = rope.0.narrow(0, start, seq)?;
            let sin = rope.1.narrow(0, start, seq)?;
            let residual = &h;
            let x = candle_nn::ops::rms_norm(&h, &layer.attn_norm, c.eps as f32)?;
            let q = layer
                .q
                .forward(&x)?
                .reshape((1, seq, c.heads, c.head_dim))?
                .transpose(1, 2)?;
            let k = layer
                .k
                .forward(&x)?
                .reshape((1, seq, c.kv_heads, c.head_dim))?
                .transpose(1, 2)?;
            let v = layer
                .v
                .forward(&x)?
                .reshape((1, seq, c.kv_heads, c.head_dim))?
                .transpose(1, 2)?;
            let q = candle_nn::ops::rms_norm(&q.contiguous()?, &layer.q_norm, c.eps as f32)?;
            let k = candle_nn::ops::rms_norm(&k.contiguous()?, &layer.k_norm, c.eps as f32)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let (k, v) = match layer.cache.take() {
                Some((pk, pv)) => (
                    Tensor::cat(&[&pk, &k], 2)?,
                    Tensor::cat(&[&pv, &v.contiguous()?], 2)?,
                ),
                None => (k, v.contiguous()?),
            };
            layer.cache = Some((k.clone(), v.clone()));
            let group = c.heads / c.kv_heads;
            let total = start + seq;
            // Grouped-query attention: fold the query heads that share a
            // key/value head into the sequence axis instead of copying keys.
            let q = q.reshape((1, c.kv_heads, group * seq, c.head_dim))?;
            let scores = (q.matmul(&k.t()?)? * (1.0 / (c.head_dim as f64).sqrt()))?;
            let scores = scores
                .reshape((1, c.kv_heads, group, seq, total))?
                .broadcast_add(mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let attn = probs
                .reshape((1, c.kv_heads, group * seq, total))?
                .matmul(&v)?
                .reshape((1, c.heads, seq, c.head_dim))?
                .transpose(1, 2)?
                .reshape((1, seq, c.heads * c.head_dim))?;
            let attn = layer.o.forward(&attn)?;
            let attn = candle_nn::ops::rms_norm(&attn, &layer.post_attn_norm, c.eps as f32)?;
            let h1 = (residual + attn)?;
            let x = candle_nn::ops::rms_norm(&h1, &layer.ffn_norm, c.eps as f32)?;
            let gated = gelu_mul(&layer.gate.forward(&x)?, &layer.up.forward(&x)?)?;
            let ffn = layer.down.forward(&gated)?;
            let ffn = candle_nn::ops::rms_norm(&ffn, &layer.post_ffn_norm, c.eps as f32)?;
            h = (h1 + ffn)?;
        }
        self.cached = start + seq;
        let last = h.i((0, seq - 1))?.unsqueeze(0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.final_norm, c.eps as f32)?;
        self.embed.forward(&last)?.squeeze(0)?.to_dtype(DType::F32)
    }
}

/// A projection: agentd's 8-bit kernel ([`Int8Linear`]) for weights stored
/// in 8 or 5 bits (or 4 bits without k-quant super-blocks), which are most
/// of Gemma 3 270M's; candle's own kernels for the k-quants (Q4_K, Q6_K),
/// which have x86 kernels of their own: re-quantized to 8 bits they were no
/// faster and moved the logits further from llama.cpp's.
enum Linear {
    Int8(Int8Linear),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        use candle_core::quantized::GgmlDType;
        let int8 = match t.dtype() {
            GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1 => {
                Int8Linear::from_qtensor(&t)?
            }
            _ => None,
        };
        Ok(match int8 {
            Some(layer) => Linear::Int8(layer),
            None => Linear::Candle(QMatMul::from_qtensor(t)?),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Int8(layer) => layer.forward(x),
            Linear::Candle(layer) => layer.forward(x),
        }
    }
}

/// candle has no AVX2 dot-product kernel for Q5_0, Q5_1 or Q4_1 (they run
/// scalar unless built for the exact CPU) but has one for Q8_0, whose
/// blocks hold those grids almost exactly.
fn fast_on_cpu(t: QTensor) -> Result<QTensor> {
    use candle_core::quantized::GgmlDType;
    match t.dtype() {
        GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1 => {
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
        }
        _ => Ok(t),
    }
}

/// The additive attention mask for `seq` new positions after `start`
/// cached ones: causal, and for sliding layers no further back than
/// `window` positions. Shape (seq, start + seq), broadcast over heads.
fn mask(seq: usize, start: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let total = start + seq;
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| {
            let pos = start + i;
            (0..total).map(move |j| {
                let visible = j <= pos && window.is_none_or(|w| pos - j < w);
                if visible { 0.0 } else { f32::NEG_INFINITY }
            })
        })
        .collect();
    Tensor::from_vec(values, (seq, total), device)
}
