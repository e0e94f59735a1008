//! When a failed delivery is tried again: the Standard Webhooks example schedule with ±20 %
//! jitter, bounded by the 3-day life of an event (DESIGN.md section 10). Pure functions of
//! the attempt count and the clock, with the randomness passed in, so the dispatcher and its
//! tests agree on every instant.
//!
//! Decision: when the next step would land after the deadline, one last attempt is scheduled
//! exactly at the deadline instead (the schedule adds up to about 75.6 h, so otherwise the
//! last 20-odd hours of the promised 3 days would go unused); after that the event is dead.

use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};

/// How long after its creation an event is still attempted.
pub const MAX_EVENT_AGE: Duration = Duration::days(3);

/// Delay before each retry, after the immediate first attempt; the last repeats.
pub const RETRY_DELAYS: [Duration; 9] = [
    Duration::seconds(5),
    Duration::minutes(5),
    Duration::minutes(30),
    Duration::hours(2),
    Duration::hours(5),
    Duration::hours(10),
    Duration::hours(14),
    Duration::hours(20),
    Duration::hours(24),
];

/// Largest share of a delay that jitter adds or removes, so receivers recovering from an
/// outage are not hit by every event's retry in the same second.
pub const JITTER_SHARE: f64 = 0.2;

/// The last instant an event may be attempted.
pub fn deadline(created_at: OffsetDateTime) -> OffsetDateTime {
    created_at.saturating_add(MAX_EVENT_AGE)
}

/// The delay before the attempt following attempt number `attempts_made` (1-based), without
/// jitter; zero before the first attempt.
pub fn base_delay(attempts_made: u32) -> Duration {
    match attempts_made {
        0 => Duration::ZERO,
        n => {
            let i = usize::try_from(n - 1).unwrap_or(usize::MAX);
            RETRY_DELAYS[i.min(RETRY_DELAYS.len() - 1)]
        }
    }
}

/// A jitter value for [`next_attempt_at`], uniform in [-1, 1].
pub fn jitter(rng: &mut impl rand::Rng) -> f64 {
    rng.random_range(-1.0..=1.0)
}

/// When to attempt an event again after `attempts_made` attempts, the last of which ended at
/// `now`; `None` when the event is dead (`now` at or past `created_at` + [`MAX_EVENT_AGE`]).
/// `jitter` in [-1, 1] scales the delay by 1 ± [`JITTER_SHARE`] (clamped; NaN counts as 0).
/// With no attempt made yet, the answer is now (never before `created_at`).
pub fn next_attempt_at(
    attempts_made: u32,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
    jitter: f64,
) -> Option<OffsetDateTime> {
    let deadline = deadline(created_at);
    if now >= deadline {
        return None;
    }
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(-1.0, 1.0)
    };
    let delay = base_delay(attempts_made) * (1.0 + JITTER_SHARE * jitter);
    let next = now.max(created_at).saturating_add(delay);
    Some(next.min(deadline))
}

