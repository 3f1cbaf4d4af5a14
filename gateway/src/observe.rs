//! Metrics (Prometheus text format) and structured request logs.
//!
//! Logs are one JSON object per intent request on standard error when it
//! is not a terminal, a readable line when it is: time, request id, W3C
//! trace id (from `traceparent`), agent, action, verdict or problem
//! status, latency. Never keys, signatures or params.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_protocol::{Object, Value};

/// Upper bounds of the latency histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}\n"
            ));
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        out.push_str(&format!(
            "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}\n"
        ));
        out.push_str(&format!(
            "{name}_sum{{{}}} {}\n",
            labels.trim_end_matches(','),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!(
            "{name}_count{{{}}} {cumulative}\n",
            labels.trim_end_matches(',')
        ));
    }
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    approvals: Mutex<BTreeMap<&'static str, u64>>,
    /// Time in the pure pipeline.
    pub decide: Histogram,
    /// Time signing and appending (durable).
    pub append: Histogram,
    /// Whole `POST /v1/intents`.
    pub request: Histogram,
    /// Reservations recovery could not finish.
    unfinished: AtomicU64,
    /// Decisions the ledger found stale, decided again.
    stale: AtomicU64,
    /// Reloads of the registries from the ledger.
    reloads: AtomicU64,
    /// Size of the last checkpoint this server made.
    checkpoint_size: AtomicU64,
    /// Checkpoints that could not be made (a ledger or key failure).
    checkpoint_failures: AtomicU64,
    /// Cosignatures a configured witness did not give.
    cosignatures_missed: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_insert(0) += 1;
        }
    }

    /// Sets how many reservations could not be finished.
    pub fn unfinished(&self, n: usize) {
        self.unfinished.store(n as u64, Ordering::Relaxed);
    }

    /// Counts a decision the ledger found stale.
    pub fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reload of the registries.
    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a checkpoint made, and the witnesses that did not cosign it.
    pub fn checkpoint(&self, size: u64, missed: usize) {
        self.checkpoint_size.store(size, Ordering::Relaxed);
        self.cosignatures_missed
            .fetch_add(missed as u64, Ordering::Relaxed);
    }

    /// Counts a checkpoint that could not be made.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision.
    pub fn decision(&self, verdict: &'static str) {
        if let Ok(mut m) = self.decisions.lock() {
            *m.entry(verdict).or_insert(0) += 1;
        }
    }

    /// Counts `n` approval steps that left an approval in `status`.
    pub fn approval(&self, status: &'static str, n: u64) {
        if let Ok(mut m) = self.approvals.lock() {
            *m.entry(status).or_insert(0) += n;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, head: u64, groups: u64, appends: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP tollgate_http_requests_total HTTP requests answered, by route and status.\n# TYPE tollgate_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                out.push_str(&format!(
                    "tollgate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP tollgate_decisions_total Decisions made, by verdict.\n# TYPE tollgate_decisions_total counter\n");
        if let Ok(m) = self.decisions.lock() {
            for (verdict, n) in m.iter() {
                out.push_str(&format!(
                    "tollgate_decisions_total{{verdict=\"{verdict}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP tollgate_approval_steps_total Approval receipts appended, by the approval's status after them.\n# TYPE tollgate_approval_steps_total counter\n");
        if let Ok(m) = self.approvals.lock() {
            for (status, n) in m.iter() {
                out.push_str(&format!(
                    "tollgate_approval_steps_total{{status=\"{status}\"}} {n}\n"
                ));
            }
        }
        out.push_str(&format!(
            "# HELP tollgate_stale_decisions_total Decisions refused at append as made on state another gateway had changed, and decided again.\n# TYPE tollgate_stale_decisions_total counter\ntollgate_stale_decisions_total {}\n",
            self.stale.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP tollgate_registry_reloads_total Reloads of the registries from the ledger.\n# TYPE tollgate_registry_reloads_total counter\ntollgate_registry_reloads_total {}\n",
            self.reloads.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tollgate_stage_seconds Time per stage.\n# TYPE tollgate_stage_seconds histogram\n");
        self.decide
            .render("tollgate_stage_seconds", "stage=\"decide\",", &mut out);
        self.append
            .render("tollgate_stage_seconds", "stage=\"sign_append\",", &mut out);
        self.request
            .render("tollgate_stage_seconds", "stage=\"request\",", &mut out);
        out.push_str(&format!(
            "# HELP tollgate_ledger_head Sequence number of the last ledger entry.\n# TYPE tollgate_ledger_head gauge\ntollgate_ledger_head {head}\n\
             # HELP tollgate_ledger_append_groups_total Write transactions committed (group commit).\n# TYPE tollgate_ledger_append_groups_total counter\ntollgate_ledger_append_groups_total {groups}\n\
             # HELP tollgate_ledger_appends_total Entries appended; divided by groups, the mean batch size.\n# TYPE tollgate_ledger_appends_total counter\ntollgate_ledger_appends_total {appends}\n\
             # HELP tollgate_reservations_unfinished Upstream commits not finished yet: left by a crash, or waiting for an unknown outcome to be reconciled.\n# TYPE tollgate_reservations_unfinished gauge\ntollgate_reservations_unfinished {}\n\
             # HELP tollgate_log_lines_lost_total Log lines standard error did not take (a full disk, a closed pipe).\n# TYPE tollgate_log_lines_lost_total counter\ntollgate_log_lines_lost_total {}\n",
            self.unfinished.load(Ordering::Relaxed),
            LOG_LINES_LOST.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP tollgate_checkpoint_size Entries covered by the last checkpoint this server signed.\n# TYPE tollgate_checkpoint_size gauge\ntollgate_checkpoint_size {}\n\
             # HELP tollgate_checkpoint_failures_total Checkpoints that could not be made (ledger or key failure).\n# TYPE tollgate_checkpoint_failures_total counter\ntollgate_checkpoint_failures_total {}\n\
             # HELP tollgate_witness_cosignatures_missed_total Cosignatures a configured witness did not give (down, slow, or refusing).\n# TYPE tollgate_witness_cosignatures_missed_total counter\ntollgate_witness_cosignatures_missed_total {}\n",
            self.checkpoint_size.load(Ordering::Relaxed),
            self.checkpoint_failures.load(Ordering::Relaxed),
            self.cosignatures_missed.load(Ordering::Relaxed)
        ));
        out
    }
}

/// The trace id of a valid W3C `traceparent` header.
pub fn trace_id(traceparent: Option<&str>) -> Option<String> {
    let t = traceparent?;
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    (parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2))
    .then(|| parts[1].to_owned())
}

/// One log record.
#[derive(Default)]
pub struct LogLine {
    /// Request id.
    pub request_id: String,
    /// W3C trace id.
    pub trace_id: Option<String>,
    /// The agent, once known.
    pub agent: Option<String>,
    /// The action, once known.
    pub action: Option<String>,
    /// The verdict, for a decision.
    pub verdict: Option<&'static str>,
    /// The route's name, as in the metrics.
    pub route: &'static str,
    /// For a 500: the cause, logged here and never sent to the caller.
    pub error: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// Milliseconds.
    pub latency_ms: f64,
}

impl LogLine {
    /// Writes the record to standard error.
    pub fn emit(&self, time: &str) {
        if std::io::stderr().is_terminal() {
            write_line(format_args!(
                "{time} {} {} {} {} {} {} {:.2} ms{}",
                self.route,
                self.status,
                self.verdict.unwrap_or("-"),
                self.agent.as_deref().unwrap_or("-"),
                self.action.as_deref().unwrap_or("-"),
                self.request_id,
                self.latency_ms,
                self.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" error: {e}"))
            ));
            return;
        }
        let mut o = Object::new();
        o.insert("time", time.into());
        o.insert("request_id", self.request_id.clone().into());
        if let Some(t) = &self.trace_id {
            o.insert("trace_id", t.clone().into());
        }
        if let Some(a) = &self.agent {
            o.insert("agent", a.clone().into());
        }
        if let Some(a) = &self.action {
            o.insert("action", a.clone().into());
        }
        if let Some(v) = self.verdict {
            o.insert("verdict", v.into());
        }
        if !self.route.is_empty() {
            o.insert("route", self.route.into());
        }
        if let Some(e) = &self.error {
            o.insert("error", e.clone().into());
        }
        o.insert(
            "status",
            Value::integer(i64::from(self.status)).unwrap_or(Value::Null),
        );
        o.insert(
            "latency_ms",
            Value::Number((self.latency_ms * 1000.0).round() / 1000.0),
        );
        write_line(format_args!("{}", Value::Object(o)));
    }
}

/// Writes a record of a background task's event to standard error, in the
/// format of the request log: `what` and its fields.
pub fn event(time: &str, what: &str, fields: &[(&str, String)]) {
    if std::io::stderr().is_terminal() {
        let rest: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write_line(format_args!("{time} {what} {}", rest.join(" ")));
        return;
    }
    let mut o = Object::new();
    o.insert("time", time.into());
    o.insert("event", what.into());
    for (k, v) in fields {
        o.insert(*k, v.clone().into());
    }
    write_line(format_args!("{}", Value::Object(o)));
}

/// Log lines standard error did not take (a full disk under a redirected
/// log, a closed pipe).
static LOG_LINES_LOST: AtomicU64 = AtomicU64::new(0);

/// Writes one log line to standard error. A line that cannot be written
/// is counted (`tollgate_log_lines_lost_total`), never a panic: a full
/// disk under the log must not cost a request its answer.
fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    if writeln!(err, "{line}").is_err() {
        LOG_LINES_LOST.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_honoured_only_when_valid() {
        assert_eq!(
            trace_id(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ))
            .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            assert_eq!(trace_id(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.decide.observe(0.0003);
        m.decide.observe(0.002);
        m.decision("pass");
        m.request("intents", 200);
        let text = m.render(7, 2, 3);
        assert!(
            text.contains("tollgate_stage_seconds_bucket{stage=\"decide\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tollgate_stage_seconds_bucket{stage=\"decide\",le=\"0.0025\"} 2\n"));
        assert!(text.contains("tollgate_stage_seconds_count{stage=\"decide\"} 2\n"));
        assert!(text.contains("tollgate_decisions_total{verdict=\"pass\"} 1\n"));
        assert!(
            text.contains("tollgate_http_requests_total{route=\"intents\",status=\"200\"} 1\n")
        );
        assert!(text.contains("tollgate_ledger_head 7\n"));
    }
}
