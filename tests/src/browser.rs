//! A real, headless Chromium driven over the W3C WebDriver protocol by
//! Debian's ChromeDriver (`chromium-driver`; `scripts/test.sh` installs
//! both). Plain HTTP and JSON: no browser automation library.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A ChromeDriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Browser {
    /// Starts ChromeDriver (`TOLLGATE_CHROMEDRIVER`, default
    /// `/usr/bin/chromedriver`) and a headless Chromium
    /// (`TOLLGATE_CHROMIUM`, default `/usr/bin/chromium`) with a new,
    /// empty profile and no background network traffic.
    pub fn start() -> Self {
        let driver_path = std::env::var("TOLLGATE_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium =
            std::env::var("TOLLGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        // Port 0: it takes a free port and says which ("ChromeDriver was
        // started successfully on port N."), so no other process can take
        // it first.
        let mut driver = Command::new(&driver_path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{driver_path}: {e} (install Debian's chromium and chromium-driver)")
            });
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read on a thread, which keeps reading so it never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        let port: u16 = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not say its port: {}", said.join("\n"));
            };
            if let Some(p) = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|p| p.trim().trim_end_matches('.').parse().ok())
            {
                break p;
            }
            said.push(line);
        };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = agent().get(&format!("{base}/status")).call()
                && serde_json::from_slice::<Value>(&r.body_mut().read_to_vec().unwrap())
                    .is_ok_and(|v| v["value"]["ready"] == json!(true))
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap().to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut resp = match method {
            "GET" => agent().get(&url).call(),
            _ => agent()
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let v: Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The element `css` selects (the first one).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.at("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    /// Clicks the element `css` selects, as a user would.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    /// Whether the element `css` selects is displayed.
    pub fn displayed(&self, css: &str) -> bool {
        let id = self.find(css);
        self.call("GET", &self.at(&format!("/element/{id}/displayed")), None)
            .as_bool()
            .unwrap()
    }

    /// The rendered text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &self.at(&format!("/element/{id}/text")), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits (up to 30 s) until `script` (a function body) returns `true`.
    pub fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(script) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {what}; the page says: {}",
                self.eval("return document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call("GET", &self.at("/screenshot"), None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Sets the window's size, in CSS pixels.
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.at("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Adds a WebAuthn virtual authenticator (CTAP2, built in, resident
    /// keys, user verification that always succeeds) and returns its id:
    /// the browser's passkey from then on.
    pub fn add_authenticator(&self) -> String {
        self.call(
            "POST",
            &self.at("/webauthn/authenticator"),
            Some(json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true
            })),
        )
        .as_str()
        .unwrap()
        .to_owned()
    }

    /// Removes a virtual authenticator (its passkeys go with it).
    pub fn remove_authenticator(&self, id: &str) {
        let url = format!(
            "{}{}",
            self.base,
            self.at(&format!("/webauthn/authenticator/{id}"))
        );
        let status = agent().delete(&url).call().unwrap().status().as_u16();
        assert_eq!(status, 200, "removing authenticator {id}");
    }

    /// The browser's cookies, as WebDriver describes them.
    pub fn cookies(&self) -> Value {
        self.call("GET", &self.at("/cookie"), None)
    }

    /// The credentials a virtual authenticator holds (WebDriver's
    /// `Credential` objects: `credentialId`, `privateKey` as PKCS#8, …).
    pub fn credentials(&self, authenticator: &str) -> Value {
        self.call(
            "GET",
            &self.at(&format!(
                "/webauthn/authenticator/{authenticator}/credentials"
            )),
            None,
        )
    }
}
