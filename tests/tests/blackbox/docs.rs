//! The documentation cannot drift from the behaviour: every code block of
//! README.md and docs/*.md is tagged, and every command block (`sh`) runs
//! as a reader would run it, in order, unless it is marked
//! `sh illustrative` (a production command, a server that never ends, or
//! values the reader substitutes).
//!
//! How a page runs: in a fresh folder that holds links to the repository's
//! `policies/`, `examples/`, `scripts/` and `tests/`, with `tollgate` and
//! `tollgate-verify` on `PATH`. A block tagged `sh server` is started in
//! the background and waited for until it listens; a page without one gets
//! `tollgate serve --demo`, the README's run command, before its first
//! command. The gateway listens on a free port (`TOLLGATE_LISTEN`), which
//! the commands reach through `TOLLGATE_URL` and `$GW`, and which replaces
//! the documented `127.0.0.1:8080`; `cargo run --release -p … --` is the
//! binary it builds. An HTML comment `<!-- docs-test: COMMANDS -->` right
//! before a block runs first, unseen by readers (it makes the files a
//! reader would already have). Each block runs under `bash -euo pipefail`
//! and must exit 0.
//!
//! The same module checks that every `spec §N.M` cited in the code, the
//! fixtures and the docs names a section of docs/spec.md, and that the
//! independent fixtures cite the sections they implement.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollgate_tests::{bin_dir, python};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// One fenced code block of a page.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string's words: the language, then `illustrative` or
    /// `server` for command blocks.
    info: Vec<String>,
    body: String,
    /// The commands of a `<!-- docs-test: … -->` comment right before it.
    prep: Option<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim_start() != "```" {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        i += 1;
        let prep = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .filter(|l| l.trim_end().ends_with("-->"))
            .and_then(|_| {
                let before = lines[..start].join("\n");
                let open = before.rfind("<!-- docs-test:")?;
                let close = before[open..].find("-->")? + open;
                (before[close..].trim() == "-->")
                    .then(|| before[open + "<!-- docs-test:".len()..close].to_owned())
            });
        out.push(Block {
            line: start + 1,
            info: info.split_whitespace().map(str::to_owned).collect(),
            body,
            prep,
        });
    }
    out
}

/// A process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Page {
    name: &'static str,
    work: tempfile::TempDir,
    url: Option<String>,
    servers: Vec<Server>,
}

impl Page {
    fn new(name: &'static str) -> Self {
        let work = tempfile::tempdir().unwrap();
        for dir in ["policies", "examples", "scripts", "tests"] {
            std::os::unix::fs::symlink(repo().join(dir), work.path().join(dir)).unwrap();
        }
        Page {
            name,
            work,
            url: None,
            servers: Vec::new(),
        }
    }

