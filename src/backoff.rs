//! Exponential backoff with jitter: how long a failed node or a failed reconcile waits
//! before it is tried again.

use std::time::Duration;

use backon::BackoffBuilder;

/// The delay after `failures` failures in a row: about 1 s, 2 s, 4 s, ... up to 5 min,
/// each with jitter so that many objects failing together do not retry together.
pub fn retry_delay(failures: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(usize::try_from(failures.saturating_sub(1)).unwrap_or(0))
        .unwrap_or(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        let first = retry_delay(1);
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        let fifth = retry_delay(5);
        assert!(
            fifth >= Duration::from_secs(16) && fifth <= Duration::from_secs(32),
            "{fifth:?}"
        );
        assert!(retry_delay(40) <= Duration::from_secs(600));
    }
}