/// `scheduled` pushed back to honour a receiver's `Retry-After` (counted from `now`), never
/// earlier than it was and never past the event's deadline.
pub fn honour_retry_after(
    scheduled: OffsetDateTime,
    retry_after: Option<StdDuration>,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let Some(wait) = retry_after else {
        return scheduled;
    };
    let wait = Duration::try_from(wait).unwrap_or(MAX_EVENT_AGE);
    let asked = now.saturating_add(wait).min(deadline(created_at));
    scheduled.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng as _;
    use time::macros::datetime;

    const CREATED: OffsetDateTime = datetime!(2026-11-24 04:31:05 UTC);

    #[test]
    fn the_standard_webhooks_schedule_without_jitter() {
        let mut now = CREATED;
        let mut attempts = 0;
        let mut times = Vec::new();
        while let Some(next) = next_attempt_at(attempts, CREATED, now, 0.0) {
            times.push(next - CREATED);
            now = next;
            attempts += 1;
        }
        let h = Duration::hours;
        let expected = [
            Duration::ZERO,
            Duration::seconds(5),
            Duration::seconds(305),
            Duration::seconds(2105),
            Duration::seconds(2105) + h(2),
            Duration::seconds(2105) + h(7),
            Duration::seconds(2105) + h(17),
            Duration::seconds(2105) + h(31),
            Duration::seconds(2105) + h(51),
            // 75 h 35 m 05 s would be past the 3 days: the last attempt is at the deadline.
            h(72),
        ];
        assert_eq!(times, expected);
        assert_eq!(attempts, 10, "ten attempts, then dead");
    }

    #[test]
    fn jitter_is_plus_or_minus_a_fifth() {
        let at = |j| next_attempt_at(4, CREATED, CREATED, j).unwrap() - CREATED;
        assert_eq!(at(0.0), Duration::hours(2));
        assert_eq!(at(1.0), Duration::minutes(144));
        assert_eq!(at(-1.0), Duration::minutes(96));
        assert_eq!(at(7.0), at(1.0), "clamped");
        assert_eq!(at(f64::NAN), at(0.0));
        assert_eq!(at(f64::NEG_INFINITY), at(-1.0));
    }

    #[test]
    fn past_the_deadline_is_dead_and_the_delay_stays_at_a_day() {
        assert_eq!(base_delay(9), Duration::hours(24));
        assert_eq!(base_delay(u32::MAX), Duration::hours(24));
        let end = deadline(CREATED);
        assert_eq!(next_attempt_at(3, CREATED, end, 0.0), None);
        assert_eq!(
            next_attempt_at(3, CREATED, end + Duration::seconds(1), 0.0),
            None
        );
        assert_eq!(
            next_attempt_at(1, CREATED, end - Duration::seconds(1), 0.0),
            Some(end),
            "one last attempt at the deadline"
        );
    }

    #[test]
    fn a_first_attempt_is_due_at_once_but_not_before_creation() {
        let early = CREATED - Duration::minutes(1);
        assert_eq!(next_attempt_at(0, CREATED, early, 0.5), Some(CREATED));
        let later = CREATED + Duration::minutes(1);
        assert_eq!(next_attempt_at(0, CREATED, later, 0.5), Some(later));
    }

    #[test]
    fn retry_after_only_postpones_and_stops_at_the_deadline() {
        let scheduled = CREATED + Duration::minutes(5);
        let secs = StdDuration::from_secs;
        assert_eq!(
            honour_retry_after(scheduled, None, CREATED, CREATED),
            scheduled
        );
        assert_eq!(
            honour_retry_after(scheduled, Some(secs(10)), CREATED, CREATED),
            scheduled,
            "never earlier"
        );
        assert_eq!(
            honour_retry_after(scheduled, Some(secs(3600)), CREATED, CREATED),
            CREATED + Duration::hours(1)
        );
        assert_eq!(
            honour_retry_after(scheduled, Some(secs(u64::MAX)), CREATED, CREATED),
            deadline(CREATED)
        );
    }

    #[test]
    fn jitter_from_a_seeded_rng_is_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let j = jitter(&mut rng);
            assert!((-1.0..=1.0).contains(&j), "{j}");
        }
    }

    fn instant() -> impl Strategy<Value = OffsetDateTime> {
        // 2020-01-01 to about 2040, to the second.
        (1_577_836_800i64..2_208_988_800).prop_map(|s| {
            OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        })
    }

    proptest! {
        #[test]
        fn monotone_in_attempts(
            attempts in 0u32..40,
            created in instant(),
            after in 0i64..(4 * 86_400),
            jitter in -1.0f64..=1.0,
        ) {
            let now = created + Duration::seconds(after);
            let this = next_attempt_at(attempts, created, now, jitter);
            let next = next_attempt_at(attempts + 1, created, now, jitter);
            match (this, next) {
                (Some(a), Some(b)) => prop_assert!(a <= b),
                (None, None) => {}
                other => prop_assert!(false, "dead for one count only: {other:?}"),
            }
        }

        #[test]
        fn within_jitter_bounds_and_never_past_the_deadline(
            attempts in 1u32..40,
            created in instant(),
            after in 0i64..(4 * 86_400),
            jitter in proptest::num::f64::ANY,
        ) {
            let now = created + Duration::seconds(after);
            let end = deadline(created);
            match next_attempt_at(attempts, created, now, jitter) {
                None => prop_assert!(now >= end),
                Some(at) => {
                    prop_assert!(now < end);
                    prop_assert!(at <= end);
                    prop_assert!(at > now);
                    let base = base_delay(attempts);
                    let delay = at - now;
                    if at < end {
                        prop_assert!(delay >= base * (1.0 - JITTER_SHARE) - Duration::MILLISECOND);
                        prop_assert!(delay <= base * (1.0 + JITTER_SHARE) + Duration::MILLISECOND);
                    } else {
                        prop_assert!(delay <= base * (1.0 + JITTER_SHARE) + Duration::MILLISECOND);
                    }
                }
            }
        }

        #[test]
        fn retry_after_stays_between_the_schedule_and_the_deadline(
            attempts in 1u32..40,
            created in instant(),
            after in 0i64..(3 * 86_400),
            wait in 0u64..(10 * 86_400),
        ) {
            let now = created + Duration::seconds(after);
            if let Some(at) = next_attempt_at(attempts, created, now, 0.0) {
                let pushed = honour_retry_after(at, Some(StdDuration::from_secs(wait)), created, now);
                prop_assert!(pushed >= at);
                prop_assert!(pushed <= deadline(created));
            }
        }
    }
}
