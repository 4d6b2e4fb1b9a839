//! Times as status holds them, and how long a finished payment is kept.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A `metav1.Time` as it is stored: whole seconds (that is how it is
/// written). Every time the controller decides is cut to the second, or a
/// status read back would never equal the one decided, and each reconcile
/// would write it again.
pub fn to_time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn ms_to_time(ms: i64) -> Time {
    to_time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn system_to_time(t: SystemTime) -> Option<Time> {
    Timestamp::try_from(t).ok().map(to_time)
}

/// How long a payment that ended at `ended` has left before `ttl` runs out
/// (zero: it has); `None` when finished payments are kept (no TTL).
pub fn ttl_left(ended: Timestamp, ttl: Option<Duration>, now: Timestamp) -> Option<Duration> {
    let ttl_ms = i64::try_from(ttl?.as_millis()).unwrap_or(i64::MAX);
    let left_ms = ended.as_millisecond().saturating_add(ttl_ms) - now.as_millisecond();
    Some(Duration::from_millis(left_ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_counts_from_the_end_and_stops_at_zero() {
        let ended = Timestamp::from_second(1_800_000_000).unwrap();
        let later = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let ttl = Some(Duration::from_secs(60));
        assert_eq!(
            ttl_left(ended, ttl, later(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(ttl_left(ended, ttl, later(61)), Some(Duration::ZERO));
        assert_eq!(ttl_left(ended, None, later(61)), None, "no TTL: kept");
    }
}
