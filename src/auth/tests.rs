//! Tests of the credential store: outcomes, the caches, the queue and its gates.

use super::*;
use crate::config::RateLimits;

fn user(name: &str, password: &str, disabled: bool) -> User {
    User {
        name: name.into(),
        password_hash: Some(hash_password(password).unwrap()),
        networks: vec![],
        senders: vec![],
        rate_limits: RateLimits::default(),
        disabled,
        allow_any_header_from: false,
    }
}

/// A user known only by its networks has no password, and AUTH as it is refused
/// like an unknown user's (no argon2 against a missing hash, no way in).
#[tokio::test]
async fn a_user_without_a_password_cannot_log_in() {
    let device = User {
        password_hash: None,
        networks: vec![crate::config::Cidr::parse("192.168.10.0/24").unwrap()],
        ..user("scanner", "unused", false)
    };
    let a = Authenticator::new(Users::from_list(vec![device]), 2, 8);
    for password in ["", "unused", "x"] {
        let got = a
            .verify(
                "127.0.0.1".parse().unwrap(),
                "scanner",
                &Secret::new(password.into()),
            )
            .await;
        assert!(matches!(got, AuthOutcome::BadCredentials), "{got:?}");
    }
    // The user is still found by its network.
    let users = a.users();
    let found = users.by_address("192.168.10.7".parse().unwrap());
    assert_eq!(found.map(|u| u.name.as_str()), Some("scanner"));
}

#[tokio::test]
async fn verify_outcomes() {
    let users = Users::from_list(vec![user("alice", "right", false), user("bob", "pw", true)]);
    let a = Authenticator::new(users, 2, 8);
    let s = |p: &str| Secret::new(p.into());
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(
        matches!(a.verify(ip, "alice", &s("right")).await, AuthOutcome::Ok(u) if u.name == "alice")
    );
    assert!(matches!(
        a.verify(ip, "alice", &s("wrong")).await,
        AuthOutcome::BadCredentials
    ));
    assert!(matches!(
        a.verify(ip, "Alice", &s("right")).await,
        AuthOutcome::BadCredentials
    ));
    assert!(matches!(
        a.verify(ip, "nobody", &s("right")).await,
        AuthOutcome::BadCredentials
    ));
    assert!(matches!(
        a.verify(ip, "bob", &s("pw")).await,
        AuthOutcome::Disabled
    ));
    assert!(matches!(
        a.verify(ip, "bob", &s("nope")).await,
        AuthOutcome::BadCredentials
    ));
    assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
    assert!(a.per_client.lock().unwrap().is_empty());
    // Every attempt ran argon2, unknown user included: no timing oracle.
    assert_eq!(a.verifications(), 6);
}

