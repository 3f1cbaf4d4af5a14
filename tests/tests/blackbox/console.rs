//! The reviewer's console against a real `tollgate serve`: a headless
//! Chromium with a WebAuthn virtual authenticator enrolls two reviewers
//! from invite links, signs in, and grants and denies escalated refunds;
//! the export verifies and re-decides, and doctored passkey assertions
//! are refused by `tollgate-verify`. Then the attacks, over plain HTTP
//! with a passkey in software: no session, cross-site requests, used and
//! expired links, replayed assertions, an agent as reviewer.

use std::process::Command;

use serde_json::{Value as Json, json};
use tollgate_protocol::webauthn::approval_challenge;
use tollgate_protocol::{Value, b64, b64_decode, parse};
use tollgate_signer::{Ed25519Signer, Signer as _};
use tollgate_tests::bin;
use tollgate_tests::browser::Browser;
use tollgate_tests::gateway::{Gateway, problem_slug};
use tollgate_tests::passkey::{SoftPasskey, data_attribute};

use crate::approvals::{escalate, http};
use crate::doctored::{at_mut, docs_of, get, rebuild, verify};

fn port(g: &Gateway) -> u16 {
    g.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// `tollgate reviewer invite ID --role approver`: the link it prints.
fn invite(g: &Gateway, id: &str, extra: &[&str]) -> String {
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["reviewer", "invite", id, "--role", "approver"])
        .args(extra)
        .args(["--url", &g.url, "--admin-token", token.trim()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().next().unwrap().trim().to_owned()
}

/// A request to the gateway with `headers`; status, headers, body.
fn call(
    g: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Json>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let url = format!("{}{path}", g.url);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let agent: ureq::Agent = agent.into();
    let mut resp = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(&url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call().unwrap()
        }
        (_, b) => {
            let mut r = agent.post(&url).header("content-type", "application/json");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(b.map(|b| b.to_string()).unwrap_or_default().as_bytes())
                .unwrap()
        }
    };
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    (
        resp.status().as_u16(),
        hs,
        resp.body_mut().read_to_vec().unwrap(),
    )
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The session cookie a `Set-Cookie` answer sets (`name=value`).
fn session_of(hs: &[(String, String)]) -> String {
    header(hs, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The P-256 scalar inside a PKCS#8 (RFC 5208 / RFC 5915) private key.
fn scalar_of(pkcs8: &[u8]) -> Vec<u8> {
    let at = pkcs8
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an EC private key");
    pkcs8[at + 5..at + 37].to_vec()
}

fn screenshots() -> Option<std::path::PathBuf> {
    std::env::var_os("TOLLGATE_SCREENSHOTS").map(Into::into)
}

#[test]
fn reviewers_enroll_passkeys_and_decide_in_a_real_browser_and_every_decision_verifies() {
    let g = Gateway::start();
    let origin = format!("http://localhost:{}", port(&g));
    let page = |path: &str| format!("{origin}{path}");
    // The tour's large refund: 999.00 EUR on order o-1002 escalates.
    let (_, large) = escalate(&g, "large", 99_900, |_| {});
    let link = invite(&g, "rev-ann", &["--action", "orders.refund"]);
    assert!(link.starts_with(&page("/console/enroll?invite=")), "{link}");

    let b = Browser::start();
    b.resize(1280, 1000);
    let ann_key = b.add_authenticator();
    b.open(&link);
    assert_eq!(b.text("#enroll-reviewer"), "rev-ann");
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("enroll.png"));
    }
    b.click("#enroll");
    b.wait_for(
        "the approvals queue after enrollment",
        "return location.pathname === '/console/approvals'",
    );
    // The session cookie: HttpOnly, SameSite=Strict, the console's path.
    let cookies = b.cookies();
    let c = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tollgate_session")
        .expect("a session cookie");
    assert_eq!(
        (c["httpOnly"].clone(), c["sameSite"].clone()),
        (json!(true), json!("Strict"))
    );
    assert_eq!(c["path"], "/console");
    assert_eq!(b.text("#reviewer"), "rev-ann");
    assert!(
        b.text("#approvals").contains("999.00 EUR"),
        "{}",
        b.text("#approvals")
    );
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("approvals.png"));
    }

    // The agent waits for its intent meanwhile.
    let url = g.url.clone();
    let waiting = std::thread::spawn(move || {
        let mut r = http()
            .get(&format!("{url}/v1/intents/agent-demo/large?wait=60"))
            .call()
            .unwrap();
        parse(&r.body_mut().read_to_vec().unwrap()).unwrap()
    });

    b.open(&page(&format!("/console/approvals/{large}")));
    let rules = b.text("#rules");
    assert!(rules.contains("escalate"), "{rules}");
    let scores = b.text("#scores");
    assert!(
        scores.contains("composite") && scores.contains('%'),
        "{scores}"
    );
    assert!(b.text("#params").contains("999.00 EUR"));
    assert!(
        b.text("#chain").contains("dlg_demo"),
        "{}",
        b.text("#chain")
    );
    assert!(b.text("#policy").contains("Still the version in force"));
    // Our one script and stylesheet, from the gateway itself, nothing else.
    assert_eq!(
        b.eval(
            "return [document.scripts.length, performance.getEntriesByType('resource')\
             .every(e => e.name.startsWith(location.origin))]"
        ),
        json!([1, true])
    );
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("approval.png"));
        b.resize(390, 844);
        b.screenshot(&dir.join("approval-phone.png"));
        b.resize(1280, 1000);
    }
    let reason = "customer verified by phone; refund justified";
    b.type_into("#reason", reason);
    b.click("#approve");
    b.wait_for(
        "the approval to read approved",
        "const s = document.getElementById('status'); return !!s && s.textContent === 'approved'",
    );
    let story = waiting.join().unwrap();
    let at = |v: &Value, path: &[&str]| -> Value {
        path.iter().fold(v.clone(), |v, k| {
            v.as_object()
                .and_then(|o| o.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        })
    };
    assert_eq!(
        at(&story, &["status"]).as_str(),
        Some("committed"),
        "{story}"
    );
    let steps = at(&story, &["approval", "steps"]);
    let Value::Array(steps) = steps else {
        panic!("{story}")
    };
    assert_eq!(steps.len(), 1);
    assert_eq!(at(&steps[0], &["reason"]).as_str(), Some(reason));
    assert_eq!(at(&steps[0], &["signed_with"]).as_str(), Some("passkey"));

    // A second reviewer, on another device, denies another refund.
    let (_, other) = escalate(&g, "large-2", 150_000, |_| {});
    let bo_link = invite(&g, "rev-bo", &[]);
    b.click("header form button");
    b.wait_for(
        "the sign-in page",
        "return location.pathname === '/console/signin'",
    );
    b.remove_authenticator(&ann_key);
    let bo_key = b.add_authenticator();
    b.open(&bo_link);
    b.click("#enroll");
    b.wait_for(
        "rev-bo's approvals queue",
        "return location.pathname === '/console/approvals'",
    );
    b.open(&page(&format!("/console/approvals/{other}")));
    b.type_into("#reason", "amount above what this customer ever paid");
    b.click("#deny");
    b.wait_for(
        "the approval to read denied",
        "const s = document.getElementById('status'); return !!s && s.textContent === 'denied'",
    );
    let (_, body) = g.get("/v1/intents/agent-demo/large-2");
    let v = parse(&body).unwrap();
    assert_eq!(at(&v, &["status"]).as_str(), Some("denied"), "{v}");

    // The timeline shows the decisions; the entry page the receipt.
    b.open(&page("/console/timeline?kind=approval"));
    let entries = b.text("#entries");
    assert!(
        entries.contains("rev-ann: grant") && entries.contains("rev-bo: deny"),
        "{entries}"
    );
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("timeline.png"));
    }

    // The read-only pages.
    b.open(&page("/console/ledger"));
    assert_eq!(b.text("#head-seq"), g.head_seq().to_string());
    b.open(&page("/console/policies"));
    assert!(b.text("main").contains("refunds@"), "{}", b.text("main"));
    b.open(&page("/console/webhooks"));
    assert!(b.text("main").contains("No endpoint registered"));

    // Executed once; the export verifies and re-decides.
    let export = g.get("/v1/ledger/export").1;
    let executions = export
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| text(l).contains("\"kind\":\"execution\""))
        .count();
    assert_eq!(executions, 1);
    g.assert_export_redecides();

    // Doctored, re-signed with the gateway's own key, the chain rebuilt:
    // one changed byte of a passkey's client data, and an assertion (made
    // with the passkey's own private key) from another origin.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let gw = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let docs = docs_of(&export);
    let position = |verdict: &str| {
        docs.iter()
            .position(|d| {
                get(&d.receipt, &["kind"]).as_str() == Some("approval")
                    && get(&d.receipt, &["subject", "payload", "verdict"]).as_str() == Some(verdict)
            })
            .unwrap()
    };
    let redecide = |docs: &[crate::doctored::Doc]| {
        verify(dir.path(), &rebuild(docs, &gw), &keys, &["--redecide"])
    };
    let (code, _, err) = redecide(&docs);
    assert_eq!(code, 0, "{err}");

    // (The denial: no execution names its receipt id, which re-sealing
    // changes.)
    let mut changed = docs.clone();
    let i = position("deny");
    let cd = at_mut(
        &mut changed[i].receipt,
        &["subject", "assertion", "client_data"],
    );
    let mut bytes = b64_decode(cd.as_str().unwrap()).unwrap();
    let at_challenge = text(&bytes).find("\"challenge\":\"").unwrap() + 13;
    bytes[at_challenge] = if bytes[at_challenge] == b'A' {
        b'B'
    } else {
        b'A'
    };
    *cd = b64(&bytes).into();
    changed[i].signature = None;
    let (code, out, err) = redecide(&changed);
    assert_ne!(code, 0, "{out}");
    let said = format!("{out}{err}");
    assert!(said.contains("passkey assertion is refused"), "{said}");

    let creds = b.credentials(&bo_key);
    let cred = &creds.as_array().unwrap()[0];
    let passkey = SoftPasskey::from_scalar(
        &scalar_of(&b64_decode(cred["privateKey"].as_str().unwrap()).unwrap()),
        b64_decode(cred["credentialId"].as_str().unwrap()).unwrap(),
        "localhost",
    );
    let mut forged = docs.clone();
    let i = position("deny");
    let payload = get(&forged[i].receipt, &["subject", "payload"]);
    let evil = passkey.assert(&approval_challenge(&payload), "https://evil.example");
    // The same passkey over the same decision from the right origin is
    // accepted: only the origin is wrong.
    let good = passkey.assert(&approval_challenge(&payload), &origin);
    for (assertion, ok) in [(good, true), (evil, false)] {
        *at_mut(&mut forged[i].receipt, &["subject", "assertion"]) =
            parse(assertion.to_string().as_bytes()).unwrap();
        forged[i].signature = None;
        let (code, out, err) = redecide(&forged);
        if ok {
            assert_eq!(code, 0, "{out}{err}");
        } else {
            assert_ne!(code, 0, "{out}");
            let said = format!("{out}{err}");
            assert!(
                said.contains("passkey assertion is refused") && said.contains("origin"),
                "{said}"
            );
        }
    }
}

