//! Vector maths shared by the embedding engine (normalised embeddings) and
//! the memory engine (cosine collections store normalised vectors).

/// Scales `v` to length 1; false (and `v` unchanged) for a zero vector,
/// which has no direction.
pub fn l2_normalize(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_leaves_zero_vectors_alone() {
        let mut v = [3.0, 4.0];
        assert!(l2_normalize(&mut v));
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        assert!(!l2_normalize(&mut zero));
        assert_eq!(zero, [0.0, 0.0]);
    }
}
