//! Shared by the index examples: a deterministic generator of embedding-like unit vectors.

pub const DIM: usize = 384;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
}

pub fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Unit vectors with a low intrinsic dimension (a random 24-dimensional latent space mapped
/// into 384 dimensions, plus a little noise), as sentence embeddings have; uniform noise in
/// 384 dimensions would make every index degrade to a full scan.
pub fn dataset(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    const LATENT: usize = 24;
    let mut basis_rng = Rng(42);
    let basis: Vec<Vec<f32>> = (0..LATENT)
        .map(|_| (0..DIM).map(|_| basis_rng.next()).collect())
        .collect();
    (0..n)
        .map(|_| {
            let z: Vec<f32> = (0..LATENT).map(|_| rng.next()).collect();
            let v = (0..DIM)
                .map(|d| {
                    basis.iter().zip(&z).map(|(b, w)| b[d] * w).sum::<f32>() + 0.02 * rng.next()
                })
                .collect();
            normalised(v)
        })
        .collect()
}
