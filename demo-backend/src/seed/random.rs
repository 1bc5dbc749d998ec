//! A small deterministic random number generator, so the same seed options always produce the same
//! data. SplitMix64 for the stream, Box-Muller for normal noise; not for anything secret.

use uuid::Uuid;

/// A SplitMix64 stream. Each part of the seed derives its own stream from a label, so that adding
/// a service or a blip in one place does not shift the values drawn everywhere else.
#[derive(Debug, Clone)]
pub(crate) struct Random {
    state: u64,
    /// Box-Muller draws normal values in pairs; the second one waits here.
    spare_normal: Option<f64>,
}

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare_normal: None,
        }
    }

    /// A stream of its own for one purpose, named by `label`, under the seed `seed`.
    pub(crate) fn derive(seed: u64, label: &str) -> Self {
        let mut label_hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in label.bytes() {
            label_hash ^= u64::from(byte);
            label_hash = label_hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut mixer = Random::new(seed ^ label_hash.rotate_left(17));
        Random::new(mixer.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A value uniformly distributed in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        // The top 53 bits fill a double's mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value uniformly distributed in `[low, high)`.
    pub(crate) fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// A value whose logarithm is uniform in `[ln low, ln high)`: right for quantities that span
    /// orders of magnitude, like request rates.
    pub(crate) fn log_between(&mut self, low: f64, high: f64) -> f64 {
        self.between(low.ln(), high.ln()).exp()
    }

    /// An integer uniformly distributed in `low..=high`.
    pub(crate) fn integer(&mut self, low: i64, high: i64) -> i64 {
        debug_assert!(low <= high);
        let span = (high - low + 1) as u64;
        low + (self.next_u64() % span) as i64
    }

    /// An index into a collection of `length` items; `length` must not be zero.
    pub(crate) fn index(&mut self, length: usize) -> usize {
        debug_assert!(length > 0);
        (self.next_u64() % length as u64) as usize
    }

    pub(crate) fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    pub(crate) fn pick<'items, Item>(&mut self, items: &'items [Item]) -> &'items Item {
        &items[self.index(items.len())]
    }

    /// A standard normal value (mean 0, standard deviation 1).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(spare) = self.spare_normal.take() {
            return spare;
        }
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.unit();
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// A version 4 UUID whose bits come from this stream, so reruns give the same identifiers.
    pub(crate) fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// `length` lowercase hexadecimal digits, e.g. for a commit SHA.
    pub(crate) fn hex(&mut self, length: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..length)
            .map(|_| char::from(DIGITS[(self.next_u64() & 0xf) as usize]))
            .collect()
    }
}

/// The identifier of the row named by `label` under `seed`: the same label always gives the same
/// identifier, whatever else the seed creates.
pub(crate) fn identifier(seed: u64, label: &str) -> Uuid {
    Random::derive(seed, label).uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_label_give_the_same_stream() {
        let mut first = Random::derive(42, "signals/acme/checkout-api");
        let mut second = Random::derive(42, "signals/acme/checkout-api");
        let mut other = Random::derive(42, "signals/acme/cart-service");
        let first_values: Vec<u64> = (0..8).map(|_| first.next_u64()).collect();
        let second_values: Vec<u64> = (0..8).map(|_| second.next_u64()).collect();
        let other_values: Vec<u64> = (0..8).map(|_| other.next_u64()).collect();
        assert_eq!(first_values, second_values);
        assert_ne!(first_values, other_values);
    }

    #[test]
    fn uniform_values_stay_in_range() {
        let mut random = Random::new(7);
        for _ in 0..10_000 {
            let unit = random.unit();
            assert!((0.0..1.0).contains(&unit));
            let integer = random.integer(3, 5);
            assert!((3..=5).contains(&integer));
            let scaled = random.log_between(5.0, 2000.0);
            assert!((5.0..2000.0).contains(&scaled), "{scaled}");
        }
    }

    #[test]
    fn normal_values_have_mean_zero_and_unit_spread() {
        let mut random = Random::new(11);
        let count = 100_000;
        let values: Vec<f64> = (0..count).map(|_| random.normal()).collect();
        let mean = values.iter().sum::<f64>() / count as f64;
        let variance = values
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.03, "variance {variance}");
    }

    #[test]
    fn identifiers_are_version_4_and_stable() {
        let identifier_one = identifier(1, "service/acme/checkout-api");
        assert_eq!(identifier_one.get_version_num(), 4);
        assert_eq!(identifier_one, identifier(1, "service/acme/checkout-api"));
        assert_ne!(identifier_one, identifier(2, "service/acme/checkout-api"));
        assert_eq!(Random::new(3).hex(40).len(), 40);
    }
}
