//! Every rule means what it says, on a live gateway: the time rules read is
//! the gateway's, and re-decision reads the same.

use std::path::Path;

use tollgate_protocol::{Timestamp, Value};
use tollgate_tests::gateway::{Gateway, intent, receipt_member, verdict_of};

/// Adds `context.time` to the demo policy's schema and `rule` to its
/// boundary rules.
fn with_time_rule(data: &Path, rule: &str) {
    let policy = data.join("policies/refunds");
    let schema = policy.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    let text = text.replacen(
        "    confidence_bp?: Long,\n",
        "    confidence_bp?: Long,\n    time: { date: String, weekday: String, hour: Long, minute: Long },\n",
        1,
    );
    assert!(text.contains("time: { date"), "{text}");
    std::fs::write(&schema, text).unwrap();
    let boundary = policy.join("boundary.cedar");
    let mut rules = std::fs::read_to_string(&boundary).unwrap();
    rules.push_str(rule);
    std::fs::write(&boundary, rules).unwrap();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Found by the rule hunt: `context.time` was the intent's `issued_at`,
/// which the agent signs and may set up to the skew allowed away from the
/// gateway's clock: backdating moved an intent out of a forbidden hour.
/// Rules now read the gateway's clock, recorded as `inputs.time`, and the
/// export re-decides with it.
#[test]
fn regression_rules_read_the_gateways_clock_not_the_agents_issued_at() {
    // Not in the last seconds of an hour: the hour the rule names must be
    // the hour the gateway decides in.
    let mut now = unix_now();
    if now % 3600 > 3590 {
        std::thread::sleep(std::time::Duration::from_secs((3601 - now % 3600) as u64));
        now = unix_now();
    }
    let hour = now % 86_400 / 3600;
    let rule = format!(
        "\n@id(\"refund.not-this-hour\")\n@reason(\"no refunds at {{time.hour}}h\")\nforbid (principal, action == Action::\"orders.refund\", resource)\nwhen {{ context.time.hour == {hour} }};\n"
    );
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |data| with_time_rule(data, &rule),
        &["--max-skew-seconds", "7200"],
    );
    // Signed as of an hour ago: the agent's hour is not the gateway's.
    let backdated = Timestamp::from_unix_seconds(now - 3600);
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "t-1", "order:o-1001", 2500, |p| {
            p.insert("issued_at", backdated.as_str().into());
        }),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(
        verdict_of(&entry),
        "block",
        "{}",
        String::from_utf8_lossy(&entry)
    );
    assert!(String::from_utf8_lossy(&entry).contains(&format!("no refunds at {hour:02}h")));
    let Value::String(time) = receipt_member(&entry, &["inputs", "time"]) else {
        panic!("no inputs.time: {}", String::from_utf8_lossy(&entry))
    };
    let t = Timestamp::parse(&time).unwrap();
    assert_eq!(
        Timestamp::from_unix_seconds(t.unix_seconds()).as_str(),
        time
    );
    assert!((t.unix_seconds() - now).abs() < 120, "{time}");
    // The export re-decides with the recorded time.
    // Verified with the skew the gateway ran with: its recorded times may
    // be that far from the intents' issued_at.
    g.assert_export_redecides_with(&["--max-skew-seconds", "7200"]);
}
