//! Adult content on the website, over HTTP as a browser would send it (the
//! session cookie and each page's CSRF token): the real scheduler on both
//! databases and the website as `tessera web` runs it. A `require_nsfw`
//! prompt is refused until the account's owner ticks "I am 18 or older" on
//! the account page; the form needs its token and the tick.

use tessera_chat::secret::Secret;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::Platform;
use tessera_testkit::{backend_tests, Backend, TestApp};
use tessera_web::WebConfig;

const REFUSED: &str = "asks for adult content, which is not allowed here";

/// A visitor: the session cookie and the CSRF token of the last page.
struct Visitor {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Visitor {
    fn keep_cookie(&mut self, resp: &reqwest::Response) {
        if let Some(c) = resp.headers().get("set-cookie") {
            self.cookie = c.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
    }

    /// Loads a page and keeps its CSRF token.
    async fn page(&mut self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&resp);
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

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&resp);
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Asks for an image of `prompt` on the form; the status and the page.
    async fn generate(&mut self, prompt: &str) -> (u16, String) {
        self.page("/generate/image").await;
        let body = format!(
            "--X\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n\
             --X\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n{prompt}\r\n--X--\r\n",
            self.csrf
        );
        let resp = self
            .http
            .post(format!("{}/generate/image", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "multipart/form-data; boundary=X")
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

async fn an_account_confirms_its_age_before_adult_prompts_pass(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.moderation.rules = vec![RuleConfig {
            name: "adult".into(),
            words: vec!["nude".into()],
            action: Action::RequireNsfw,
            ..RuleConfig::empty()
        }];
    })
    .await;
    let web_key = app.key(Platform::Web, "web").await;
    let mut config = WebConfig::new(app.base_url(), Secret::new(web_key.clone()));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cookie_secret = Some(Secret::new("a test secret that is long enough to sign"));
    // Four requests in a row; the rate limit is not under test.
    config.limits.job_burst = 10;
    let web = tessera_web::start(config)
        .await
        .expect("the website starts");
    let mut ada = Visitor {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: web.base_url(),
        cookie: String::new(),
        csrf: String::new(),
    };
    ada.page("/signup").await;
    let csrf = ada.csrf.clone();
    let (status, _) = ada
        .post(
            "/signup",
            &[
                ("csrf", &csrf),
                ("email", "ada@example.org"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(status, 303, "signed up");

    // Before: refused on the form, nothing charged; the account page offers
    // the confirmation.
    let (status, page) = ada.generate("a nude statue").await;
    assert_eq!(status, 422);
    assert!(page.contains(REFUSED), "{page}");
    let account = ada.page("/account").await;
    assert!(account.contains("I am 18 or older"), "{account}");
    assert!(!account.contains("id=\"age-confirmed\""));

    // The form needs its token, and the tick.
    let (status, _) = ada
        .post("/account/age", &[("csrf", "0"), ("adult", "yes")])
        .await;
    assert_eq!(status, 403);
    let csrf = ada.csrf.clone();
    let (status, page) = ada.post("/account/age", &[("csrf", &csrf)]).await;
    assert_eq!(status, 422);
    assert!(page.contains("Tick the box"), "{page}");
    let (status, _) = ada.generate("a nude statue").await;
    assert_eq!(status, 422, "still refused");

    // Confirmed: the account page says so, and the prompt is made.
    ada.page("/account").await;
    let csrf = ada.csrf.clone();
    let (status, page) = ada
        .post("/account/age", &[("csrf", &csrf), ("adult", "yes")])
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"age-confirmed\""), "{page}");
    let (status, _) = ada.generate("a nude statue").await;
    assert_eq!(status, 303, "made, and off to its job page");

    let api = app.client_with(&web_key);
    let jobs = api
        .list_jobs(&tessera_api::public::ListJobsQuery::default())
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 1, "only the confirmed account's job was made");
    let record = app
        .store()
        .get_job(&jobs[0].job_id, None)
        .await
        .unwrap()
        .unwrap();
    assert!(record.adult_allowed);
    web.shutdown().await.expect("the website stops cleanly");
}

backend_tests!(an_account_confirms_its_age_before_adult_prompts_pass);
