//! The gated GELU of Gemma's feed-forward layers.
//!
//! candle computes GELU element by element through libm's `tanhf`, which
//! does not vectorize: during prefill that was one twelfth of the time to
//! first token. Here tanh is a rational function (the one Eigen uses for
//! f32, accurate to a few units in the last place) that the compiler turns
//! into SIMD code.

use candle_core::{Result, Tensor};

/// `gelu(gate) · up`, elementwise, with GELU's tanh approximation as
/// Gemma was trained with it.
pub fn gelu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        candle_core::bail!("gelu_mul: gate {:?} and up {:?}", gate.dims(), up.dims());
    }
    let mut out = gate.flatten_all()?.to_vec1::<f32>()?;
    let up_values = up.flatten_all()?.to_vec1::<f32>()?;
    for (g, u) in out.iter_mut().zip(&up_values) {
        *g = gelu(*g) * u;
    }
    Tensor::from_vec(out, gate.dims(), gate.device())
}

/// GELU, tanh approximation: x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
#[inline]
fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + tanh(inner))
}

/// tanh as a 13/6 rational function on [-7.9, 7.9] (beyond which f32 tanh
/// is ±1), after Eigen's `ptanh_float`.
#[inline]
#[allow(clippy::excessive_precision)] // the coefficients as published
fn tanh(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297_3e-8,
        -8.604_671_5e-11,
        2.000_187_8e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = p * x2 + a;
    }
    let mut q = BETA[3];
    for b in BETA[..3].iter().rev() {
        q = q * x2 + b;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tanh_matches_libm_everywhere_that_matters() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-6, "largest error {worst}");
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn gelu_mul_equals_candles_gelu_times_up() {
        let gate = Tensor::randn(0f32, 3.0, (2, 7, 33), &Device::Cpu).unwrap();
        let up = Tensor::randn(0f32, 1.0, (2, 7, 33), &Device::Cpu).unwrap();
        let want = (gate.gelu().unwrap() * &up).unwrap();
        let got = gelu_mul(&gate, &up).unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
        let other = Tensor::zeros((2, 7, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(gelu_mul(&gate, &other).is_err());
    }
}
