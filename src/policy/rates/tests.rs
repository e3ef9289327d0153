//! Unit tests of `rates.rs`.

use super::*;

fn limits(m: Option<u32>, rh: Option<u32>, rd: Option<u32>) -> RateLimits {
    RateLimits {
        messages_per_hour: m,
        recipients_per_hour: rh,
        recipients_per_day: rd,
    }
}

async fn send(
    store: &Arc<dyn RateStore>,
    l: &RateLimits,
    now: Instant,
    rcpts: u32,
) -> Result<(), Exceeded> {
    let mut r = Reservation::message(store.clone(), "u", l, now).await?;
    for _ in 0..rcpts {
        r.recipient(l, now).await?;
    }
    r.commit(now).await;
    Ok(())
}

#[tokio::test]
async fn messages_per_hour_is_exact_at_the_boundary_and_resets() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(Some(100), None, None);
    // 100 in the first minute pass, the 101st does not.
    for i in 0..100 {
        send(&store, &l, t0 + Duration::from_millis(i * 10), 1)
            .await
            .unwrap();
    }
    let e = send(&store, &l, t0 + Duration::from_secs(1), 1)
        .await
        .unwrap_err();
    assert_eq!((e.limit, e.max), ("messages_per_hour", 100));
    assert_eq!(e.retry_after, Duration::from_secs(3599));
    // Still refused 59 minutes later: no refill in the middle of the hour.
    assert!(
        send(&store, &l, t0 + Duration::from_secs(59 * 60 + 59), 1)
            .await
            .is_err()
    );
    // Free again once the hour has passed.
    send(&store, &l, t0 + Duration::from_secs(3600), 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn usage_counts_accepted_mail_only_and_forgets_it_with_the_window() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(None, None, None);
    send(&store, &l, t0, 3).await.unwrap();
    send(&store, &l, t0 + Duration::from_secs(10), 2)
        .await
        .unwrap();
    // A reservation given back (an abandoned transaction) is not usage.
    drop(
        Reservation::message(store.clone(), "u", &l, t0)
            .await
            .unwrap(),
    );
    let u = store.usage("u", t0 + Duration::from_secs(20)).await;
    assert_eq!(
        (
            u.messages_last_hour,
            u.recipients_last_hour,
            u.recipients_last_day
        ),
        (2, 5, 5)
    );
    let later = store.usage("u", t0 + Duration::from_secs(3700)).await;
    assert_eq!(
        (
            later.messages_last_hour,
            later.recipients_last_hour,
            later.recipients_last_day
        ),
        (0, 0, 5)
    );
    assert_eq!(store.usage("nobody", t0).await, Usage::default());
}

#[tokio::test]
async fn over_a_long_run_never_more_than_the_limit_in_any_hour() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(Some(30), None, None);
    let mut accepted = Vec::new();
    // A client trying every 20 seconds for 5 hours.
    for i in 0..900u64 {
        let now = t0 + Duration::from_secs(i * 20);
        if send(&store, &l, now, 1).await.is_ok() {
            accepted.push(i * 20);
        }
    }
    for (k, &start) in accepted.iter().enumerate() {
        let in_hour = accepted[k..]
            .iter()
            .take_while(|&&t| t < start + 3600)
            .count();
        assert!(
            in_hour <= 30,
            "{in_hour} messages in the hour from {start}s"
        );
    }
    assert_eq!(accepted.len(), 150, "30 per hour over 5 hours");
}

