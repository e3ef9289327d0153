use super::*;

/// Redis confirms every settle in `due`.
fn confirmed(g: &Grants, due: &[Settle]) {
    for s in due {
        g.confirm(&s.id, s.seq, true);
    }
}

/// What is due now, all of it confirmed at once.
fn settled(g: &Grants, now: Instant, all: bool) -> Vec<Settle> {
    let due = g.due(now, all).calls;
    confirmed(g, &due);
    due
}

fn terms(max: u32) -> Terms {
    Terms {
        user: RateLimits {
            messages_per_hour: Some(max),
            recipients_per_day: Some(max),
            ..RateLimits::default()
        },
        domain: None,
    }
}

/// Grants holding `g1`: room for 10 messages and 10 recipients of `shop`,
/// made now (returned).
fn one_grant() -> (Grants, Instant) {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (10, Some(10)), t0);
    (g, t0)
}

#[test]
fn a_grant_hands_out_its_room_then_retires() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (3, Some(3)), t0);
    assert_eq!(g.take("shop", None, &terms(1000)).as_deref(), Some("g1"));
    assert_eq!(g.take("other", None, &terms(1000)), None);
    assert_eq!(g.take("shop", Some("shop.example"), &terms(1000)), None);
    assert_eq!(g.take("shop", None, &terms(1000)).as_deref(), Some("g1"));
    // Three messages: the one the grant was made for and two taken; none left.
    assert_eq!(g.take("shop", None, &terms(1000)), None);
    // Retired when its last message went; its recipients still serve the three.
    for _ in 0..3 {
        assert!(g.take_rcpt("g1", &terms(1000)));
    }
    assert!(!g.take_rcpt("g1", &terms(1000)));
}

#[test]
fn other_limits_take_nothing_from_a_grant() {
    let (g, _) = one_grant();
    assert_eq!(g.take("shop", None, &terms(999)), None);
    assert!(!g.take_rcpt("g1", &terms(999)));
    assert!(g.take_rcpt("g1", &terms(1000)));
}

#[test]
fn settling_counts_what_was_sent_and_gives_back_the_rest() {
    let (g, t0) = one_grant();
    assert!(g.take_rcpt("g1", &terms(1000)));
    g.sent("g1", 1);
    let id = g.take("shop", None, &terms(1000)).unwrap();
    assert!(g.take_rcpt(&id, &terms(1000)));
    assert!(g.take_rcpt(&id, &terms(1000)));
    // Young: only what was sent is settled; the grant still hands out.
    let due = settled(&g, t0, false);
    assert_eq!(
        due,
        vec![Settle {
            id: "g1".into(),
            seq: 1,
            user: "shop".into(),
            domain: None,
            count: (1, 1),
            drop: (1, 1),
        }]
    );
    assert!(settled(&g, t0, false).is_empty());
    // Past its life: the spare messages (8) go back; the message in progress
    // keeps its room, and the spare recipients (7) in case it has more.
    let due = settled(&g, t0 + LIFE, false);
    assert_eq!((due[0].count, due[0].drop), ((0, 0), (8, 0)));
    assert_eq!(g.take("shop", None, &terms(1000)), None);
    assert_eq!(g.len(), 1);
    // The last message gives one recipient back, and is sent to the other.
    g.give_back("g1", 0, 1);
    g.sent("g1", 1);
    let due = settled(&g, t0 + LIFE, false);
    assert_eq!((due[0].count, due[0].drop), ((1, 1), (1, 9)));
    assert!(settled(&g, t0 + LIFE, false).is_empty());
    assert!(g.is_empty());
}

#[test]
fn room_given_back_is_spare_again_while_current() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (2, Some(2)), t0);
    // The one the grant was made for is given back: two spare again.
    g.give_back("g1", 1, 0);
    assert!(g.take("shop", None, &terms(1000)).is_some());
    assert!(g.take("shop", None, &terms(1000)).is_some());
    assert!(g.take("shop", None, &terms(1000)).is_none());
    g.sent("g1", 0);
    g.sent("g1", 0);
    let due = settled(&g, t0, false);
    assert_eq!((due[0].count, due[0].drop), ((2, 0), (2, 2)));
    assert!(settled(&g, t0 + LIFE, false).is_empty());
    assert!(g.is_empty());
}

#[test]
fn without_a_recipient_limit_every_recipient_fits_and_shutdown_settles_all() {
    let g = Grants::default();
    let t0 = Instant::now();
    let free = Terms {
        user: RateLimits {
            messages_per_hour: Some(1000),
            ..RateLimits::default()
        },
        domain: None,
    };
    g.add("g1", "shop", None, free.clone(), (5, None), t0);
    for _ in 0..20 {
        assert!(g.take_rcpt("g1", &free));
    }
    g.sent("g1", 20);
    let due = settled(&g, t0, true);
    assert_eq!((due[0].count, due[0].drop), ((1, 20), (5, 20)));
    assert!(settled(&g, t0 + LIFE, false).is_empty());
    assert!(g.is_empty());
}

