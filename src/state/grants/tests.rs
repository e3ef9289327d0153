use super::*;

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
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (10, Some(10)), t0);
    assert_eq!(g.take("shop", None, &terms(999)), None);
    assert!(!g.take_rcpt("g1", &terms(999)));
    assert!(g.take_rcpt("g1", &terms(1000)));
}

#[test]
fn settling_counts_what_was_sent_and_gives_back_the_rest() {
    let g = Grants::default();
    let t0 = Instant::now();
    g.add("g1", "shop", None, terms(1000), (10, Some(10)), t0);
    assert!(g.take_rcpt("g1", &terms(1000)));
    g.sent("g1", 1);
    let id = g.take("shop", None, &terms(1000)).unwrap();
    assert!(g.take_rcpt(&id, &terms(1000)));
    assert!(g.take_rcpt(&id, &terms(1000)));
    // Young: only what was sent is settled; the grant still hands out.
    let due = g.due(t0, false);
    assert_eq!(
        due,
        vec![Settle {
            id: "g1".into(),
            user: "shop".into(),
            domain: None,
            count: (1, 1),
            drop: (1, 1),
        }]
    );
    assert!(g.due(t0, false).is_empty());
    // Past its life: the spare messages (8) go back; the message in progress
    // keeps its room, and the spare recipients (7) in case it has more.
    let due = g.due(t0 + LIFE, false);
    assert_eq!((due[0].count, due[0].drop), ((0, 0), (8, 0)));
    assert_eq!(g.take("shop", None, &terms(1000)), None);
    assert_eq!(g.len(), 1);
    // The last message gives one recipient back, and is sent to the other.
    g.give_back("g1", 0, 1);
    g.sent("g1", 1);
    let due = g.due(t0 + LIFE, false);
    assert_eq!((due[0].count, due[0].drop), ((1, 1), (1, 9)));
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
    let due = g.due(t0, false);
    assert_eq!((due[0].count, due[0].drop), ((2, 0), (2, 2)));
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
    let due = g.due(t0, true);
    assert_eq!((due[0].count, due[0].drop), ((1, 20), (5, 20)));
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
    let due = g.due(t0, false);
    assert_eq!((due[0].count, due[0].drop), ((1, 1), (1, 1)));
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
    let mut due = g.due(t0, true);
    due.sort_by(|a, b| a.id.cmp(&b.id));
    // shop's two kept their spare recipients for their messages in progress.
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].id.as_str(), due[0].drop), ("g3", (2, 0)));
    assert_eq!(g.len(), 3, "their messages are still in progress");
}
