//! Mars's timeout formulas (§6.1, §6.2) and the dynamic-timeout estimator (§6.3).

use std::time::{Duration, Instant};

use crate::config::Timing;

/// Whole-task timeout (§6.1): `(rw + 5 s) × tries`, long polling `lp + 5 s`, capped by the
/// task's own total timeout.
pub(crate) fn task_total(
    server_cost: Option<Duration>,
    retries: u32,
    long_polling: Option<Duration>,
    total: Option<Duration>,
) -> Duration {
    let rw = match server_cost {
        Some(c) if !c.is_zero() => c + Duration::from_millis(15_000),
        _ => Duration::from_millis(15_000),
    };
    let mut timeout = (rw + Duration::from_millis(5_000)) * (retries + 1);
    if let Some(lp) = long_polling {
        timeout = lp + Duration::from_millis(5_000);
    }
    match total {
        Some(t) if !t.is_zero() && t < timeout => t,
        _ => timeout,
    }
}

/// The per-attempt deadlines of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttemptTimeouts {
    pub(crate) first_packet: Duration,
    pub(crate) read_write: Duration,
    pub(crate) packet_to_packet: Duration,
}

/// [`attempt`] with a memory of its answers for the last inputs but the queue position, one
/// per position up to the cap.
///
/// Design: a dispatch pass computes the timeouts of many tasks in a row, and the formula's
/// inputs are usually the same from one task to the next (same network, same body length,
/// no server cost) but for the running tasks ahead, which count up to the cap in every pass
/// that starts with few running; repeating a remembered answer costs a comparison, the
/// formula a few dozen instructions of duration arithmetic.
#[derive(Debug, Default)]
pub(crate) struct AttemptMemo {
    /// The inputs the table answers for, with `queued_ahead` 0.
    key: Option<AttemptInputs>,
    /// The answer for each queue position up to [`MAX_QUEUED_AHEAD`], once computed.
    by_queue: [Option<AttemptTimeouts>; MAX_QUEUED_AHEAD + 1],
}

/// The arguments of [`attempt`] besides the configuration (which does not change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttemptInputs {
    pub(crate) mobile: bool,
    pub(crate) server_cost: Option<Duration>,
    pub(crate) long_polling: Option<Duration>,
    pub(crate) send_len: usize,
    pub(crate) queued_ahead: usize,
    pub(crate) excellent: bool,
}

impl AttemptMemo {
    /// [`attempt`] for `inputs`.
    pub(crate) fn attempt(
        &mut self,
        timing: &Timing,
        mut inputs: AttemptInputs,
    ) -> AttemptTimeouts {
        // The formula caps it: tasks that differ only beyond the cap get the same answer.
        let n = inputs.queued_ahead.min(MAX_QUEUED_AHEAD);
        inputs.queued_ahead = 0;
        if self.key != Some(inputs) {
            self.key = Some(inputs);
            self.by_queue = [None; MAX_QUEUED_AHEAD + 1];
        }
        if let Some(t) = self.by_queue[n] {
            return t;
        }
        let t = AttemptInputs {
            queued_ahead: n,
            ..inputs
        }
        .timeouts(timing);
        self.by_queue[n] = Some(t);
        t
    }
}

impl AttemptInputs {
    /// [`attempt`] for these inputs.
    pub(crate) fn timeouts(self, timing: &Timing) -> AttemptTimeouts {
        attempt(
            timing,
            self.mobile,
            self.server_cost,
            self.long_polling,
            self.send_len,
            self.queued_ahead,
            self.excellent,
        )
    }
}

/// Running tasks past this many add no queueing delay to the first-packet timeout.
pub(crate) const MAX_QUEUED_AHEAD: usize = 5;

