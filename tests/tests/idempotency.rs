//! Exactly once: replays, conflicts, concurrent duplicates, one intent
//! under two keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_tests::gateway::{Gateway, intent};

#[test]
fn replays_are_byte_identical_and_changed_bodies_conflict() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "rep-1", "order:o-1001", 2500, |_| {});
    let (c1, _, first, r1) = g.post_raw("application/json", &body, None);
    let (c2, _, second, r2) = g.post_raw("application/json", &body, None);
    assert_eq!((c1, r1), (200, false));
    assert_eq!((c2, r2), (200, true));
    assert_eq!(first, second, "the first response, byte for byte");
    let other = intent(&agent, "rep-1", "order:o-1001", 2600, |_| {});
    let (c3, ct, problem, _) = g.post_raw("application/json", &other, None);
    assert_eq!((c3, ct.as_str()), (409, "application/problem+json"));
    assert!(
        String::from_utf8_lossy(&problem).contains("urn:tollgate:problem:idempotency-conflict")
    );
    // An explicit Idempotency-Key works the same way.
    let a = intent(&agent, "rep-2", "order:o-1001", 100, |_| {});
    let (c4, _, _, _) = g.post_raw("application/json", &a, Some("k-1"));
    let b = intent(&agent, "rep-3", "order:o-1001", 100, |_| {});
    let (c5, _, _, _) = g.post_raw("application/json", &b, Some("k-1"));
    assert_eq!((c4, c5), (200, 409));
    assert_eq!(g.written(), 2);
}

#[test]
fn concurrent_duplicates_commit_once() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "dup-1", "order:o-1001", 2500, |_| {});
    let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let (c, _, b, _) = g.post_raw("application/json", &body, None);
                    (c, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Vec<u8>> = results
        .iter()
        .filter(|(c, _)| *c == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(!ok.is_empty());
    assert!(
        ok.iter().all(|b| *b == ok[0]),
        "every 200 is the same entry"
    );
    for (c, b) in &results {
        assert!(
            *c == 200 || (*c == 409 && String::from_utf8_lossy(b).contains("in-flight")),
            "{c}"
        );
    }
    assert_eq!(g.written(), 1, "committed exactly once");
}

#[test]
fn the_same_intent_under_another_key_gets_its_existing_receipt() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "twice", "order:o-1001", 2500, |_| {});
    let (c1, _, first, r1) = g.post_raw("application/json", &body, Some("key-a"));
    let (c2, _, second, r2) = g.post_raw("application/json", &body, Some("key-b"));
    assert_eq!((c1, r1), (200, false));
    assert_eq!(
        (c2, r2),
        (200, true),
        "{}",
        String::from_utf8_lossy(&second)
    );
    assert_eq!(first, second);
    assert_eq!(g.written(), 1);
}
