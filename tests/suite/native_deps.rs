//! The native engines' libraries link and compute: faiss (built from source
//! by faiss-sys with OpenBLAS) and candle. Later issues build on both; this
//! keeps a broken toolchain or link line from hiding until then.

use faiss::{Index, MetricType, index_factory};

#[test]
fn faiss_hnsw_finds_the_nearest_vector() {
    let dims = 8u32;
    let mut index = index_factory(dims, "HNSW16,Flat", MetricType::L2).expect("index_factory");
    let mut data = Vec::new();
    for i in 0..100u32 {
        for d in 0..dims {
            data.push((i * dims + d) as f32 * 0.01);
        }
    }
    index.add(&data).unwrap();
    assert_eq!(index.ntotal(), 100);
    let query: Vec<f32> = data[42 * 8..43 * 8].to_vec();
    let result = index.search(&query, 3).unwrap();
    assert_eq!(result.labels[0].get(), Some(42));
    assert!(result.distances[0] < 1e-6);
}

#[test]
fn candle_matmul_matches_hand_computation() {
    use candle_core::{Device, Tensor};
    let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[5f32, 6.], [7., 8.]], &Device::Cpu).unwrap();
    let c: Vec<Vec<f32>> = a.matmul(&b).unwrap().to_vec2().unwrap();
    assert_eq!(c, vec![vec![19., 22.], vec![43., 50.]]);
}