#[tokio::test]
async fn a_burst_late_in_a_minute_still_counts_for_a_full_hour() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(Some(5), None, None);
    for _ in 0..5 {
        send(&store, &l, t0 + Duration::from_secs(59), 1)
            .await
            .unwrap();
    }
    assert!(
        send(&store, &l, t0 + Duration::from_secs(3600 + 30), 1)
            .await
            .is_err()
    );
    send(&store, &l, t0 + Duration::from_secs(3600 + 59), 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn recipients_per_hour_and_day() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(None, Some(10), Some(15));
    send(&store, &l, t0, 10).await.unwrap();
    let e = send(&store, &l, t0, 1).await.unwrap_err();
    assert_eq!(e.limit, "recipients_per_hour");
    let t1 = t0 + Duration::from_secs(3600);
    send(&store, &l, t1, 5).await.unwrap();
    let e = send(&store, &l, t1, 1).await.unwrap_err();
    assert_eq!((e.limit, e.max), ("recipients_per_day", 15));
    assert_eq!(e.retry_after, Duration::from_secs(23 * 3600));
    send(&store, &l, t0 + Duration::from_secs(24 * 3600), 10)
        .await
        .unwrap();
}

#[tokio::test]
async fn refused_or_abandoned_messages_cost_nothing() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let l = limits(Some(2), Some(3), None);
    for _ in 0..10 {
        let mut r = Reservation::message(store.clone(), "u", &l, t0)
            .await
            .unwrap();
        r.recipient(&l, t0).await.unwrap();
        drop(r);
    }
    // Reservations held by an open transaction count against the limit...
    let mut a = Reservation::message(store.clone(), "u", &l, t0)
        .await
        .unwrap();
    let _b = Reservation::message(store.clone(), "u", &l, t0)
        .await
        .unwrap();
    assert!(
        Reservation::message(store.clone(), "u", &l, t0)
            .await
            .is_err()
    );
    a.recipient(&l, t0).await.unwrap();
    a.recipient(&l, t0).await.unwrap();
    a.recipient(&l, t0).await.unwrap();
    assert!(a.recipient(&l, t0).await.is_err());
    // ...and a recipient the smarthost refused is given back.
    a.drop_recipient();
    a.recipient(&l, t0).await.unwrap();
    a.commit(t0).await;
    drop(_b);
    send(&store, &l, t0, 0).await.unwrap();
    assert!(send(&store, &l, t0, 0).await.is_err());
}

#[tokio::test]
async fn users_are_independent_and_pruned() {
    let t0 = Instant::now();
    let mem = Arc::new(MemoryRates::new(t0));
    let store: Arc<dyn RateStore> = mem.clone();
    let l = limits(Some(1), None, None);
    Reservation::message(store.clone(), "a", &l, t0)
        .await
        .unwrap()
        .commit(t0)
        .await;
    Reservation::message(store.clone(), "b", &l, t0)
        .await
        .unwrap()
        .commit(t0)
        .await;
    assert!(
        Reservation::message(store.clone(), "a", &l, t0)
            .await
            .is_err()
    );
    assert_eq!(mem.prune_now(t0), 2);
    assert_eq!(mem.prune_now(t0 + Duration::from_secs(25 * 3600)), 0);
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_secs(40)), "40s");
    assert_eq!(human(Duration::from_secs(720)), "12m");
    assert_eq!(human(Duration::from_secs(750)), "12m30s");
    assert_eq!(human(Duration::from_secs(3900)), "1h05m");
}

fn site1(m: Option<u32>, rh: Option<u32>) -> DomainLimits {
    DomainLimits {
        domain: "site1.example".into(),
        limits: limits(m, rh, None),
    }
}

async fn send_as(
    store: &Arc<dyn RateStore>,
    user: &str,
    l: &RateLimits,
    domain: Option<DomainLimits>,
    now: Instant,
    rcpts: u32,
) -> Result<(), Exceeded> {
    let mut r = Reservation::message_in(store.clone(), user, l, domain, now).await?;
    for _ in 0..rcpts {
        r.recipient(l, now).await?;
    }
    r.commit(now).await;
    Ok(())
}