/// Per-attempt timeouts (§6.2) with integer millisecond arithmetic as Mars does.
///
/// `send_len` is the request body's length (Mars's `bufreq` length, not the frame) and
/// `queued_ahead` the number of tasks already running on the link (capped at 5).
///
/// Design: the "excellent" shortcut applies to tasks *without* a server cost (Mars requires
/// the cost to be exactly 0 and so never applies it to default tasks, §18.6). A long-polling
/// task gets its polling time as first-packet budget: the server is expected to hold it.
pub(crate) fn attempt(
    timing: &Timing,
    mobile: bool,
    server_cost: Option<Duration>,
    long_polling: Option<Duration>,
    send_len: usize,
    queued_ahead: usize,
    excellent: bool,
) -> AttemptTimeouts {
    let pick = |pair: (Duration, Duration)| if mobile { pair.1 } else { pair.0 };
    let ms = |d: Duration| d.as_millis() as u64;
    let rate = if mobile {
        timing.min_rate.1
    } else {
        timing.min_rate.0
    }
    .max(1);
    let n = queued_ahead.min(MAX_QUEUED_AHEAD) as u64;
    let delay = ms(pick(timing.queue_delay));
    let len = send_len as u64;
    let cost = server_cost.filter(|c| !c.is_zero());
    let first = if let Some(lp) = long_polling {
        ms(lp) + 1000 * len / rate + n * delay
    } else if excellent && cost.is_none() {
        ms(pick(timing.first_packet_excellent)) + n * delay
    } else if let Some(c) = cost {
        ms(c) + 1000 * len / rate + n * delay
    } else {
        (ms(pick(timing.first_packet)) + 1000 * len / rate).min(ms(pick(timing.first_packet_max)))
            + n * delay
    };
    AttemptTimeouts {
        first_packet: Duration::from_millis(first),
        read_write: Duration::from_millis(first + 1000 * MAX_RECV_LEN / rate),
        packet_to_packet: pick(timing.packet_to_packet),
    }
}

/// Mars's `kMaxRecvLen`: the read/write budget covers this many bytes at the minimum rate.
const MAX_RECV_LEN: u64 = 65_536;

/// The dynamic-timeout estimator's verdict on the network (§6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetQuality {
    Evaluating,
    Excellent,
    Bad,
}

/// Learns from finished exchanges whether the network is excellent (§6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Estimator {
    state: NetQuality,
    good_count: u32,
    last_big_good: Option<Instant>,
    ring: [bool; RING],
    /// How many of `ring` are true.
    ///
    /// Design: kept as the ring changes rather than counted at each record, which every task
    /// end pays.
    ones: u8,
    cursor: usize,
    /// When the current 5-minute window ends (its start plus [`WINDOW`]).
    window_end: Option<Instant>,
}

impl Estimator {
    pub(crate) fn new() -> Self {
        Estimator {
            state: NetQuality::Evaluating,
            good_count: 0,
            last_big_good: None,
            ring: [true; RING],
            ones: RING as u8,
            cursor: RING - 1,
            window_end: None,
        }
    }

    pub(crate) fn quality(&self) -> NetQuality {
        self.state
    }

    /// Network change: start over.
    pub(crate) fn reset(&mut self) {
        *self = Estimator::new();
    }

    /// Records a finished exchange: `size` request + response bytes, `cost` from send start;
    /// `None` cost records a failure.
    ///
    /// Design: every task end records, and on a busy healthy link nearly every record is a
    /// small, fast exchange into a ring of good ones, within the window, that changes
    /// nothing but the cursor and the good count. That case is told apart first, in a few
    /// comparisons, and does just that ([`record_any`](Self::record_any) does the same in
    /// full; a test compares the two).
    #[inline]
    pub(crate) fn record(
        &mut self,
        now: Instant,
        mobile: bool,
        size: usize,
        cost: Option<Duration>,
    ) {
        if usize::from(self.ones) == RING
            && self.window_end.is_some_and(|end| now <= end)
            && classify(mobile, size, cost) == Class::Meet
        {
            // A meet that fills an already full ring: the only state change it can cause
            // is into Excellent (with a recent big meet) or out of it (with no good count).
            let plain = match self.state {
                NetQuality::Evaluating => self.last_big_good.is_none(),
                NetQuality::Excellent => self.good_count > 0,
                NetQuality::Bad => false,
            };
            if plain {
                self.advance();
                if self.state == NetQuality::Evaluating {
                    self.good_count += 1;
                }
                return;
            }
        }
        self.record_any(now, mobile, size, cost);
    }

