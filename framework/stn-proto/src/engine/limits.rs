//! Anti-avalanche limits (§13): identical-body frequency limit and mobile flow limit.

use std::time::{Duration, Instant};

/// At most this many identical bodies pass (the 106th is refused).
const FREQ_MAX_COUNT: u32 = 105;
/// Records kept.
const FREQ_RECORDS: usize = 30;
/// Cleanup period.
const FREQ_CLEANUP: Duration = Duration::from_millis(3_600_000);
/// Records this busy and this recent survive a cleanup...
const FREQ_KEEP_COUNT: u32 = 75;
const FREQ_KEEP_AGE: Duration = Duration::from_millis(600_000);
/// ...with their count capped at this.
const FREQ_KEEP_CAP: u32 = 99;

/// Mars's frequency limit: Adler-32 of the body, 30 records, 105 allowed.
#[derive(Debug)]
pub(crate) struct FrequencyLimit {
    records: Vec<FreqRecord>,
    last_cleanup: Instant,
}

#[derive(Debug)]
struct FreqRecord {
    hash: u32,
    count: u32,
    last_update: Instant,
}

impl FrequencyLimit {
    pub(crate) fn new(now: Instant) -> Self {
        FrequencyLimit {
            // Grown by the first tasks, not allocated up front for a client that may
            // never send one.
            records: Vec::new(),
            last_cleanup: now,
        }
    }

    /// Counts one request with this body. `Err(ms since the record's previous update)` when
    /// it is refused.
    pub(crate) fn check(&mut self, now: Instant, body: &[u8]) -> Result<(), u64> {
        if now.saturating_duration_since(self.last_cleanup) >= FREQ_CLEANUP {
            self.last_cleanup = now;
            self.records.retain_mut(|r| {
                let keep = r.count >= FREQ_KEEP_COUNT
                    && now.saturating_duration_since(r.last_update) <= FREQ_KEEP_AGE;
                r.count = r.count.min(FREQ_KEEP_CAP);
                keep
            });
        }
        let mut adler = adler2::Adler32::new();
        adler.write_slice(body);
        let hash = adler.checksum();
        if let Some(r) = self.records.iter_mut().find(|r| r.hash == hash) {
            let since = now.saturating_duration_since(r.last_update).as_millis() as u64;
            r.count += 1;
            r.last_update = now;
            return if r.count <= FREQ_MAX_COUNT {
                Ok(())
            } else {
                Err(since)
            };
        }
        let record = FreqRecord {
            hash,
            count: 1,
            last_update: now,
        };
        if self.records.len() < FREQ_RECORDS {
            self.records.push(record);
        } else if let Some(oldest) = self.records.iter_mut().min_by_key(|r| r.last_update) {
            *oldest = record;
        }
        Ok(())
    }
}

/// Bucket capacity: 80 MiB.
const FLOW_CAPACITY: u64 = 83_886_080;
/// Drain per second while active (80 MiB/h) and inactive (20 MiB/h).
const FLOW_DRAIN_ACTIVE: u64 = 23_301;
const FLOW_DRAIN_INACTIVE: u64 = 5_825;
/// Volume clamp when the app becomes inactive: 60 MiB.
const FLOW_INACTIVE_CLAMP: u64 = 62_914_560;

/// Mars's flow limit: a leaky bucket of request bytes, mobile networks only.
#[derive(Debug)]
pub(crate) struct FlowLimit {
    volume: u64,
    last_drain: Instant,
    active: bool,
}

impl FlowLimit {
    pub(crate) fn new(now: Instant) -> Self {
        FlowLimit {
            volume: 0,
            last_drain: now,
            active: true,
        }
    }

    /// Counts `len` request bytes; `Err(())` when the bucket would overflow.
    pub(crate) fn check(&mut self, now: Instant, len: usize) -> Result<(), ()> {
        self.drain(now);
        let len = len as u64;
        if self.volume + len > FLOW_CAPACITY {
            return Err(());
        }
        self.volume += len;
        Ok(())
    }

