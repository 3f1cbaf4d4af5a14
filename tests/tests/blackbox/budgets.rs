//! Budgets over real HTTP: spending per window is enforced, for a token and
//! its ancestors, under concurrency, and after a restart.

use tollgate_protocol::{Domain, Object, Value, canonical, parse};
use tollgate_tests::gateway::{Gateway, intent, verdict_of};

fn budget(p: &mut Object, eur: i64, window: i64) {
    let mut b = Object::new();
    b.insert("EUR", Value::integer(eur).unwrap());
    p.insert("budget", b.into());
    p.insert("window_seconds", Value::integer(window).unwrap());
}

fn with_budget(g: &Gateway, id: &str) {
    let key = tollgate_signer::Signer::jwk(&g.agent()).to_value();
    let token = g.delegation(id, "agent-demo", key, |p| budget(p, 10_000, 86_400));
    let a = g.admin().register_delegation(&token).unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
}

fn under(g: &Gateway, delegation: &str, id: &str, amount: i64) -> (u16, Vec<u8>) {
    let body = intent(&g.agent(), id, "order:o-1001", amount, |p| {
        p.insert("delegation", delegation.into());
    });
    let (c, _, b, _) = g.post_raw("application/json", &body, None);
    (c, b)
}

/// Found by the outside review: under a daily budget, ten refunds of 40% of
/// it each all passed (here 100.00 EUR a day and 40.00 EUR each).
#[test]
fn regression_a_daily_budget_is_enforced() {
    let g = Gateway::start();
    with_budget(&g, "dlg_budget");
    let verdicts: Vec<String> = (0..10)
        .map(|i| {
            let (c, b) = under(&g, "dlg_budget", &format!("r-{i}"), 4_000);
            assert_eq!(c, 200, "{}", String::from_utf8_lossy(&b));
            verdict_of(&b)
        })
        .collect();
    assert_eq!(verdicts[..2], ["pass", "pass"]);
    assert!(
        verdicts[2..].iter().all(|v| v == "escalate"),
        "{verdicts:?}"
    );
    let (_, b) = under(&g, "dlg_budget", "r-10", 4_000);
    let text = String::from_utf8_lossy(&b).into_owned();
    assert!(
        text.contains("the 20.00 EUR left in the budget of delegation dlg_budget"),
        "{text}"
    );
    // After a restart, from the ledger alone.
    let g = g.restart();
    let (_, b) = under(&g, "dlg_budget", "r-11", 2_001);
    assert_eq!(verdict_of(&b), "escalate");
    let (_, b) = under(&g, "dlg_budget", "r-12", 2_000);
    assert_eq!(verdict_of(&b), "pass");
}

/// Found by the outside review: a child token with a one-second window
/// under a parent's day was accepted.
#[test]
fn regression_a_child_window_is_never_shorter_than_its_parent() {
    let g = Gateway::start();
    with_budget(&g, "dlg_parent");
    let agent = g.agent();
    let key = tollgate_signer::Signer::jwk(&agent).to_value();
    // Signed by the holder's agent key, narrowing the parent.
    let child = |id: &str, window: i64| {
        let issued = parse(&g.delegation(id, "agent-demo", key.clone(), |p| {
            budget(p, 10_000, window);
            p.insert("parent", "dlg_parent".into());
        }))
        .unwrap();
        let payload = issued.as_object().unwrap().get("payload").unwrap().clone();
        canonical(&agent.envelope(Domain::Delegation, payload))
    };
    let a = g
        .admin()
        .register_delegation(&child("dlg_fast", 1))
        .unwrap();
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.problem_type().as_deref(), Some("wider-than-parent"));
    assert!(a.text().contains("shorter than the parent's 86400 s"));
    let a = g
        .admin()
        .register_delegation(&child("dlg_slow", 86_400))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    // The child's spending is its parent's.
    let (_, b) = under(&g, "dlg_slow", "c-1", 6_000);
    assert_eq!(verdict_of(&b), "pass");
    let (_, b) = under(&g, "dlg_parent", "p-1", 6_000);
    assert_eq!(verdict_of(&b), "escalate");
}

#[test]
fn thirty_two_concurrent_intents_never_exceed_a_budget() {
    let g = Gateway::start();
    with_budget(&g, "dlg_race");
    let verdicts: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                let g = &g;
                s.spawn(move || {
                    let (c, b) = under(g, "dlg_race", &format!("race-{i}"), 700);
                    assert_eq!(c, 200, "{}", String::from_utf8_lossy(&b));
                    verdict_of(&b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let passed = verdicts.iter().filter(|v| *v == "pass").count();
    assert_eq!(passed, 14, "14 x 7.00 = 98.00 <= 100.00 < 15 x 7.00");
}

/// Found by the outside review: a child added a currency its parent
/// refuses (a USD budget under a parent bounded in EUR only), and a USD
/// refund the parent blocks passed under the child.
#[test]
fn regression_a_child_cannot_add_a_currency_its_parent_refuses() {
    let g = Gateway::start();
    let agent = g.agent();
    let key = tollgate_signer::Signer::jwk(&agent).to_value();
    let parent = g.delegation("dlg_eur", "agent-demo", key.clone(), |p| {
        let mut per = Object::new();
        per.insert("EUR", Value::integer(100_000).unwrap());
        p.insert("per_intent", per.into());
    });
    assert_eq!(g.admin().register_delegation(&parent).unwrap().status, 201);
    let issued = parse(&g.delegation("dlg_usd", "agent-demo", key, |p| {
        let mut per = Object::new();
        per.insert("EUR", Value::integer(100_000).unwrap());
        p.insert("per_intent", per.into());
        let mut b = Object::new();
        b.insert("USD", Value::integer(100_000_000).unwrap());
        p.insert("budget", b.into());
        p.insert("window_seconds", Value::integer(86_400).unwrap());
        p.insert("parent", "dlg_eur".into());
    }))
    .unwrap();
    let payload = issued.as_object().unwrap().get("payload").unwrap().clone();
    let child = canonical(&agent.envelope(Domain::Delegation, payload));
    let before = g.written();
    let a = g.admin().register_delegation(&child).unwrap();
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.problem_type().as_deref(), Some("wider-than-parent"));
    assert!(
        a.text()
            .contains("USD, a currency the parent does not allow")
    );
    assert_eq!(g.written(), before);
}
