//! The Prometheus text format, as far as reading counters and histograms
//! goes: samples by name and labels, histogram deltas between two scrapes,
//! and quantiles interpolated within buckets (as `histogram_quantile` does).

/// One `name{labels} value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The `{…}` part, without braces.
    pub labels: String,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or "".
    pub fn label(&self, key: &str) -> &str {
        let pat = format!("{key}=\"");
        let mut rest = self.labels.as_str();
        while let Some(i) = rest.find(&pat) {
            // A whole label name: at the start or after a comma.
            if i == 0 || rest.as_bytes()[i - 1] == b',' {
                let v = &rest[i + pat.len()..];
                return v.split('"').next().unwrap_or("");
            }
            rest = &rest[i + pat.len()..];
        }
        ""
    }
}

/// Every sample of metric `name` (exactly that name).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            Some(Sample {
                name: n.to_string(),
                labels: labels.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of a counter's (or gauge's) samples that match `keep`.
pub fn sum(text: &str, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
    samples(text, name)
        .iter()
        .filter(|s| keep(s))
        .map(|s| s.value)
        .sum()
}

/// A cumulative histogram: (upper bound, count) by bound, summed over the
/// series that matched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The `<name>_bucket` series of `text` that match `keep`, summed by bound.
    pub fn read(text: &str, name: &str, keep: impl Fn(&Sample) -> bool) -> Histogram {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in samples(text, &format!("{name}_bucket")) {
            if !keep(&s) {
                continue;
            }
            let bound = match s.label("le") {
                "+Inf" => f64::INFINITY,
                le => match le.parse() {
                    Ok(b) => b,
                    Err(_) => continue,
                },
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, c)) => *c += s.value,
                None => buckets.push((bound, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    /// What was observed between `before` and `self` (a later scrape).
    pub fn since(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(b, c)| {
                    let was = before
                        .buckets
                        .iter()
                        .find(|(bb, _)| bb == b)
                        .map_or(0.0, |(_, c)| *c);
                    (*b, c - was)
                })
                .collect(),
        }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The q-quantile, interpolated linearly within its bucket; `None`
    /// without observations; infinite when it falls in the `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(f64::INFINITY);
                }
                let inside = count - below;
                let frac = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * frac);
            }
            lower = bound;
            below = count;
        }
        None
    }
}

/// Seconds as `12.3 ms` (or `-` / `> last bucket`).
pub fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() => format!("{:.1} ms", s * 1000.0),
        Some(_) => "> last bucket".into(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP x_seconds a latency
x_seconds_bucket{q="a",le="0.1"} 2
x_seconds_bucket{q="a",le="0.2"} 6
x_seconds_bucket{q="a",le="+Inf"} 10
x_seconds_bucket{q="b",le="0.1"} 1
x_seconds_bucket{q="b",le="0.2"} 1
x_seconds_bucket{q="b",le="+Inf"} 1
x_seconds_count{q="a"} 10
reqs_total{verb="POST",resource="payments"} 7
reqs_total{verb="APPLY",resource="payments",subresource="status"} 3
"#;

    #[test]
    fn samples_by_exact_name_with_their_labels() {
        let s = samples(TEXT, "reqs_total");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].label("subresource"), "status");
        assert_eq!(s[1].label("resource"), "payments");
        assert_eq!(s[0].label("subresource"), "");
        assert_eq!(sum(TEXT, "reqs_total", |_| true), 10.0);
        assert!(
            samples(TEXT, "x_seconds").is_empty(),
            "a prefix is not the name"
        );
    }

    #[test]
    fn quantiles_interpolate_within_buckets_and_sum_series() {
        let a = Histogram::read(TEXT, "x_seconds", |s| s.label("q") == "a");
        assert_eq!(a.count(), 10.0);
        // rank 5 of 10: 3 of the 4 between 0.1 and 0.2.
        assert!((a.quantile(0.5).unwrap() - 0.175).abs() < 1e-9);
        assert_eq!(a.quantile(0.95), Some(f64::INFINITY));
        let both = Histogram::read(TEXT, "x_seconds", |_| true);
        assert_eq!(both.count(), 11.0);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_delta_between_scrapes_is_what_happened_in_between() {
        let before = Histogram::read(TEXT, "x_seconds", |s| s.label("q") == "a");
        let later = TEXT.replace("le=\"0.1\"} 2", "le=\"0.1\"} 4").replace(
            "x_seconds_bucket{q=\"a\",le=\"0.2\"} 6",
            "x_seconds_bucket{q=\"a\",le=\"0.2\"} 8",
        );
        let later = later.replace(
            "x_seconds_bucket{q=\"a\",le=\"+Inf\"} 10",
            "x_seconds_bucket{q=\"a\",le=\"+Inf\"} 12",
        );
        let after = Histogram::read(&later, "x_seconds", |s| s.label("q") == "a");
        let d = after.since(&before);
        assert_eq!(d.count(), 2.0);
        assert!(d.quantile(1.0).unwrap() <= 0.1);
    }
}