    fn path_var() -> String {
        let py = PathBuf::from(python());
        let mut dirs = vec![bin_dir()];
        if let Some(d) = py.parent().filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_owned());
        }
        let mut path = std::env::join_paths(dirs).unwrap().into_string().unwrap();
        path.push(':');
        path.push_str(&std::env::var("PATH").unwrap_or_default());
        path
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c", script])
            .current_dir(self.work.path())
            .env("PATH", Self::path_var())
            .env("TOLLGATE_LISTEN", "127.0.0.1:0")
            .env_remove("TOLLGATE_DATA_DIR")
            .env_remove("TOLLGATE_ADMIN_TOKEN");
        if let Some(url) = &self.url {
            c.env("TOLLGATE_URL", url).env("GW", url);
        }
        c
    }

    fn rewrite(&self, script: &str) -> String {
        let mut s = script
            .replace(
                "cargo run --release -p tollgate-cli --bin tollgate --",
                "tollgate",
            )
            .replace(
                "cargo run --release -p tollgate-verify --",
                "tollgate-verify",
            );
        if let Some(url) = &self.url {
            s = s.replace("http://127.0.0.1:8080", url);
        }
        s
    }

    /// Starts `script` (one long-running command) and waits until it
    /// prints `listening on URL`.
    fn serve(&mut self, script: &str, at: usize) {
        let mut child = self
            .command(&format!("exec {}", self.rewrite(script).trim()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                panic!("{}:{at}: the server exited before listening", self.name);
            };
            if let Some(url) = line.unwrap().strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        self.servers.push(Server(child));
        self.url = Some(url);
    }

    /// Runs `script`; it must exit 0, and every line of it that reads
    /// `#  TEXT` (shown output) must be a line of what it printed, `…`
    /// standing for any text.
    fn run(&self, script: &str, at: usize) {
        let out = self
            .command(&format!(
                "timeout 120 bash -euo pipefail -c {}",
                shell_quote(&self.rewrite(script))
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let context = || {
            format!(
                "{}:{at}:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                self.name
            )
        };
        assert!(
            out.status.success(),
            "the block failed ({}): {}",
            out.status,
            context()
        );
        for shown in script
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("#  "))
        {
            assert!(
                stdout
                    .lines()
                    .chain(stderr.lines())
                    .any(|l| matches(shown, l)),
                "the block does not print {shown:?}: {}",
                context()
            );
        }
    }
}

/// Whether `line` is `pattern`, each `…` in it standing for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.trim_end().strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Languages of blocks that are not commands.
const NOT_COMMANDS: &[&str] = &["json", "toml", "cedar", "python", "text"];

/// Runs page `name`; returns how many command blocks ran.
fn run_page(name: &'static str) -> usize {
    let text = std::fs::read_to_string(repo().join(name)).unwrap();
    let mut page = Page::new(name);
    let mut ran = 0;
    for b in blocks(&text) {
        let lang = b.info.first().map(String::as_str).unwrap_or("");
        if NOT_COMMANDS.contains(&lang) {
            continue;
        }
        assert_eq!(
            lang, "sh",
            "{name}:{}: a code block tagged {lang:?}: tag it sh (a command), sh illustrative, or one of {NOT_COMMANDS:?}",
            b.line
        );
        let mode = b.info.get(1).map(String::as_str);
        match mode {
            Some("illustrative") => continue,
            Some("server") => {
                page.serve(&b.body, b.line);
                continue;
            }
            None => {}
            Some(other) => panic!("{name}:{}: unknown block mode {other:?}", b.line),
        }
        if page.url.is_none() {
            page.serve("tollgate serve --demo", b.line);
        }
        if let Some(prep) = &b.prep {
            page.run(prep, b.line);
        }
        page.run(&b.body, b.line);
        ran += 1;
    }
    ran
}

macro_rules! pages {
    ($($test:ident: $file:literal runs $count:literal;)*) => {
        $(
            #[test]
            fn $test() {
                let ran = run_page($file);
                assert_eq!(ran, $count, "{}: command blocks run (a block marked illustrative, or one more that runs: change the count here)", $file);
            }
        )*

        #[test]
        fn every_page_is_run() {
            let mut listed = vec![$($file),*];
            listed.sort_unstable();
            let mut pages = vec!["README.md".to_owned()];
            for e in std::fs::read_dir(repo().join("docs")).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".md") {
                    pages.push(format!("docs/{name}"));
                }
            }
            pages.sort_unstable();
            assert_eq!(listed, pages, "a page is missing from this test's list");
        }
    };
}

pages! {
    readme: "README.md" runs 2;
    agents: "docs/agents.md" runs 4;
    approvals: "docs/approvals.md" runs 0;
    architecture: "docs/architecture.md" runs 0;
    console: "docs/console.md" runs 0;
    gateway: "docs/gateway.md" runs 0;
    performance: "docs/performance.md" runs 1;
    policies: "docs/policies.md" runs 6;
    sandbox: "docs/sandbox.md" runs 5;
    spec: "docs/spec.md" runs 0;
    verifying: "docs/verifying.md" runs 1;
    webhooks: "docs/webhooks.md" runs 0;
}

/// The sections of docs/spec.md: `N` for `## N.` and `N.M` for `### N.M`.
fn spec_sections() -> Vec<String> {
    std::fs::read_to_string(repo().join("docs/spec.md"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("### ").or_else(|| l.strip_prefix("## "))?;
            let num = rest.split_whitespace().next()?.trim_end_matches('.');
            num.chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                .then(|| num.to_owned())
        })
        .collect()
}

