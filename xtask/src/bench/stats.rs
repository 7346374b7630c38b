//! Medians and spreads: the benchmark reports the median of repeated measurements with the
//! 25th-75th percentile range, never a lone number.

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Summary {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        Summary {
            n: v.len(),
            median: percentile(&v, 50.0),
            p25: percentile(&v, 25.0),
            p75: percentile(&v, 75.0),
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// Half the interquartile range relative to the median, in percent: the spread column.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.p75 - self.p25) / 2.0 / self.median * 100.0
    }
}

/// Linear interpolation between closest ranks; `sorted` must be sorted and not empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles_interpolate() {
        let s = Summary::of([4.0, 1.0, 3.0, 2.0, f64::NAN]);
        assert_eq!(s.n, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.p25, 1.75);
        assert_eq!(s.p75, 3.25);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_eq!(Summary::of([]).n, 0);
    }
}
