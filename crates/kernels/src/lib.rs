//! agentd-kernels: the CPU kernels that agentd's models spend their time
//! in, where candle's own (or OpenBLAS for tiny batches) are slow on x86.
//!
//! - [`Int8Linear`]: 8-bit projections with a tiled AVX2 matrix multiply.
//! - [`HalfLinear`]: f16 weights, f32 arithmetic, for the few-row products
//!   of the embedding model where reading the weights is the cost.
//! - [`gelu_mul`]: Gemma's gated feed-forward activation, `gelu(gate) · up`,
//!   in plain loops that the compiler vectorizes.
//!
//! A crate of its own so that dev builds (and so the tests of the whole
//! server) optimise it; it knows candle's tensors and thread pool and
//! nothing of agentd.

mod gelu;
mod half_linear;
mod int8;

pub use gelu::gelu_mul;
pub use half_linear::{HalfLinear, PANEL};
pub use int8::{BLOCK, Int8Linear};