/// Every `spec §N[.M]` cited in `text`, with the `§N.M` that follow it in
/// a list ("spec §2.1, §2.3 and §4.4").
fn citations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("spec §") {
        let mut rest = &text[i + "spec §".len()..];
        loop {
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let cited = num.trim_end_matches('.');
            if cited.is_empty() {
                break;
            }
            out.push(cited.to_owned());
            rest = &rest[num.len()..];
            let Some(next) = [", and §", ", §", " and §"]
                .iter()
                .find_map(|sep| rest.strip_prefix(sep))
            else {
                break;
            };
            rest = next;
        }
    }
    out
}

fn files_under(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type().unwrap().is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                files_under(&p, ext, out);
            }
        } else if ext.iter().any(|x| name.ends_with(x)) {
            out.push(p);
        }
    }
}

#[test]
fn every_spec_section_cited_exists() {
    let sections = spec_sections();
    assert!(sections.len() > 40, "{sections:?}");
    let mut files = Vec::new();
    files_under(&repo(), &[".rs", ".py", ".md", ".json"], &mut files);
    let mut cited = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for c in citations(&text) {
            cited += 1;
            assert!(
                sections.contains(&c),
                "{}: cites spec §{c}, which docs/spec.md does not have",
                f.display()
            );
        }
    }
    assert!(cited > 50, "only {cited} citations found");
}

#[test]
fn the_independent_fixtures_cite_the_spec_for_their_rules() {
    // Each rule they implement carries a citation; these are the sections
    // each must cover, so that a rule without one shows as a gap.
    let must = [
        (
            "sdk/python/src/tollgate/verify.py",
            &[
                "1.3", "1.4", "1.5", "1.6", "2.1", "2.2", "2.3", "4.4", "5.1", "5.2", "5.3", "5.4",
            ][..],
        ),
        (
            "sdk/python/src/tollgate/checkpoints.py",
            &["6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7"][..],
        ),
        (
            "tests/fixtures/check_checkpoints.py",
            &["5.3", "6.5", "6.7"][..],
        ),
        (
            "tests/fixtures/make_export.py",
            &[
                "1.3", "1.4", "1.5", "1.6", "2.1", "2.2", "2.3", "3.2", "4.1", "4.4", "5.1", "5.2",
                "5.3",
            ][..],
        ),
    ];
    for (file, sections) in must {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let cited = citations(&text);
        for s in sections {
            assert!(cited.iter().any(|c| c == s), "{file} cites no spec §{s}");
        }
    }
}

#[test]
fn citations_are_read_with_their_lists() {
    assert_eq!(
        citations("see spec §5.4 steps 8 and 9, and spec §2.1, §2.3 and §4.4."),
        ["5.4", "2.1", "2.3", "4.4"]
    );
    assert_eq!(citations("(spec §6)."), ["6"]);
}

#[test]
fn shown_output_matches_with_ellipses() {
    assert!(matches(
        "valid: refunds@1.0.0+sha256:3d9c…a775 (1 action)",
        "valid: refunds@1.0.0+sha256:3d9cabcda775 (1 action)"
    ));
    assert!(!matches(
        "valid: refunds@1.0.0+sha256:3d9c…a775 (1 action)",
        "valid: refunds@1.0.0+sha256:c8c1abcde1b1 (1 action)"
    ));
    assert!(matches("a … b … c", "a x b y c"));
    assert!(!matches("a … b", "a x b extra"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
}

#[test]
fn blocks_are_read_with_their_info_and_preparation() {
    let page =
        "text\n\n<!-- docs-test: touch a -->\n```sh\nls a\n```\n\n```sh illustrative\nx\n```\n";
    let b = blocks(page);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].line, 4);
    assert_eq!(b[0].info, ["sh"]);
    assert_eq!(b[0].prep.as_deref(), Some(" touch a "));
    assert_eq!(b[0].body, "ls a\n");
    assert_eq!(b[1].info, ["sh", "illustrative"]);
    assert_eq!(b[1].prep, None);
}