#[test]
fn a_grant_of_one_message_is_not_current() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (1, Some(1)), t0);
    assert_eq!(g.take("shop", None, &terms(1000)), None);
    assert!(g.take_rcpt("g1", &terms(1000)));
    g.sent("g1", 1);
    let due = settled(&g, t0, false);
    assert_eq!((due[0].count, due[0].drop), ((1, 1), (1, 1)));
    assert!(settled(&g, t0 + LIFE, false).is_empty());
    assert!(g.is_empty());
}

#[test]
fn several_grants_of_one_user_are_all_used_and_other_users_are_apart() {
    let g = Grants::default();
    let t0 = Instant::now();
    // Two sessions found no spare room at once: two grants of the same user.
    g.add("g1", "shop", None, terms(1000), (2, Some(2)), t0);
    g.add("g2", "shop", None, terms(1000), (2, Some(2)), t0);
    g.add("g3", "blog", None, terms(1000), (4, Some(4)), t0);
    let mut ids = vec![
        g.take("shop", None, &terms(1000)).unwrap(),
        g.take("shop", None, &terms(1000)).unwrap(),
    ];
    ids.sort();
    assert_eq!(ids, ["g1", "g2"]);
    assert_eq!(g.take("shop", None, &terms(1000)), None);
    assert_eq!(g.take("blog", None, &terms(1000)).as_deref(), Some("g3"));
    // Shutdown: everything retires; blog's unused room goes back.
    let mut due = settled(&g, t0, true);
    due.sort_by(|a, b| a.id.cmp(&b.id));
    // shop's two kept their spare recipients for their messages in progress.
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].id.as_str(), due[0].drop), ("g3", (2, 0)));
    assert_eq!(g.len(), 3, "their messages are still in progress");
}

#[test]
fn a_settle_redis_did_not_confirm_goes_again_as_it_was_and_keeps_its_grant() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (3, Some(3)), t0);
    assert!(g.take_rcpt("g1", &terms(1000)));
    g.sent("g1", 1);
    let first = g.due(t0 + LIFE, false).calls;
    assert_eq!(
        (first[0].seq, first[0].count, first[0].drop),
        (1, (1, 1), (3, 3))
    );
    // Redis failed to answer: the same settle (same token) goes again, however
    // often, and the grant is kept for it.
    g.confirm("g1", 1, false);
    assert_eq!(g.due(t0 + LIFE, false).calls, first);
    assert_eq!(g.due(t0 + LIFE, true).calls, first);
    assert_eq!(g.len(), 1);
    // A confirmation of another settle changes nothing; this one's ends it.
    g.confirm("g1", 2, true);
    assert_eq!(g.due(t0 + LIFE, false).calls, first);
    g.confirm("g1", 1, true);
    assert!(g.due(t0 + LIFE, false).calls.is_empty());
    assert!(g.is_empty());
}

#[test]
fn counts_made_while_a_settle_is_unconfirmed_go_in_the_next() {
    let (g, t0) = one_grant();
    g.sent("g1", 0);
    let first = g.due(t0, false).calls;
    assert_eq!(first[0].count, (1, 0));
    let id = g.take("shop", None, &terms(1000)).unwrap();
    g.sent(&id, 0);
    // Still the first (unconfirmed): the new message waits for the next.
    assert_eq!(g.due(t0, false).calls, first);
    g.confirm("g1", first[0].seq, true);
    let next = g.due(t0, false).calls;
    assert_eq!((next[0].seq, next[0].count), (2, (1, 0)));
}

#[test]
fn what_is_sent_while_a_settle_is_pending_goes_in_the_next_even_at_shutdown() {
    let (g, t0) = one_grant();
    g.sent("g1", 0);
    let first = g.due(t0, false).calls;
    g.confirm("g1", first[0].seq, false);
    // More sent, then shutdown: the pending one goes first, unchanged...
    let id = g.take("shop", None, &terms(1000)).unwrap();
    g.sent(&id, 0);
    assert_eq!(g.due(t0, true).calls, first);
    g.confirm("g1", first[0].seq, true);
    // ...then the rest: the new message and the spare room (10 - 2).
    let rest = settled(&g, t0, true);
    assert_eq!(
        (rest[0].seq, rest[0].count, rest[0].drop),
        (2, (1, 0), (9, 10))
    );
    assert!(g.due(t0, true).calls.is_empty());
    assert!(g.is_empty());
}

#[test]
fn a_settle_unconfirmed_for_too_long_is_given_up() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (2, Some(2)), t0);
    g.sent("g1", 1);
    let first = g.due(t0 + LIFE, false);
    assert_eq!(first.given_up, 0);
    let later = g.due(t0 + LIFE + RETRY_FOR, false);
    assert_eq!((later.calls.len(), later.given_up), (0, 1));
    assert!(g.is_empty());
}