#[tokio::test]
async fn users_of_one_domain_share_its_limit_and_the_stricter_limit_wins() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let open = limits(None, None, None);
    for user in ["a", "b", "a", "b", "a"] {
        send_as(&store, user, &open, Some(site1(Some(5), None)), t0, 1)
            .await
            .unwrap();
    }
    let e = send_as(&store, "b", &open, Some(site1(Some(5), None)), t0, 1)
        .await
        .unwrap_err();
    assert_eq!((e.limit, e.max), ("messages_per_hour", 5));
    assert_eq!(e.domain.as_deref(), Some("site1.example"));
    assert!(e.to_string().contains("of domain site1.example"), "{e}");
    // Another domain, and no domain at all, are not affected.
    let other = DomainLimits {
        domain: "site2.example".into(),
        limits: limits(Some(5), None, None),
    };
    send_as(&store, "b", &open, Some(other), t0, 1)
        .await
        .unwrap();
    send_as(&store, "b", &open, None, t0, 1).await.unwrap();
    // A user limit stricter than the domain's still applies, and says it is the user's.
    let strict = limits(Some(1), None, None);
    send_as(&store, "c", &strict, Some(site1(Some(50), None)), t0, 1)
        .await
        .unwrap();
    let e = send_as(&store, "c", &strict, Some(site1(Some(50), None)), t0, 1)
        .await
        .unwrap_err();
    assert_eq!((e.max, e.domain), (1, None));
    let u = store.domain_usage("site1.example", t0).await;
    assert_eq!((u.messages_last_hour, u.recipients_last_hour), (6, 6));
}

#[tokio::test]
async fn a_refused_or_abandoned_message_costs_neither_user_nor_domain() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let user = limits(Some(10), Some(2), None);
    // The domain's recipient limit refuses the third recipient: nothing is
    // reserved in the user either.
    let mut r = Reservation::message_in(store.clone(), "a", &user, Some(site1(None, Some(2))), t0)
        .await
        .unwrap();
    r.recipient(&user, t0).await.unwrap();
    let held = Reservation::message_in(
        store.clone(),
        "b",
        &limits(None, None, None),
        Some(site1(None, Some(2))),
        t0,
    )
    .await
    .unwrap();
    let mut held = held;
    held.recipient(&limits(None, None, None), t0).await.unwrap();
    let e = r.recipient(&user, t0).await.unwrap_err();
    assert_eq!(
        (e.limit, e.domain.as_deref()),
        ("recipients_per_hour", Some("site1.example"))
    );
    drop(held);
    // Given back: the user's own second recipient fits again.
    r.recipient(&user, t0).await.unwrap();
    drop(r);
    assert_eq!(store.usage("a", t0).await, Usage::default());
    assert_eq!(
        store.domain_usage("site1.example", t0).await,
        Usage::default()
    );
    assert_eq!(store.prune(t0), 0, "nothing reserved or counted is left");
}

#[tokio::test]
async fn a_null_sender_message_reserves_its_domain_with_every_recipient_at_once() {
    let t0 = Instant::now();
    let store: Arc<dyn RateStore> = Arc::new(MemoryRates::new(t0));
    let open = limits(None, None, None);
    let mut r = Reservation::message(store.clone(), "a", &open, t0)
        .await
        .unwrap();
    for _ in 0..3 {
        r.recipient(&open, t0).await.unwrap();
    }
    assert!(!r.has_domain());
    // Three recipients do not fit under 2: refused as a whole.
    let e = r.domain(site1(None, Some(2)), t0).await.unwrap_err();
    assert_eq!(e.domain.as_deref(), Some("site1.example"));
    r.domain(site1(Some(1), Some(3)), t0).await.unwrap();
    // A second message meanwhile finds the domain's only message reserved.
    let e = send_as(&store, "b", &open, Some(site1(Some(1), None)), t0, 1)
        .await
        .unwrap_err();
    assert_eq!(e.retry_after, Duration::from_secs(60));
    r.commit(t0).await;
    let u = store.domain_usage("site1.example", t0).await;
    assert_eq!((u.messages_last_hour, u.recipients_last_day), (1, 3));
    assert_eq!(store.usage("a", t0).await.recipients_last_hour, 3);
}
