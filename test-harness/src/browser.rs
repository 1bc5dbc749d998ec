//! A real headless Chromium for browser tests, driven over the W3C WebDriver protocol (plain JSON
//! over HTTP) by Debian's `chromedriver`. Each [`Browser`] runs its own driver on a free port, in a
//! process group of its own that is killed when the browser is dropped, so a failing test leaves no
//! Chromium behind.
//!
//! Only what the tests need is here: open a page, find elements by CSS selector (waiting for them),
//! click, type, read text and attributes, run a script.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The environment variable naming the chromedriver binary (default: `chromedriver` on PATH).
pub const CHROMEDRIVER_ENV: &str = "CHROMEDRIVER";
/// The environment variable naming the Chromium binary (default: `/usr/bin/chromium`).
pub const CHROMIUM_ENV: &str = "CHROMIUM";

/// How long [`Browser::find`] waits for an element by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);
/// WebDriver's error code for an element the page has since removed from its document.
const STALE_ELEMENT: &str = "stale element reference";

/// The key WebDriver identifies element references by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Fails with what to install when
    /// either is missing.
    pub async fn start() -> anyhow::Result<Self> {
        let chromedriver =
            std::env::var(CHROMEDRIVER_ENV).unwrap_or_else(|_| "chromedriver".to_owned());
        let chromium =
            std::env::var(CHROMIUM_ENV).unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("cannot start {chromedriver}; install Debian's chromium and chromium-driver (ops/prerequisites.sh does)")
            })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("chromedriver did not answer on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"],
                },
            }},
        });
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await?
            .json()
            .await?;
        let Some(id) = created["value"]["sessionId"].as_str() else {
            bail!("chromedriver did not create a session: {created}");
        };
        Ok(Self {
            session: format!("{base}/session/{id}"),
            http,
            driver,
        })
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "url", json!({ "url": url })).await?;
        Ok(())
    }

    /// The address of the current page.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let value = self.command("GET", "url", Value::Null).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The current page's HTML as the browser holds it now.
    pub async fn source(&self) -> anyhow::Result<String> {
        let value = self.command("GET", "source", Value::Null).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching `css`, waiting up to [`DEFAULT_WAIT`] for it to appear.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        self.wait_for(css, DEFAULT_WAIT).await
    }

    /// The first element matching `css`, waiting up to `timeout` for it to appear.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element<'_>> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.try_find(css).await? {
                return Ok(element);
            }
            if started.elapsed() > timeout {
                bail!(
                    "no element matches {css:?} after {timeout:?} on {}",
                    self.current_url().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`, waiting up to `timeout` for it. A page that
    /// re-renders the element between finding and clicking (a live fragment replaced by its newer
    /// rendering) gets it found again, as a person would click the button they now see.
    pub async fn click_when_ready(&self, css: &str, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let element = self
                .wait_for(css, timeout.saturating_sub(started.elapsed()))
                .await?;
            match element.click().await {
                Err(error)
                    if error.to_string().contains(STALE_ELEMENT) && started.elapsed() < timeout => {
                }
                outcome => return outcome,
            }
        }
    }

    /// Waits until the text of the page's `body` contains `needle`, and returns that text.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let text = self.find("body").await?.text().await?;
            if text.contains(needle) {
                return Ok(text);
            }
            if started.elapsed() > timeout {
                bail!("the page never showed {needle:?} within {timeout:?}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every element matching `css`, now.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element<'_>>> {
        let found = self
            .command(
                "POST",
                "elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element[ELEMENT_KEY].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_owned(),
            })
            .collect())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Ends the session and the browser.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
        Ok(())
    }

    async fn try_find(&self, css: &str) -> anyhow::Result<Option<Element<'_>>> {
        Ok(self.find_all(css).await?.into_iter().next())
    }

    /// Sends one WebDriver command relative to the session and returns its `value`, or the
    /// driver's error.
    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await?;
        let status = response.status();
        let reply: Value = response.json().await?;
        if !status.is_success() {
            bail!(
                "WebDriver {method} {path} failed ({status}): {} {}",
                reply["value"]["error"],
                reply["value"]["message"]
            );
        }
        Ok(reply["value"].clone())
    }
}

impl Drop for Browser {
    /// Chromium runs as chromedriver's child: kill the whole group, not only the driver.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Element<'_> {
    pub async fn click(&self) -> anyhow::Result<()> {
        self.command("POST", "click", json!({})).await?;
        Ok(())
    }

    /// Types `text` into the element (after what it holds).
    pub async fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.command("POST", "value", json!({ "text": text }))
            .await?;
        Ok(())
    }

    /// Empties an input.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.command("POST", "clear", json!({})).await?;
        Ok(())
    }

    /// The element's rendered text.
    pub async fn text(&self) -> anyhow::Result<String> {
        let value = self.command("GET", "text", Value::Null).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute or property of the element, if it has one.
    pub async fn attribute(&self, name: &str) -> anyhow::Result<Option<String>> {
        let value = self
            .command("GET", &format!("attribute/{name}"), Value::Null)
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        self.browser
            .command(method, &format!("element/{}/{path}", self.id), body)
            .await
    }
}
