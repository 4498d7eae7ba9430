//! Small, dependency-free sampling helpers.
//!
//! `rand_distr` is not a dependency of the crate, and the handful of shapes the
//! generator needs (normal, log-normal, exponential, Zipf weights, jittered
//! schedules) are a few lines each. Keeping them here, rather than inline in the
//! populations, makes every population read as "what the traffic looks like"
//! instead of "how to sample it".

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Milliseconds in a minute, hour and day, for readable schedules.
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A random stream for one named part of the generator.
///
/// Each population draws from its own stream, derived from the seed and a
/// label, so that changing one population (more accounts, another field)
/// leaves the bytes of every other population unchanged: diffs between two
/// generator versions stay local and reviewable.
pub fn stream(seed: u64, label: &str) -> StdRng {
    // FNV-1a over the label: fixed, platform-independent (unlike std's
    // RandomState), then splitmix64 to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(splitmix64(seed ^ h))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `[lo, hi)`; tolerates `lo == hi`.
pub fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Uniform integer in `[lo, hi]` (inclusive both ends).
pub fn int(rng: &mut StdRng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

/// Standard normal via Box–Muller.
pub fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Log-normal with the given median and log-space sigma: the natural shape of
/// token counts and human think times (heavy right tail, never negative).
pub fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Exponential with the given mean (Poisson inter-arrival).
pub fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    -mean * u.ln()
}

/// Geometric count `>= 1` with the given mean.
pub fn geometric(rng: &mut StdRng, mean: f64) -> i64 {
    let p = (1.0 / mean.max(1.0)).clamp(1e-6, 1.0);
    let mut k = 1;
    while k < 10_000 && !rng.random_bool(p) {
        k += 1;
    }
    k
}

/// Index drawn from unnormalised `weights`.
pub fn weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

/// Zipf weights `1 / rank^s` for `n` items: the usual shape of "a few
/// templates dominate" in scripted traffic.
pub fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect()
}

/// One element of a non-empty slice.
pub fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A random 64-bit fingerprint (SimHash / template hash / tool hash stand-in).
pub fn fingerprint(rng: &mut StdRng) -> i64 {
    rng.random::<i64>()
}

/// `n` lowercase hex digits, for opaque ids.
pub fn hex(rng: &mut StdRng, n: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..n)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect()
}

/// Times of a scripted client in `[from, to)`: a mean gap with Gaussian jitter
/// of relative size `cv` (so the inter-arrival coefficient of variation is about
/// `cv`), starting at a random phase. This is what "machine-regular" means in
/// SIGNALS.md: CV well below the ~1 of human, Poisson-like traffic.
pub fn regular_times(rng: &mut StdRng, from: i64, to: i64, mean_gap_ms: f64, cv: f64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = from as f64 + uniform(rng, 0.0, mean_gap_ms);
    while t < to as f64 {
        out.push(t as i64);
        let gap = mean_gap_ms * (1.0 + cv * normal(rng)).max(0.05);
        t += gap;
    }
    out
}

/// Times of an inhomogeneous Poisson process in `[from, to)` with intensity
/// `rate(t)` events per millisecond, by thinning against `max_rate`.
pub fn poisson_times(
    rng: &mut StdRng,
    from: i64,
    to: i64,
    max_rate: f64,
    rate: impl Fn(i64) -> f64,
) -> Vec<i64> {
    let mut out = Vec::new();
    if max_rate <= 0.0 {
        return out;
    }
    let mut t = from as f64;
    loop {
        t += exponential(rng, 1.0 / max_rate);
        if t >= to as f64 {
            break;
        }
        let ti = t as i64;
        if rng.random::<f64>() * max_rate < rate(ti) {
            out.push(ti);
        }
    }
    out
}

/// Relative activity of people at a local hour of day in `[0.1, 1.0]`: lowest
/// around 03:00, highest mid-afternoon. Benign traffic follows it; 24/7
/// harvesting does not, which is what the hour-of-day features look for.
pub fn diurnal(local_hour: f64) -> f64 {
    let phase = 2.0 * std::f64::consts::PI * (local_hour - 15.0) / 24.0;
    0.55 + 0.45 * phase.cos()
}

/// Local hour of day at UTC millis `t` in a zone `offset_h` hours from UTC.
pub fn local_hour(t: i64, offset_h: f64) -> f64 {
    let h = (t.rem_euclid(DAY_MS)) as f64 / HOUR_MS as f64 + offset_h;
    h.rem_euclid(24.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_stable() {
        let a1: u64 = stream(1, "a").random();
        let a2: u64 = stream(1, "a").random();
        let b: u64 = stream(1, "b").random();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
    }

    #[test]
    fn regular_times_have_low_cv() {
        let mut rng = stream(7, "t");
        let ts = regular_times(&mut rng, 0, 10 * HOUR_MS, 2_000.0, 0.3);
        let gaps: Vec<f64> = ts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((0.2..0.4).contains(&cv), "cv {cv}");
    }

    #[test]
    fn diurnal_is_bounded() {
        for h in 0..24 {
            let d = diurnal(h as f64);
            assert!((0.1 - 1e-9..=1.0 + 1e-9).contains(&d));
        }
        assert!(diurnal(15.0) > diurnal(3.0));
    }
}