    /// Whether a meet (an exchange under [`MEET_SIZE`] bytes, `cost` after its send start)
    /// recorded `now` would take [`record`](Self::record)'s shortcut. Then so would any
    /// number of such meets after it at the same instant, which only move the ring's cursor
    /// and add to the good count: [`record_meets`](Self::record_meets) records them at once.
    #[inline]
    pub(crate) fn meets_take_shortcut(&self, now: Instant, mobile: bool, cost: Duration) -> bool {
        usize::from(self.ones) == RING
            && self.window_end.is_some_and(|end| now <= end)
            && classify(mobile, 0, Some(cost)) == Class::Meet
            && match self.state {
                NetQuality::Evaluating => self.last_big_good.is_none(),
                NetQuality::Excellent => self.good_count > 0,
                NetQuality::Bad => false,
            }
    }

    /// Records `n` meets for which [`meets_take_shortcut`](Self::meets_take_shortcut)
    /// held: what `n` calls of [`record`](Self::record) for them do.
    ///
    /// Design: a run of responses in one read (the lane's) ends many tasks at one instant
    /// after one send, so their records differ only in size; one call for all of them costs
    /// what one record costs.
    #[inline]
    pub(crate) fn record_meets(&mut self, n: usize) {
        self.cursor = (self.cursor + n % RING) % RING;
        if self.state == NetQuality::Evaluating {
            self.good_count = self.good_count.saturating_add(n as u32);
        }
    }

    /// [`record`](Self::record), every case.
    fn record_any(&mut self, now: Instant, mobile: bool, size: usize, cost: Option<Duration>) {
        if self.window_end.is_none_or(|end| now > end) {
            self.window_end = now.checked_add(WINDOW);
            self.cursor = RING - 1;
            let good = self.state != NetQuality::Bad;
            self.ring = [good; RING];
            self.ones = if good { RING as u8 } else { 0 };
        }
        self.advance();
        let class = classify(mobile, size, cost);
        match class {
            Class::Meet | Class::MidMeet => {
                if class == Class::MidMeet && self.state == NetQuality::Evaluating {
                    self.last_big_good = Some(now);
                }
                if self.state == NetQuality::Evaluating {
                    self.good_count += 1;
                }
                self.set_ring(true);
            }
            Class::Normal => {
                if self.state == NetQuality::Evaluating {
                    self.good_count = 0;
                    self.last_big_good = None;
                }
                self.set_ring(true);
            }
            Class::Failed => {
                self.good_count = 0;
                self.last_big_good = None;
                self.set_ring(false);
            }
        }
        let ones = self.ones;
        match self.state {
            NetQuality::Evaluating => {
                let recent_big = self
                    .last_big_good
                    .is_some_and(|t| now.saturating_duration_since(t) <= WINDOW);
                if self.good_count >= 10 && recent_big {
                    self.state = NetQuality::Excellent;
                } else if ones <= 6 {
                    self.state = NetQuality::Bad;
                    self.window_end = now.checked_add(WINDOW);
                }
            }
            NetQuality::Excellent => {
                if self.good_count == 0 && self.last_big_good.is_none() {
                    self.state = NetQuality::Evaluating;
                }
            }
            NetQuality::Bad => {
                if ones > 6 {
                    self.state = NetQuality::Evaluating;
                    self.window_end = now.checked_add(WINDOW);
                }
            }
        }
    }
}

impl Estimator {
    /// Moves the cursor to the ring's next entry.
    #[inline]
    fn advance(&mut self) {
        self.cursor = if self.cursor >= RING - 1 {
            0
        } else {
            self.cursor + 1
        };
    }

    /// Sets the ring's entry at the cursor.
    #[inline]
    fn set_ring(&mut self, good: bool) {
        let place = &mut self.ring[self.cursor];
        if *place != good {
            *place = good;
            if good {
                self.ones += 1;
            } else {
                self.ones -= 1;
            }
        }
    }
}