#[tokio::test]
async fn verified_logins_and_repeated_failures_are_cached() {
    let users = || Users::from_list(vec![user("alice", "right", false)]);
    let a = Authenticator::new(users(), 2, 8);
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let s = |p: &str| Secret::new(p.into());
    for _ in 0..20 {
        assert!(matches!(
            a.verify(ip, "alice", &s("wrong")).await,
            AuthOutcome::BadCredentials
        ));
    }
    assert_eq!(
        a.verifications(),
        1,
        "a repeated wrong password runs argon2 once"
    );
    // The same for an unknown user, from any address.
    for i in 0..20u8 {
        let from = IpAddr::from([198, 51, 100, i]);
        assert!(matches!(
            a.verify(from, "nobody", &s("guess")).await,
            AuthOutcome::BadCredentials
        ));
    }
    assert_eq!(a.verifications(), 2);
    // Every new guess is verified; a repeat is not remembered as a success.
    assert!(matches!(
        a.verify(ip, "alice", &s("wrong2")).await,
        AuthOutcome::BadCredentials
    ));
    assert_eq!(a.verifications(), 3, "another password pays argon2");
    for _ in 0..5 {
        assert!(matches!(
            a.verify(ip, "alice", &s("right")).await,
            AuthOutcome::Ok(_)
        ));
    }
    assert_eq!(a.verifications(), 4, "one verification, then hits");
    assert!(matches!(
        a.verify(ip, "alice", &s("wrong")).await,
        AuthOutcome::BadCredentials
    ));
    assert_eq!(a.verifications(), 4);
    // A reload forgets; a changed password never matches the old entry.
    a.replace_users(users());
    assert!(matches!(
        a.verify(ip, "alice", &s("right")).await,
        AuthOutcome::Ok(_)
    ));
    assert_eq!(a.verifications(), 5);
    a.replace_users(Users::from_list(vec![user("alice", "new", false)]));
    assert!(matches!(
        a.verify(ip, "alice", &s("right")).await,
        AuthOutcome::BadCredentials
    ));
    // The old wrong password is now the right one: verified, not a cached failure.
    a.replace_users(Users::from_list(vec![user("alice", "wrong", false)]));
    assert!(matches!(
        a.verify(ip, "alice", &s("wrong")).await,
        AuthOutcome::Ok(_)
    ));
    assert_eq!(a.verifications(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_users_logins_runs_argon2_once() {
    // A site opening its connections at once: all queue for the one verifier
    // thread; those behind the first find its success remembered.
    let users = Users::from_list(vec![user("alice", "right", false)]);
    let a = Arc::new(Authenticator::new(users, 1, 64));
    let burst: Vec<_> = (0..12u8)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let from = IpAddr::from([192, 0, 2, i]);
                a.verify(from, "alice", &Secret::new("right".into())).await
            })
        })
        .collect();
    for t in burst {
        assert!(matches!(t.await.unwrap(), AuthOutcome::Ok(_)));
    }
    assert_eq!(a.verifications(), 1);
    // A wrong password in the same situation still pays its own verification.
    let ip: IpAddr = "192.0.2.99".parse().unwrap();
    assert!(matches!(
        a.verify(ip, "alice", &Secret::new("wrong".into())).await,
        AuthOutcome::BadCredentials
    ));
    assert_eq!(a.verifications(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_repeats_leaves_the_queue_to_others() {
    let users = Users::from_list(vec![
        user("alice", "right", false),
        user("bob", "pw", false),
    ]);
    // One verify at a time and a short queue: 40 flooding addresses with two
    // verifications each would fill it many times over.
    let a = Arc::new(Authenticator::new(users, 1, 4));
    let s = |p: &str| Secret::new(p.into());
    let first: IpAddr = "203.0.113.1".parse().unwrap();
    assert!(matches!(
        a.verify(first, "alice", &s("stale")).await,
        AuthOutcome::BadCredentials
    ));
    let flood: Vec<_> = (0..40u8)
        .flat_map(|i| (0..5).map(move |_| i))
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let from = IpAddr::from([203, 0, 113, i]);
                a.verify(from, "alice", &Secret::new("stale".into())).await
            })
        })
        .collect();
    let other: IpAddr = "192.0.2.7".parse().unwrap();
    assert!(matches!(
        a.verify(other, "bob", &s("pw")).await,
        AuthOutcome::Ok(_)
    ));
    for t in flood {
        assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
    }
    assert_eq!(a.verifications(), 2, "the flood ran argon2 once in all");
}