/// Enrolls `passkey` as the reviewer of `link` over HTTP; the answer.
fn enroll(
    g: &Gateway,
    passkey: &SoftPasskey,
    link: &str,
    origin: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = &link[link.find("/console/").unwrap()..];
    let invite = link.split("invite=").nth(1).unwrap();
    let (status, _, page) = call(g, "GET", path, &[], None);
    if status != 200 {
        return call(
            g,
            "POST",
            "/console/enroll",
            &[("origin", origin)],
            Some(&passkey.enrollment(invite, &[0; 32], origin)),
        );
    }
    let challenge = b64_decode(&data_attribute(&text(&page), "challenge")).unwrap();
    call(
        g,
        "POST",
        "/console/enroll",
        &[("origin", origin)],
        Some(&passkey.enrollment(invite, &challenge, origin)),
    )
}

#[test]
fn console_attacks_decide_nothing() {
    let g = Gateway::start();
    let origin = format!("http://localhost:{}", port(&g));
    let o = [("origin", origin.as_str())];
    let (_, a) = escalate(&g, "att-a", 99_900, |_| {});
    let (_, b) = escalate(&g, "att-b", 99_900, |_| {});

    // An enrollment link works once.
    let link = invite(&g, "rev-soft", &[]);
    let soft = SoftPasskey::new(7, "localhost");
    let (status, hs, body) = enroll(&g, &soft, &link, &origin);
    assert_eq!(status, 200, "{}", text(&body));
    let cookie = session_of(&hs);
    let set = header(&hs, "set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let again = SoftPasskey::new(8, "localhost");
    let (status, _, body) = enroll(&g, &again, &link, &origin);
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (409, "invite-used"),
        "{}",
        text(&body)
    );
    // A second reviewer cannot take the first one's credential id (with a
    // key of its own), which would stand in the way of its sign-in.
    let copy_link = invite(&g, "rev-copy", &[]);
    let mut copycat = SoftPasskey::new(11, "localhost");
    copycat.credential_id = soft.credential_id.clone();
    let (status, _, body) = enroll(&g, &copycat, &copy_link, &origin);
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (409, "reviewer-key-registered"),
        "{}",
        text(&body)
    );
    // …and not after its time.
    let short = invite(&g, "rev-late", &["--expires-in", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let (status, _, page) = call(
        &g,
        "GET",
        &short[short.find("/console/").unwrap()..],
        &[],
        None,
    );
    assert_eq!(status, 410);
    assert!(text(&page).contains("expired"));
    let (status, _, body) = enroll(&g, &SoftPasskey::new(9, "localhost"), &short, &origin);
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (410, "invite-expired")
    );
    // An agent is never invited as a reviewer; and a link made before a
    // delegation named the id as an agent's is refused at enrollment.
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["reviewer", "invite", "agent-demo", "--role", "approver"])
        .args(["--url", &g.url, "--admin-token", token.trim()])
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert!(
        !out.status.success() && said.contains("reviewer-is-agent"),
        "{said}"
    );
    let later_link = invite(&g, "agent-later", &[]);
    let agent_key = Ed25519Signer::from_secret(&[12; 32]);
    let token = g.delegation(
        "dlg-later",
        "agent-later",
        agent_key.jwk().to_value(),
        |_| {},
    );
    let registered = g.admin().register_delegation(&token).unwrap();
    assert_eq!(registered.status, 201, "{}", registered.text());
    let (status, _, body) = enroll(&g, &SoftPasskey::new(10, "localhost"), &later_link, &origin);
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (422, "reviewer-is-agent"),
        "{}",
        text(&body)
    );

    let head = g.head_seq();
    // No session: redirected to sign-in, nothing decided.
    let prepare = json!({"verdict": "grant", "reason": "looks fine"});
    for path in [
        format!("/console/approvals/{a}/prepare"),
        format!("/console/approvals/{a}/decide"),
    ] {
        let (status, hs, _) = call(&g, "POST", &path, &o, Some(&prepare));
        assert_eq!((status, header(&hs, "location")), (303, "/console/signin"));
    }
    let (status, hs, _) = call(&g, "GET", "/console/signin", &[], None);
    assert_eq!(status, 200);
    assert!(header(&hs, "content-security-policy").contains("script-src 'self'"));
    // The page's CSRF token, then a cross-site POST with the cookie but
    // without the token, and one from another origin with it.
    let (_, _, page) = call(
        &g,
        "GET",
        "/console/approvals",
        &[("cookie", &cookie)],
        None,
    );
    let page = text(&page);
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(!csrf.is_empty());
    let path = format!("/console/approvals/{a}/prepare");
    let (status, _, body) = call(
        &g,
        "POST",
        &path,
        &[("cookie", &cookie), ("origin", &origin)],
        Some(&prepare),
    );
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (403, "csrf-refused")
    );
    let (status, _, body) = call(
        &g,
        "POST",
        &path,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
        ],
        Some(&prepare),
    );
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (403, "csrf-refused")
    );
    let (status, _, body) = call(
        &g,
        "POST",
        &path,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("sec-fetch-site", "cross-site"),
        ],
        Some(&prepare),
    );
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (403, "csrf-refused")
    );
    assert_eq!(g.head_seq(), head, "a refused request appended");

    // Sign-in: an assertion over a challenge of the gateway's, once.
    let (_, _, page) = call(&g, "GET", "/console/signin", &[], None);
    let challenge = data_attribute(&text(&page), "challenge");
    let mut signin = soft.assert(&b64_decode(&challenge).unwrap(), &origin);
    signin["challenge"] = json!(challenge);
    let (status, hs, body) = call(&g, "POST", "/console/signin", &o, Some(&signin));
    assert_eq!(status, 200, "{}", text(&body));
    let cookie = session_of(&hs);
    let (status, _, body) = call(&g, "POST", "/console/signin", &o, Some(&signin));
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (422, "passkey-refused")
    );
    let (_, _, page) = call(
        &g,
        "GET",
        "/console/approvals",
        &[("cookie", &cookie)],
        None,
    );
    let csrf = text(&page)
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let auth = [
        ("cookie", cookie.as_str()),
        ("x-csrf-token", csrf.as_str()),
        ("origin", origin.as_str()),
    ];

    // A passkey assertion made for approval A, replayed onto B.
    let prepared = |id: &str| {
        let (status, _, body) = call(
            &g,
            "POST",
            &format!("/console/approvals/{id}/prepare"),
            &auth,
            Some(&prepare),
        );
        assert_eq!(status, 200, "{}", text(&body));
        serde_json::from_slice::<Json>(&body).unwrap()
    };
    let pa = prepared(&a);
    let pb = prepared(&b);
    let assertion_a = soft.assert(
        &b64_decode(pa["challenge"].as_str().unwrap()).unwrap(),
        &origin,
    );
    let decide = |id: &str, payload: &Json, assertion: &Json| {
        call(
            &g,
            "POST",
            &format!("/console/approvals/{id}/decide"),
            &auth,
            Some(&json!({"payload": payload, "assertion": assertion})),
        )
    };
    let (status, _, body) = decide(&b, &pb["payload"], &assertion_a);
    assert_eq!(
        (status, problem_slug(&body).as_str()),
        (401, "approval-bad-signature"),
        "{}",
        text(&body)
    );
    // The same through the API, with A's payload: named for A, refused on B.
    let (status, body) = crate::approvals::post_decision(
        &g,
        &b,
        json!({"payload": pa["payload"], "assertion": assertion_a})
            .to_string()
            .as_bytes(),
    );
    assert!(status >= 400, "{}", text(&body));
    assert_eq!(g.head_seq(), head, "a refused decision appended");
    // On A, where it belongs, it counts once.
    let (status, _, body) = decide(&a, &pa["payload"], &assertion_a);
    assert_eq!(status, 201, "{}", text(&body));
    let (status, _, _) = decide(&a, &pa["payload"], &assertion_a);
    assert!(status >= 400);
    // The policies page shows the line difference of two versions.
    let v1 = crate::approvals::policy_of(&g, &a);
    let v2 = g.publish_refunds_variant("1.0.1", |files| {
        let toml = files.get_mut("bundle.toml").unwrap();
        toml.push_str("\n# a reviewed change\n");
    });
    let (status, _, page) = call(
        &g,
        "GET",
        &format!(
            "/console/policies?a={}&b={}",
            v1.replace('+', "%2B"),
            v2.replace('+', "%2B")
        ),
        &[("cookie", cookie.as_str())],
        None,
    );
    let page = text(&page);
    assert_eq!(status, 200);
    assert!(
        page.contains("<span class=\"dadd\">+ # a reviewed change</span>"),
        "{page}"
    );
    // Signing out ends the session: a copy of the cookie is refused.
    let (status, hs, _) = call(
        &g,
        "POST",
        "/console/signout",
        &[("cookie", cookie.as_str()), ("origin", origin.as_str())],
        None,
    );
    assert_eq!((status, header(&hs, "location")), (303, "/console/signin"));
    let (status, hs, _) = call(
        &g,
        "POST",
        &format!("/console/approvals/{b}/prepare"),
        &auth,
        Some(&prepare),
    );
    assert_eq!((status, header(&hs, "location")), (303, "/console/signin"));
    g.assert_export_redecides();
}
