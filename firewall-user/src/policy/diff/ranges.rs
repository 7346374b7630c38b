//! Sets of numbers (ports, unit ids, addresses, sub-functions, ICMP types) as the datapath
//! sees them: whatever ranges or lists a policy wrote, only which numbers are in the set
//! matters, so `[22, 23]`, `["22-23"]` and `[23, 22]` are the same set.

/// Sorted, disjoint, non-touching inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// The union of `ranges` (`(lo, hi)`, both ends included, in any order).
    pub fn new(ranges: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut sorted: Vec<(u32, u32)> = ranges.into_iter().collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (lo, hi) in sorted {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ranges(merged)
    }

    pub fn values(values: impl IntoIterator<Item = u32>) -> Self {
        Ranges::new(values.into_iter().map(|v| (v, v)))
    }

    /// Every number of `lo..=hi`.
    pub fn full(lo: u32, hi: u32) -> Self {
        Ranges(vec![(lo, hi)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }

    pub fn contains(&self, value: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= value && value <= hi)
    }

    /// The numbers of `self` that are not in `other`.
    pub fn minus(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(lo, hi) in &self.0 {
            let mut next = lo;
            let mut open = true;
            for &(olo, ohi) in other.0.iter().filter(|&&(olo, ohi)| ohi >= lo && olo <= hi) {
                if olo > next {
                    out.push((next, olo - 1));
                }
                match ohi.checked_add(1) {
                    Some(after) if ohi < hi => next = next.max(after),
                    _ => {
                        open = false;
                        break;
                    }
                }
            }
            if open && next <= hi {
                out.push((next, hi));
            }
        }
        Ranges(out)
    }

    /// Each range as text: `one(n)` for a single number, `lo-hi` for a run.
    pub fn items(&self, one: impl Fn(u32) -> String) -> Vec<String> {
        self.0
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    one(lo)
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_joins_touching_and_overlapping_ranges_in_any_order() {
        let r = Ranges::new([(23, 23), (10, 20), (21, 22), (30, 40), (35, 36)]);
        assert_eq!(r.ranges(), &[(10, 23), (30, 40)]);
        assert_eq!(Ranges::values([3, 1, 2]), Ranges::full(1, 3));
        assert!(Ranges::new([]).is_empty());
    }

    #[test]
    fn difference_cuts_holes_and_ends() {
        let r = Ranges::new([(0, 99)]);
        assert_eq!(
            r.minus(&Ranges::new([(10, 19), (50, 200)])).ranges(),
            &[(0, 9), (20, 49)]
        );
        assert_eq!(r.minus(&Ranges::new([(0, 99)])), Ranges::default());
        assert_eq!(r.minus(&Ranges::default()), r);
        assert_eq!(
            Ranges::new([(0, 5), (10, 15)])
                .minus(&Ranges::new([(3, 12)]))
                .ranges(),
            &[(0, 2), (13, 15)]
        );
        let top = Ranges::full(0, u32::MAX);
        assert_eq!(
            top.minus(&Ranges::values([u32::MAX])).ranges(),
            &[(0, u32::MAX - 1)]
        );
        assert!(Ranges::values([7]).minus(&top).is_empty());
    }

    #[test]
    fn items_name_single_numbers() {
        let r = Ranges::new([(22, 22), (8000, 8100)]);
        assert_eq!(r.items(|n| format!("#{n}")), vec!["#22", "8000-8100"]);
        assert!(r.contains(8050) && !r.contains(23));
    }
}
