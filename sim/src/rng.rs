//! A small seeded random source (SplitMix64): the same seed and the same
//! sequence of requests give the same decisions, so a run is reproducible.

/// SplitMix64 (Steele, Lea, Flood 2014). Not cryptographic; it only picks
/// which simulated fault happens.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw uniform in `[0, 1)`: the top 53 bits as a fraction.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether an event of probability `rate` happens for `draw` in `[0, 1)`:
/// a rate of 0 never fires, a rate of 1 always does.
pub fn happens(rate: f64, draw: f64) -> bool {
    draw < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of the reference SplitMix64 for seed 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn same_seed_same_draws_and_draws_stay_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..10_000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn rates_at_the_edges() {
        let table = [
            (0.0, 0.0, false),
            (0.0, 0.999, false),
            (1.0, 0.0, true),
            (1.0, 0.999_999, true),
            (0.5, 0.49, true),
            (0.5, 0.5, false),
        ];
        for (rate, draw, want) in table {
            assert_eq!(happens(rate, draw), want, "rate={rate} draw={draw}");
        }
    }
}
