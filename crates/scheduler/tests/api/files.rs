//! Download links: a frontend that may read an output gets a signed link to
//! it; a web key redeems it without any say over the job; a forged, altered
//! or expired link is refused with its own code.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use tessera_api::public::JobView;
use tessera_api::Client;
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::{backend_tests, Backend};

use crate::common::*;

async fn completed(client: &Client, job: &tessera_core::JobId) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = client.get_job(job).await.unwrap();
        if job.status == JobState::Completed {
            return job;
        }
        assert!(Instant::now() < deadline, "never completed: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn download_links_work_once_signed_and_expire(backend: Backend) {
    let app = tessera_testkit::TestApp::spawn_with(backend, |c| {
        c.artifacts.link_lifetime_secs = 3;
    })
    .await;
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let demo = app.frontend(Platform::Web, DEMO).await;
    let created = tg
        .create_job(&tg_job("telegram:7", prompt("a fox")), None)
        .await
        .unwrap();
    let job = completed(&tg, &created.job.job_id).await;
    let artifact = &job.artifacts[0];
    let original = tg.download(&artifact.url).await.unwrap();

    let before = chrono::Utc::now();
    let link = tg
        .create_download_link(&artifact.artifact_id)
        .await
        .unwrap();
    assert_eq!(link.path, format!("/d/{}", link.token));
    let lifetime = (link.expires_at - before).num_seconds();
    assert!((2..=4).contains(&lifetime), "expires in {lifetime} s");

    // Any web key redeems it, whoever made the job: the signature is the
    // permission. The bytes are the artifact's, and ranges work.
    for redeemer in [&web, &demo] {
        let got = redeemer
            .fetch_download_link(&link.token, None)
            .await
            .unwrap();
        assert_eq!(got.headers()["content-type"].to_str().unwrap(), "image/png");
        assert_eq!(got.bytes().await.unwrap().to_vec(), original);
    }
    let part = web
        .fetch_download_link(&link.token, Some("bytes=0-3"))
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().to_vec(), original[..4].to_vec());

    // Only the website redeems links.
    api_error(
        tg.fetch_download_link(&link.token, None).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    // Links are made only for outputs the key may read.
    api_error(
        dc.create_download_link(&artifact.artifact_id).await,
        StatusCode::NOT_FOUND,
        "artifact_not_found",
    );
    api_error(
        web.create_download_link(&artifact.artifact_id).await,
        StatusCode::NOT_FOUND,
        "artifact_not_found",
    );
    api_error(
        tg.create_download_link(&tessera_core::ArtifactId::generate())
            .await,
        StatusCode::NOT_FOUND,
        "artifact_not_found",
    );

    // Altered: another signature digit, a later expiry, another artifact, cut short.
    let (id, rest) = link.token.split_once('.').unwrap();
    let (expiry, signature) = rest.split_once('.').unwrap();
    let mut flipped = signature.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let later: u64 = expiry.parse::<u64>().unwrap() + 86_400_000;
    let other = tessera_core::ArtifactId::generate();
    for forged in [
        format!("{id}.{expiry}.{flipped}"),
        format!("{id}.{later}.{signature}"),
        format!("{other}.{expiry}.{signature}"),
        link.token[..link.token.len() - 1].to_owned(),
        "nonsense".to_owned(),
    ] {
        api_error(
            web.fetch_download_link(&forged, None).await,
            StatusCode::FORBIDDEN,
            "download_link_invalid",
        );
    }
    // The same on the wire, past the client's own check.
    let key = app.key(Platform::Web, "web-2").await;
    send(raw(&app, Method::GET, "/api/v1/download-links/a%2Fb.1.00").bearer_auth(&key))
        .await
        .error(StatusCode::FORBIDDEN, "download_link_invalid");
    send(raw(
        &app,
        Method::GET,
        &format!("/api/v1/download-links/{}", link.token),
    ))
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Past its lifetime: gone, with its own code.
    let wait = (link.expires_at - chrono::Utc::now()).num_milliseconds() + 1_100;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    api_error(
        web.fetch_download_link(&link.token, None).await,
        StatusCode::GONE,
        "download_link_expired",
    );
    // A new link works again.
    let fresh = tg
        .create_download_link(&artifact.artifact_id)
        .await
        .unwrap();
    assert!(web.fetch_download_link(&fresh.token, None).await.is_ok());
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

backend_tests!(download_links_work_once_signed_and_expire);