    /// Empties the bucket (the engine's reset), keeping the app's activity.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.volume = 0;
        self.last_drain = now;
    }

    /// The app's activity changed; becoming inactive clamps the volume to 60 MiB.
    pub(crate) fn set_active(&mut self, now: Instant, active: bool) {
        self.drain(now);
        if self.active && !active {
            self.volume = self.volume.min(FLOW_INACTIVE_CLAMP);
        }
        self.active = active;
    }

    /// Applies the drain in whole seconds.
    fn drain(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last_drain).as_secs();
        if secs == 0 {
            return;
        }
        self.last_drain += Duration::from_secs(secs);
        let rate = if self.active {
            FLOW_DRAIN_ACTIVE
        } else {
            FLOW_DRAIN_INACTIVE
        };
        self.volume = self.volume.saturating_sub(secs.saturating_mul(rate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_106th_identical_body_is_refused() {
        let t0 = crate::tests::epoch::epoch();
        let mut f = FrequencyLimit::new(t0);
        let body = [7u8; 128];
        for i in 0..105 {
            assert_eq!(
                f.check(t0 + Duration::from_millis(i), &body),
                Ok(()),
                "request {i}"
            );
        }
        assert_eq!(f.check(t0 + Duration::from_millis(200), &body), Err(96));
        assert!(f.check(t0 + Duration::from_millis(201), &[1, 2, 3]).is_ok());
    }

    #[test]
    fn cleanup_keeps_busy_recent_records_capped_at_99() {
        let t0 = crate::tests::epoch::epoch();
        let mut f = FrequencyLimit::new(t0);
        let hot = [1u8; 10];
        let cold = [2u8; 10];
        let late = t0 + Duration::from_secs(3_000);
        for _ in 0..110 {
            let _ = f.check(late, &hot);
        }
        for _ in 0..110 {
            let _ = f.check(t0, &cold);
        }
        let after = t0 + FREQ_CLEANUP;
        // hot survives with count 99: 6 more pass (100..=105), the 7th is refused.
        for i in 0..6 {
            assert!(f.check(after, &hot).is_ok(), "hot {i}");
        }
        assert!(f.check(after, &hot).is_err());
        // cold was removed: it starts over.
        assert!(f.check(after, &cold).is_ok());
    }

    #[test]
    fn a_full_table_replaces_the_least_recently_updated_record() {
        let t0 = crate::tests::epoch::epoch();
        let mut f = FrequencyLimit::new(t0);
        for i in 0..30u32 {
            f.check(t0 + Duration::from_millis(u64::from(i)), &i.to_be_bytes())
                .unwrap();
        }
        f.check(t0 + Duration::from_millis(50), b"new").unwrap();
        assert_eq!(f.records.len(), 30);
        assert!(!f.records.iter().any(|r| r.last_update == t0));
    }

    #[test]
    fn eighty_one_mib_requests_overflow_the_bucket() {
        let t0 = crate::tests::epoch::epoch();
        let mut f = FlowLimit::new(t0);
        for i in 0..80 {
            assert_eq!(f.check(t0, 1 << 20), Ok(()), "request {i}");
        }
        assert_eq!(f.check(t0, 1 << 20), Err(()));
        // One hour later the bucket has drained completely.
        assert_eq!(f.check(t0 + Duration::from_secs(3_600), 1 << 20), Ok(()));
    }

    #[test]
    fn becoming_inactive_clamps_to_sixty_mib_and_slows_the_drain() {
        let t0 = crate::tests::epoch::epoch();
        let mut f = FlowLimit::new(t0);
        for _ in 0..75 {
            f.check(t0, 1 << 20).unwrap();
        }
        f.set_active(t0, false);
        assert_eq!(f.volume, FLOW_INACTIVE_CLAMP);
        f.drain(t0 + Duration::from_secs(10));
        assert_eq!(f.volume, FLOW_INACTIVE_CLAMP - 10 * FLOW_DRAIN_INACTIVE);
    }
}