#[test]
fn unknown_users_are_verified_against_the_costliest_parameters() {
    let strong = {
        let params = argon2::Params::new(32 * 1024, 3, 1, None).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"pw")
            .unwrap()
            .to_string()
    };
    let users = Users::from_list(vec![
        user("a", "x", false),
        User {
            password_hash: Some(strong.clone()),
            ..user("b", "y", false)
        },
    ]);
    let a = Authenticator::new(users, 1, 1);
    let d = a.dummy.read().unwrap().clone();
    assert_eq!(d.1, dummy::Cost::of(&strong).unwrap());
    assert_eq!(dummy::Cost::of(&d.0), Some(d.1));
    // A reload with only default hashes goes back to the defaults.
    a.replace_users(Users::from_list(vec![user("a", "x", false)]));
    assert_eq!(a.dummy.read().unwrap().1, dummy::Cost::default_params());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_the_queue() {
    let users = Users::from_list(vec![user("alice", "right", false)]);
    // One verify at a time and a queue of 64: without the gate, a burst of 12 from
    // one address would all be ahead of the next client.
    let a = Arc::new(Authenticator::new(users, 1, 64));
    let in_queue = |n: usize| {
        let a = a.clone();
        async move {
            while a.in_flight.load(Ordering::SeqCst) < n {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    // Hold the only verify slot so the queue fills up deterministically.
    let hold = a.permits.acquire().await.unwrap();
    let flooder: IpAddr = "192.0.2.66".parse().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    // Distinct guesses: repeats of one would be answered from the rejection cache.
    let attempts: Vec<_> = (0..12)
        .map(|i| {
            let (a, done) = (a.clone(), done.clone());
            tokio::spawn(async move {
                let r = a
                    .verify(flooder, "alice", &Secret::new(format!("wrong{i}")))
                    .await;
                done.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    in_queue(PER_CLIENT.min(12)).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        a.in_flight.load(Ordering::SeqCst),
        PER_CLIENT,
        "the rest wait at the gate"
    );
    let other: IpAddr = "192.0.2.7".parse().unwrap();
    let good = {
        let a = a.clone();
        tokio::spawn(async move { a.verify(other, "alice", &Secret::new("right".into())).await })
    };
    in_queue(PER_CLIENT + 1).await;
    drop(hold);
    assert!(matches!(good.await.unwrap(), AuthOutcome::Ok(_)));
    // The other client waited only for the flooder's two already in the queue.
    let before = done.load(Ordering::SeqCst);
    assert!(before <= 2, "waited behind {before}");
    // And the flood is served in turn, not refused.
    for t in attempts {
        assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
    }
    assert!(a.per_client.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_burst_from_one_address_runs_argon2_at_most_per_gate_slot() {
    let users = Users::from_list(vec![user("alice", "right", false)]);
    let a = Arc::new(Authenticator::new(users, 2, 64));
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                let from: IpAddr = "192.0.2.66".parse().unwrap();
                a.verify(from, "alice", &Secret::new("stale".into())).await
            })
        })
        .collect();
    for t in burst {
        assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
    }
    // The first ones through the address's gate ran it; the rest were answered
    // from the rejection cache once they got through.
    assert!(
        a.verifications() <= PER_CLIENT as u64,
        "{}",
        a.verifications()
    );
}

#[test]
fn in_flight_is_bounded_and_released() {
    let c = AtomicUsize::new(0);
    let a = InFlight::enter(&c, 2).unwrap();
    let b = InFlight::enter(&c, 2).unwrap();
    assert!(InFlight::enter(&c, 2).is_none());
    drop(a);
    assert!(InFlight::enter(&c, 2).is_some());
    drop(b);
    assert_eq!(c.load(Ordering::SeqCst), 0);
}

#[test]
fn phc_checks() {
    assert!(check_phc(&hash_password("x").unwrap()).is_ok());
    assert!(check_phc("plaintext").is_err());
    let huge = hash_password("x").unwrap().replace("m=19456", "m=4194304");
    assert!(check_phc(&huge).unwrap_err().contains("memory cost"));
    // Work is memory times passes: t=100 at the default memory is refused, RFC
    // 9106's second recommendation (64 MiB, three passes) and 256 MiB once are not.
    let slow = hash_password("x").unwrap().replace("t=2", "t=100");
    assert!(check_phc(&slow).unwrap_err().contains("times t=100"));
    for fits in ["m=65536,t=3", "m=262144,t=1"] {
        let phc = hash_password("x").unwrap().replace("m=19456,t=2", fits);
        assert!(check_phc(&phc).is_ok(), "{fits}");
    }
    let over = hash_password("x")
        .unwrap()
        .replace("m=19456,t=2", "m=262144,t=2");
    assert!(check_phc(&over).is_err());
    assert!(check_phc("$2y$10$abcdefghijklmnopqrstuv").is_err());
}
