//! The what-if report as one self-contained HTML page: no script, style or
//! font is fetched from anywhere, so it opens from a file or an attachment.
//! Rows are written here; the page's small script only filters them and
//! opens an intent's details.

use std::fmt::Write as _;

use tollgate_protocol::Value;
use tollgate_sandbox::{Change, Report};

/// Text made safe inside HTML elements and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:80rem}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.muted{color:#59636e} code{font:12px ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #d1d9e0;vertical-align:top}
th{background:#f6f8fa} .num{text-align:right}
.v{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:12px;border:1px solid}
.v-pass{color:#1a7f37;border-color:#1a7f37}.v-block{color:#cf222e;border-color:#cf222e}
.v-escalate{color:#9a6700;border-color:#9a6700}.v-invalid{color:#59636e;border-color:#59636e}
.filters{display:flex;gap:1rem;align-items:center;margin:.5rem 0}
.detail td{background:#fbfcfd} .side{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}
.side h3{font-size:.95rem;margin:.2rem 0} .side ul{margin:.2rem 0;padding-left:1.2rem}
button{font:inherit;cursor:pointer}
"#;

const SCRIPT: &str = r#"
const sel = id => document.getElementById(id);
function apply() {
  const b = sel('f-before').value, a = sel('f-after').value, x = sel('f-action').value;
  let shown = 0, all = 0;
  for (const t of document.querySelectorAll('tbody.change')) {
    all++;
    const ok = (b === '' || t.dataset.before === b) && (a === '' || t.dataset.after === a)
      && (x === '' || t.dataset.action === x);
    t.hidden = !ok;
    if (ok) shown++;
  }
  sel('shown').textContent = shown + ' of ' + all + ' shown';
}
for (const id of ['f-before', 'f-after', 'f-action']) sel(id).addEventListener('change', apply);
for (const btn of document.querySelectorAll('button.toggle')) {
  btn.addEventListener('click', () => {
    const d = btn.closest('tbody').querySelector('tr.detail');
    d.hidden = !d.hidden;
    btn.textContent = d.hidden ? 'details' : 'hide';
    btn.setAttribute('aria-expanded', String(!d.hidden));
  });
}
apply();
"#;

fn verdict(v: &str) -> String {
    format!("<span class=\"v v-{0}\">{0}</span>", esc(v))
}

fn get<'a>(d: &'a Value, k: &str) -> Option<&'a Value> {
    d.as_object().and_then(|o| o.get(k))
}

/// One side of an intent's details: verdict, composite, scores, rules.
fn side(title: &str, policy: &str, d: &Value) -> String {
    let mut s = format!(
        "<div><h3>{} {}</h3><div class=\"muted\"><code>{}</code></div>",
        esc(title),
        verdict(get(d, "verdict").and_then(Value::as_str).unwrap_or("?")),
        esc(policy)
    );
    if let Some(reason) = get(d, "reason").and_then(Value::as_str) {
        let _ = write!(s, "<p>{}</p>", esc(reason));
    }
    if let Some(c) = get(d, "composite").and_then(Value::as_safe_integer) {
        let _ = write!(s, "<p>composite <b>{c}</b> bp</p>");
    }
    if let Some(scores) = get(d, "scores").and_then(Value::as_object)
        && !scores.is_empty()
    {
        s.push_str(
            "<table class=\"scores\"><tr><th>dimension</th><th class=\"num\">score (bp)</th></tr>",
        );
        for (k, v) in scores.iter() {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(k),
                esc(&v.to_string())
            );
        }
        s.push_str("</table>");
    }
    if let Some(Value::Array(critical)) = get(d, "critical")
        && !critical.is_empty()
    {
        let names: Vec<String> = critical.iter().filter_map(Value::as_str).map(esc).collect();
        let _ = write!(s, "<p>critical: {}</p>", names.join(", "));
    }
    match get(d, "rules") {
        Some(Value::Array(rules)) if !rules.is_empty() => {
            s.push_str("<ul class=\"rules\">");
            for r in rules {
                let f = |k: &str| get(r, k).and_then(Value::as_str).unwrap_or_default();
                let _ = write!(
                    s,
                    "<li><b>{}</b> ({}): {}</li>",
                    esc(f("id")),
                    esc(f("effect")),
                    esc(f("reason"))
                );
            }
            s.push_str("</ul>");
        }
        _ => s.push_str("<p class=\"muted\">no rule fired</p>"),
    }
    s.push_str("</div>");
    s
}

fn change(c: &Change) -> String {
    format!(
        "<tbody class=\"change\" data-before=\"{vb}\" data-after=\"{va}\" data-action=\"{a}\">\
<tr class=\"row\"><td class=\"num\">{seq}</td><td><code>{id}</code></td><td>{a}</td><td>{r}</td><td>{agent}</td>\
<td>{before}</td><td>{after}</td><td><button class=\"toggle\" aria-expanded=\"false\">details</button></td></tr>\
<tr class=\"detail\" hidden><td colspan=\"8\"><p>params <code>{params}</code></p><div class=\"side\">{sb}{sa}</div></td></tr></tbody>",
        vb = esc(c.verdict_before()),
        va = esc(c.verdict_after()),
        a = esc(&c.action),
        seq = c.seq,
        id = esc(&c.intent_id),
        r = esc(&c.resource),
        agent = esc(&c.agent),
        before = verdict(c.verdict_before()),
        after = verdict(c.verdict_after()),
        params = esc(&c.params.to_string()),
        sb = side("before", &c.policy_before, &c.before),
        sa = side("after", &c.policy_after, &c.after),
    )
}

fn options(id: &str, label: &str, values: &std::collections::BTreeSet<String>) -> String {
    let mut s = format!("<label>{label} <select id=\"{id}\"><option value=\"\">all</option>");
    for v in values {
        let _ = write!(s, "<option value=\"{0}\">{0}</option>", esc(v));
    }
    s.push_str("</select></label>");
    s
}

/// The report as a page. `source` names the export or intents file.
pub fn page(report: &Report, source: &str, intents: bool) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>Tollgate what-if report</title><style>",
    );
    s.push_str(STYLE);
    s.push_str("</style></head><body><h1>Tollgate what-if report</h1>");
    let _ = write!(
        s,
        "<p class=\"muted\">{} {} from <code>{}</code>.</p>",
        report.decisions,
        if intents {
            "intents decided"
        } else {
            "decisions re-run"
        },
        esc(source)
    );
    s.push_str("<ul>");
    for (before, after) in &report.policies {
        let _ = write!(
            s,
            "<li><code>{}</code> → <code>{}</code></li>",
            esc(before),
            esc(after)
        );
    }
    s.push_str("</ul><h2>Verdicts</h2><table id=\"transitions\"><tr><th>before</th><th>after</th><th class=\"num\">intents</th></tr>");
    for ((from, to), n) in &report.transitions {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{n}</td></tr>",
            verdict(from),
            verdict(to)
        );
    }
    let _ = write!(
        s,
        "</table><p><b id=\"changed\">{}</b> intents change verdict; {} more keep theirs with other rules or scores.</p>",
        report.changed(),
        report.reworded
    );
    if (report.changes.len() as u64) < report.changed() {
        let _ = write!(
            s,
            "<p class=\"muted\">The first {} are listed (--max-changes).</p>",
            report.changes.len()
        );
    }
    let (verdicts, actions) = super::facets(&report.changes);
    s.push_str("<h2>Changed intents</h2><div class=\"filters\">");
    s.push_str(&options("f-before", "before", &verdicts));
    s.push_str(&options("f-after", "after", &verdicts));
    s.push_str(&options("f-action", "action", &actions));
    s.push_str("<span id=\"shown\" class=\"muted\"></span></div>");
    s.push_str("<table id=\"changes\"><thead><tr><th class=\"num\">seq</th><th>intent</th><th>action</th><th>resource</th><th>agent</th><th>before</th><th>after</th><th></th></tr></thead>");
    for c in &report.changes {
        s.push_str(&change(c));
    }
    s.push_str("</table><script>");
    s.push_str(SCRIPT);
    s.push_str("</script></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn markup_in_an_intent_cannot_escape_its_cell() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