/// Exchanges below this many bytes (request and response) are small: fast ones are meets.
pub(crate) const MEET_SIZE: usize = 3_072;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Small and fast.
    Meet,
    /// Mid-size or bigger and fast (Mars's MID/BIG/BIGGER_MEET).
    MidMeet,
    Normal,
    Failed,
}

fn classify(mobile: bool, size: usize, cost: Option<Duration>) -> Class {
    let Some(cost) = cost else {
        return Class::Failed;
    };
    // `cost` at most `ms` whole milliseconds (Mars compares integer milliseconds), without
    // dividing.
    let within = |ms: u64| cost < Duration::from_millis(ms + 1);
    let (small, mid, big, bigger) = if mobile {
        (1_000, 3_000, 5_000, 7_000)
    } else {
        (500, 2_000, 4_000, 6_000)
    };
    if size < MEET_SIZE && within(small) {
        Class::Meet
    } else if (size <= 10_240 && within(mid))
        || (size > 10_240 && size <= 30_720 && within(big))
        || (size > 30_720 && within(bigger))
    {
        Class::MidMeet
    } else {
        Class::Normal
    }
}

const WINDOW: Duration = Duration::from_millis(300_000);

/// Exchanges the ring remembers.
const RING: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    /// The next value of the tests' xorshift sequence (`x` is the state).
    fn next(x: &mut u64) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
    }

    /// The memo answers exactly what the formula answers, whatever the order of the calls
    /// (repeats, changes of one input, queue positions on both sides of the cap).
    #[test]
    fn the_attempt_memo_answers_what_the_formula_answers() {
        let timing = Timing::default();
        let mut memo = AttemptMemo::default();
        let costs = [None, Some(Duration::ZERO), Some(Duration::from_secs(3))];
        let polls = [None, Some(Duration::from_secs(60))];
        let mut calls = 0;
        for round in 0..2 {
            for mobile in [false, true] {
                for &server_cost in &costs {
                    for &long_polling in &polls {
                        for send_len in [0, 100, 100, 200_000] {
                            for queued_ahead in [0, 4, 5, 6, 9, 9, 3] {
                                for excellent in [false, true] {
                                    let i = AttemptInputs {
                                        mobile,
                                        server_cost,
                                        long_polling,
                                        send_len,
                                        queued_ahead,
                                        excellent,
                                    };
                                    assert_eq!(
                                        memo.attempt(&timing, i),
                                        i.timeouts(&timing),
                                        "{i:?} (round {round})"
                                    );
                                    calls += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(calls > 1000);
        // Queue positions in a row for the same other inputs (what a dispatch pass asks),
        // each remembered answer asked again, across the cap and back.
        for excellent in [false, true] {
            for send_len in [100, 200_000, 100] {
                for queued_ahead in [0, 1, 2, 3, 4, 5, 6, 9, 3, 0, 5, 7, 1] {
                    let i = AttemptInputs {
                        mobile: false,
                        server_cost: None,
                        long_polling: None,
                        send_len,
                        queued_ahead,
                        excellent,
                    };
                    assert_eq!(memo.attempt(&timing, i), i.timeouts(&timing), "{i:?}");
                }
            }
        }
    }

    /// `classify` compares durations where Mars compares whole milliseconds: the same
    /// classes on and around every threshold.
    #[test]
    fn classify_matches_whole_millisecond_thresholds() {
        fn by_millis(mobile: bool, size: usize, cost: Duration) -> Class {
            let c = cost.as_millis() as u64;
            let (small, mid, big, bigger) = if mobile {
                (1_000, 3_000, 5_000, 7_000)
            } else {
                (500, 2_000, 4_000, 6_000)
            };
            if size < 3_072 && c <= small {
                Class::Meet
            } else if (size <= 10_240 && c <= mid)
                || (size > 10_240 && size <= 30_720 && c <= big)
                || (size > 30_720 && c <= bigger)
            {
                Class::MidMeet
            } else {
                Class::Normal
            }
        }
        for mobile in [false, true] {
            for size in [0, 3_071, 3_072, 10_240, 10_241, 30_720, 30_721] {
                for ms in [
                    0, 499, 500, 501, 1_000, 1_001, 2_000, 3_000, 4_000, 5_001, 7_000,
                ] {
                    for extra_ns in [0, 1, 999_999] {
                        let cost = Duration::from_millis(ms) + Duration::from_nanos(extra_ns);
                        assert_eq!(
                            classify(mobile, size, Some(cost)),
                            by_millis(mobile, size, cost),
                            "{mobile} {size} {cost:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(classify(false, 0, None), Class::Failed);
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn task_total_matches_the_spec_examples() {
        assert_eq!(task_total(None, 1, None, None), ms(40_000));
        assert_eq!(task_total(None, 0, None, None), ms(20_000));
        assert_eq!(task_total(None, 2, None, None), ms(60_000));
        assert_eq!(task_total(Some(ms(5_000)), 1, None, None), ms(50_000));
        assert_eq!(task_total(None, 1, None, Some(ms(5_000))), ms(5_000));
        assert_eq!(task_total(None, 1, Some(ms(30_000)), None), ms(35_000));
    }

    #[test]
    fn attempt_timeouts_match_the_spec_examples() {
        let t = Timing::default();
        let a = attempt(&t, false, None, None, 1024, 0, false);
        assert_eq!((a.first_packet, a.read_write), (ms(12_083), ms(17_416)));
        let a = attempt(&t, false, None, None, 100 * 1024, 0, false);
        assert_eq!(a.first_packet, ms(20_333));
        let a = attempt(&t, false, None, None, 120 * 1024, 0, false);
        assert_eq!(a.first_packet, ms(22_000));
        let a = attempt(&t, true, None, None, 1024, 0, false);
        assert_eq!((a.first_packet, a.read_write), (ms(15_250), ms(31_250)));
        let a = attempt(&t, false, None, None, 1024, 2, false);
        assert_eq!(a.first_packet, ms(15_083));
        let a = attempt(&t, false, None, None, 0, 9, false);
        assert_eq!(a.first_packet, ms(12_000 + 5 * 1_500));
        let a = attempt(&t, false, Some(ms(30_000)), None, 0, 0, false);
        assert_eq!(a.first_packet, ms(30_000));
        let a = attempt(&t, false, None, None, 0, 1, true);
        assert_eq!(a.first_packet, ms(8_500));
        assert_eq!(a.packet_to_packet, ms(8_000));
    }

    #[test]
    fn estimator_needs_ten_small_goods_and_a_recent_big_one() {
        let t0 = crate::tests::epoch::epoch();
        let mut e = Estimator::new();
        for i in 0..12 {
            e.record(t0 + ms(i), false, 100, Some(ms(100)));
        }
        assert_eq!(
            e.quality(),
            NetQuality::Evaluating,
            "no mid-size exchange yet"
        );
        e.record(t0 + ms(20), false, 5_000, Some(ms(1_000)));
        assert_eq!(e.quality(), NetQuality::Excellent);
        e.record(t0 + ms(30), false, 100, None);
        assert_eq!(e.quality(), NetQuality::Evaluating);
        for i in 0..4 {
            e.record(t0 + ms(40 + i), false, 100, None);
        }
        assert_eq!(e.quality(), NetQuality::Bad);
        e.reset();
        assert_eq!(e.quality(), NetQuality::Evaluating);
    }

    /// The count of good entries kept beside the ring is the ring's, through every state
    /// and window restart a pseudo-random run of exchanges brings.
    #[test]
    fn the_estimators_good_count_follows_its_ring() {
        let t0 = crate::tests::epoch::epoch();
        let mut e = Estimator::new();
        let mut x = 0x2545_f491_u64;
        let mut now = t0;
        let mut states = std::collections::HashSet::new();
        for _ in 0..5_000 {
            next(&mut x);
            now += ms(x % 7_000);
            let cost = (x % 5 != 0).then(|| ms((x >> 8) % 3_000));
            e.record(now, x % 3 == 0, ((x >> 20) % 40_000) as usize, cost);
            let ones = e.ring.iter().filter(|b| **b).count();
            assert_eq!(usize::from(e.ones), ones);
            states.insert(format!("{:?}", e.quality()));
        }
        assert_eq!(states.len(), 3, "the run visits every state: {states:?}");
    }

    /// `record` (with its shortcut for a meet into a full ring) leaves the estimator
    /// exactly as `record_any` does, over runs mostly of meets with every other kind of
    /// exchange, window restarts and network kinds mixed in.
    #[test]
    fn the_shortcut_records_what_the_full_record_does() {
        let t0 = crate::tests::epoch::epoch();
        let (mut fast, mut full) = (Estimator::new(), Estimator::new());
        let mut x = 0x9e37_79b9_u64;
        let mut now = t0;
        let mut shortcuts = std::collections::HashMap::new();
        let mut states = std::collections::HashSet::new();
        for _ in 0..20_000 {
            next(&mut x);
            now += if x % 500 == 0 {
                ms(310_000)
            } else {
                ms(x % 300)
            };
            let size = match x % 16 {
                0 => 5_000,
                1 => 40_000,
                _ => (x >> 10) as usize % 3_100,
            };
            let cost = match (x >> 4) % 16 {
                0 => None,
                1 => Some(ms(2_500)),
                _ => Some(ms((x >> 16) % 1_100)),
            };
            let mobile = (x >> 30) % 8 == 0;
            let before = fast.clone();
            fast.record(now, mobile, size, cost);
            full.record_any(now, mobile, size, cost);
            assert_eq!(
                fast, full,
                "after {size} bytes in {cost:?} (mobile: {mobile})"
            );
            if before.ones == 10 && classify(mobile, size, cost) == Class::Meet {
                *shortcuts
                    .entry(format!("{:?}", before.quality()))
                    .or_insert(0) += 1;
            }
            states.insert(format!("{:?}", full.quality()));
        }
        // Meets into a full ring, by state: the shortcut's cases are all there.
        assert!(shortcuts.get("Evaluating") > Some(&300), "{shortcuts:?}");
        assert!(shortcuts.get("Excellent") > Some(&1_000), "{shortcuts:?}");
        assert_eq!(states.len(), 3, "every state: {states:?}");
    }

    /// Meets recorded at once ([`Estimator::record_meets`]) leave the estimator as the same
    /// meets recorded one by one, from every state the shortcut may be asked in, and the
    /// shortcut is promised only where `record` takes it.
    #[test]
    fn meets_recorded_at_once_are_recorded_one_by_one() {
        let t0 = crate::tests::epoch::epoch();
        let mut e = Estimator::new();
        let mut x = 0x2545_f491_u64;
        let mut now = t0;
        let mut taken = std::collections::HashMap::new();
        for _ in 0..20_000 {
            next(&mut x);
            now += if x % 300 == 0 {
                ms(310_000)
            } else {
                ms(x % 50)
            };
            let mobile = (x >> 30) % 8 == 0;
            let cost = ms((x >> 16) % 1_200);
            let n = (x >> 40) as usize % 40;
            let sizes: Vec<usize> = (0..n).map(|i| (i * 97 + x as usize) % MEET_SIZE).collect();
            if e.meets_take_shortcut(now, mobile, cost) {
                *taken.entry(format!("{:?}", e.quality())).or_insert(0) += 1;
                let mut one_by_one = e.clone();
                for &size in &sizes {
                    let before = one_by_one.clone();
                    one_by_one.record(now, mobile, size, Some(cost));
                    // Each of them took the shortcut: the cursor moved, nothing else but
                    // the good count.
                    assert_eq!(one_by_one.ring, before.ring);
                    assert_eq!(one_by_one.state, before.state);
                }
                e.record_meets(n);
                assert_eq!(e, one_by_one, "{n} meets in {cost:?}");
            }
            // Every other kind of exchange in between, so every state comes up.
            let size = if x % 5 == 0 { 20_000 } else { 100 };
            let other = match (x >> 8) % 6 {
                0 => None,
                1 => Some(ms(2_500)),
                _ => Some(cost),
            };
            e.record(now, mobile, size, other);
        }
        assert!(taken.get("Evaluating") > Some(&100), "{taken:?}");
        assert!(taken.get("Excellent") > Some(&100), "{taken:?}");
    }
}
