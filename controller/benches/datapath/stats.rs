//! Median, min and max over repeated samples.

/// Summary of repeated samples of one figure.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// Panics on an empty or non-finite sample set: a benchmark that
    /// measured nothing is broken, not slow.
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        assert!(
            samples.iter().all(|s| s.is_finite()),
            "non-finite sample in {samples:?}"
        );
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        }
    }

    /// `median (min–max)` with `decimals` digits.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// Like [`Summary::show`] with values scaled by `scale` (e.g. 1e-3 for k).
    pub fn show_scaled(&self, scale: f64, decimals: usize) -> String {
        Summary {
            median: self.median * scale,
            min: self.min * scale,
            max: self.max * scale,
            n: self.n,
        }
        .show(decimals)
    }
}

/// Mean of the middle 80 % of `values`: robust against the interrupt that
/// lands in one single-shot run, finer than the integer-ns median.
pub fn trimmed_mean(values: &mut [u64]) -> f64 {
    assert!(!values.is_empty(), "no values");
    values.sort_unstable();
    let cut = values.len() / 10;
    let kept = &values[cut..values.len() - cut];
    kept.iter().map(|&v| v as f64).sum::<f64>() / kept.len() as f64
}
