//! The fuzzer's only source of randomness: SplitMix64, seeded once per run and once per
//! conversation, so that a seed and an iteration number replay a conversation exactly on any
//! machine (no dependency whose stream could change between versions).

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed of conversation `index` of the run seeded with `seed`.
    pub fn conversation_seed(seed: u64, index: u64) -> u64 {
        Rng::new(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f)).next()
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A value near the edges a parser checks (0, 1, max, max - 1, a power of two and its
    /// neighbours) or uniform, for a field of `bits` bits.
    pub fn interesting(&mut self, bits: u32) -> u64 {
        let max = if bits >= 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        match self.below(6) {
            0 => 0,
            1 => 1,
            2 => max,
            3 => max - 1,
            4 => {
                let p = 1u64 << self.below(bits as usize);
                (p + self.below(3) as u64).wrapping_sub(1) & max
            }
            _ => self.next() & max,
        }
    }
}
