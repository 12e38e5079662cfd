//! The distributions the generator draws from: standard normals (Box–Muller), the standard normal
//! quantile (Acklam's rational approximation, relative error < 1.2e-9) and Zipfian firing probabilities.

use rand::Rng;

/// One standard normal draw (Box–Muller, one of the pair).
pub fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - u lies in (0, 1]: the log is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Φ⁻¹(p), the standard normal quantile, for `p` in (0, 1); ±∞ at the ends.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Firing probabilities `p_i ∝ 1/i^exponent` (rank `i` from 1), rescaled linearly onto
/// `[min_prob, max_prob]`: feature 0 is the most frequent.
pub fn zipf_probabilities(n: usize, exponent: f64, min_prob: f64, max_prob: f64) -> Vec<f64> {
    if n == 1 {
        return vec![max_prob];
    }
    let raw = |i: usize| ((i + 1) as f64).powf(-exponent);
    let (hi, lo) = (raw(0), raw(n - 1));
    (0..n)
        .map(|i| min_prob + (max_prob - min_prob) * (raw(i) - lo) / (hi - lo))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quantile_matches_tables() {
        // Values from standard normal tables.
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.01, -2.326_347_874),
            (0.001, -3.090_232_306),
            (0.3, -0.524_400_513),
        ] {
            assert!((normal_quantile(p) - z).abs() < 1e-8, "{p}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn normal_moments() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.015,
            "{mean} {var}"
        );
        let below = xs.iter().filter(|&&x| x < normal_quantile(0.1)).count() as f64 / n as f64;
        assert!((below - 0.1).abs() < 0.003, "{below}");
    }

    #[test]
    fn zipf_by_hand() {
        // ranks 1..=3, exponent 1: 1, 1/2, 1/3 → onto [0.1, 0.4]: 0.4, 0.1 + 0.3·(1/6)/(2/3) = 0.175, 0.1.
        let p = zipf_probabilities(3, 1.0, 0.1, 0.4);
        for (a, b) in p.iter().zip([0.4, 0.175, 0.1]) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
    }
}
