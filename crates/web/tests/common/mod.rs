//! What the browser tests share: a headless Chromium driven over WebDriver
//! (Debian's chromium and chromium-driver; scripts/test installs them), and
//! the few steps every page test takes with it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver process and a headless Chromium session through it.
pub struct Browser {
    driver: Child,
    pub client: Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn program(name: &str, fallbacks: &[&str]) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: the browser tests need Debian's chromium and \
             chromium-driver (scripts/test installs them; or `apt-get install chromium \
             chromium-driver`)"
        )
    })
}

pub async fn browser() -> Browser {
    let driver_path = program("chromedriver", &["/usr/lib/chromium/chromedriver"]);
    let chromium = program("chromium", &["/usr/lib/chromium/chromium"]);
    let port = free_port();
    let driver = Command::new(driver_path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--force-color-profile=srgb",
                "--hide-scrollbars", "--window-size=1280,900", "--lang=en-US",
            ],
        }),
    );
    let deadline = Instant::now() + WAIT;
    let client = loop {
        // Plain HTTP: chromedriver listens on loopback.
        let attempt = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match attempt {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver did not start a session: {e}"),
        }
    };
    Browser { driver, client }
}

pub async fn text_of(c: &Client, css: &str) -> String {
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on {url}: {e}"))
        .text()
        .await
        .expect("element text")
}

/// The element's text as the page is now, or `None` while there is none:
/// for polling across a navigation, where the element found may belong to
/// the page being left and be gone before its text is read.
pub async fn text_now(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

pub async fn fill(c: &Client, css: &str, value: &str) {
    let field = c.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("clearing a field");
    field.send_keys(value).await.expect("typing");
}

/// Submits a form and waits for the page it leads to (a click returns before
/// a slow answer, such as a password being hashed, has arrived).
pub async fn submit(c: &Client, form_css: &str) {
    js(c, "window.beforeSubmit = true; return null;").await;
    c.find(Locator::Css(&format!("{form_css} button[type=submit]")))
        .await
        .expect("a submit button")
        .click()
        .await
        .expect("clicking submit");
    let deadline = Instant::now() + WAIT;
    loop {
        let arrived = c
            .execute(
                "return window.beforeSubmit !== true && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if arrived.is_ok_and(|v| v == json!(true)) {
            return;
        }
        assert!(Instant::now() < deadline, "{form_css} led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn path(c: &Client) -> String {
    c.current_url().await.expect("url").path().to_owned()
}

pub async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.expect("running a script")
}

/// A visitor driven by hand over HTTP: the session cookie and the CSRF token
/// of the last page, as a browser would hold them.
pub struct Visitor {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

impl Visitor {
    pub async fn new(base: &str) -> Visitor {
        let mut v = Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: String::new(),
            csrf: String::new(),
        };
        v.page("/signup").await;
        v
    }

    pub fn keep_cookie(&mut self, resp: &reqwest::Response) {
        if let Some(c) = resp.headers().get("set-cookie") {
            self.cookie = c.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&resp);
        resp
    }

    /// Loads a page and keeps its CSRF token.
    pub async fn page(&mut self, path: &str) -> String {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let html = resp.text().await.unwrap();
        if let Some(token) = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            self.csrf = token.to_owned();
        }
        html
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&resp);
        resp
    }

    pub async fn sign_up(&mut self, email: &str) {
        let csrf = self.csrf.clone();
        let resp = self
            .post(
                "/signup",
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("password", "correct horse battery"),
                ],
            )
            .await;
        assert_eq!(resp.status(), 303, "signed up");
        self.page("/account").await;
    }

    /// Sends the image form with `prompt`, with the form's CSRF token, as
    /// the browser does (multipart).
    pub async fn post_image(&mut self, prompt: &str) -> reqwest::Response {
        self.page("/generate/image").await;
        let body = format!(
            "--X\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n\
             --X\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n{prompt}\r\n--X--\r\n",
            self.csrf
        );
        self.http
            .post(format!("{}/generate/image", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "multipart/form-data; boundary=X")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}
