use super::*;

/// Starts `clock` for a node now, and lets the node go (so that the clock can start again).
fn started(clock: &NodeClock) -> LocalTime {
    match clock.start(Instant::now()) {
        Some((origin, _claim)) => origin,
        None => panic!("the clock is in use"),
    }
}

/// Changes `clock`'s rate and reads it at once, as a node woken by the change does.
fn change(clock: &NodeClock, rate: f64) {
    clock.set_rate(rate);
    clock.read(Instant::now());
}

/// `clock`'s reading `elapsed` after `origin` (tokio's paused clock advanced by hand).
async fn reading_after(clock: &NodeClock, origin: LocalTime, elapsed_ms: u64) -> u64 {
    tokio::time::advance(Duration::from_millis(elapsed_ms)).await;
    clock.read(Instant::now()).millis_since(origin)
}

#[tokio::test(start_paused = true)]
async fn a_real_clock_keeps_tokio_time() {
    let clock = NodeClock::real();
    let origin = started(&clock);
    assert_eq!(reading_after(&clock, origin, 250).await, 250);
    let deadline = origin.plus_millis(400);
    assert_eq!(
        clock.instant_at(deadline, Instant::now()),
        Instant::now() + Duration::from_millis(150)
    );
    clock.set_rate(3.0);
    assert_eq!(clock.rate(), 1.0, "a real clock's rate cannot change");
    assert!(!clock.is_adjustable() && clock.changes().is_none());
}

#[tokio::test(start_paused = true)]
async fn an_adjustable_clock_runs_at_its_rate_from_each_change_on() {
    let clock = NodeClock::adjustable();
    let origin = started(&clock);
    assert_eq!(
        reading_after(&clock, origin, 100).await,
        100,
        "keeps time at first"
    );
    change(&clock, 2.0);
    assert_eq!(
        reading_after(&clock, origin, 100).await,
        300,
        "100 + 2 x 100"
    );
    change(&clock, 0.5);
    assert_eq!(
        reading_after(&clock, origin, 100).await,
        350,
        "300 + 100 / 2"
    );
    // At half speed, the reading 400 comes 100 ms of tokio's time from now.
    let at = clock.instant_at(origin.plus_millis(400), Instant::now());
    assert_eq!(at, Instant::now() + Duration::from_millis(100));
    // A reading already passed maps to an instant already past, the right distance back.
    let past = clock.instant_at(origin.plus_millis(340), Instant::now());
    assert_eq!(past, Instant::now() - Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_clock_and_see_its_changes() {
    let clock = NodeClock::adjustable();
    let clone = clock.clone();
    let changes = clone.changes();
    clock.set_rate(1.5);
    assert_eq!(clone.rate(), 1.5);
    assert!(
        changes.is_some_and(|c| c.has_changed().unwrap_or(false)),
        "the change is seen"
    );
}

#[test]
fn rates_are_clamped_so_that_the_clock_always_moves_forward() {
    let clock = NodeClock::adjustable();
    for (asked, got) in [
        (0.0, 0.01),
        (-2.0, 0.01),
        (f64::NAN, 1.0),
        (1e9, 100.0),
        (f64::INFINITY, 100.0),
        (1.000_001, 1.000_001),
    ] {
        clock.set_rate(asked);
        assert_eq!(clock.rate(), got, "set_rate({asked})");
    }
}

#[tokio::test(start_paused = true)]
async fn readings_never_go_back_across_rate_changes() {
    let clock = NodeClock::adjustable();
    let origin = started(&clock);
    let mut last = 0;
    for (step, rate) in [(7, 0.01), (13, 100.0), (1, 0.37), (29, 1.0), (3, 55.5)] {
        change(&clock, rate);
        let reading = reading_after(&clock, origin, step).await;
        assert!(reading >= last, "{reading} after {last}");
        last = reading;
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_instant_of_a_deadline_the_clock_has_reached_it() {
    // Rates whose conversion back to tokio's time is not exact in microseconds.
    for rate in [0.3, 0.7, 1.3, 1.7, 2.9, 0.013] {
        let clock = NodeClock::adjustable();
        let origin = started(&clock);
        change(&clock, rate);
        for deadline_ms in [1, 7, 149, 150, 301, 1_001] {
            let deadline = origin.plus_millis(deadline_ms);
            let at = clock.instant_at(deadline, Instant::now());
            let reading = clock.read(at).millis_since(origin);
            assert!(
                reading >= deadline_ms,
                "rate {rate}: {reading} at the instant of {deadline_ms}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_counts_from_the_reading_after_the_change() {
    let clock = NodeClock::adjustable();
    let origin = started(&clock);
    clock.set_rate(3.0);
    assert_eq!(clock.rate(), 3.0, "the rate asked for");
    // Not read since: the 50 ms before the next reading count at the old rate.
    assert_eq!(reading_after(&clock, origin, 50).await, 50);
    assert_eq!(reading_after(&clock, origin, 10).await, 80, "50 + 3 x 10");
}

#[tokio::test(start_paused = true)]
async fn a_restart_starts_the_readings_again_at_the_present_rate() {
    let clock = NodeClock::adjustable();
    let origin = started(&clock);
    change(&clock, 2.0);
    assert_eq!(reading_after(&clock, origin, 100).await, 200);
    // A node restarted on the clock (perhaps on a new runtime, whose instants start again).
    let origin = started(&clock);
    assert_eq!(origin, LocalTime::Scaled(0));
    assert_eq!(
        reading_after(&clock, origin, 10).await,
        20,
        "still twice as fast"
    );
}

#[tokio::test(start_paused = true)]
async fn one_running_node_at_a_time_reads_an_adjustable_clock() {
    let clock = NodeClock::adjustable();
    let first = clock.start(Instant::now());
    assert!(first.is_some());
    assert!(
        clock.clone().start(Instant::now()).is_none(),
        "a second node would move the first one's origin"
    );
    drop(first);
    assert!(
        clock.start(Instant::now()).is_some(),
        "free once the first stopped"
    );
    // Tokio's clock has no origin to move: any number of nodes read it.
    let real = NodeClock::real();
    let (a, b) = (real.start(Instant::now()), real.start(Instant::now()));
    assert!(a.is_some() && b.is_some());
}
