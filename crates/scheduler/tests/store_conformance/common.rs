//! What the modules of the conformance suite share: a billing day, new jobs,
//! creating them through the plan check, and a transition's change at a time.

use chrono::NaiveDate;
use serde_json::json;

use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::{params, Capability, JobId, Plan, Platform};
use tessera_scheduler::store::{CreateOutcome, JobRecord, NewJob, Store, TransitionChange};

pub fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

pub fn new_job(user: &str, now: i64) -> NewJob {
    NewJob {
        id: JobId::generate(),
        frontend: Platform::Telegram,
        bot_id: "tg-image-bot-1".parse().unwrap(),
        user_ref: user.parse().unwrap(),
        capability: Capability::Image,
        reply_context: Some(json!({"chat_id": 42})),
        idempotency: None,
        request_id: Some("req-conformance".into()),
        callback: None,
        now,
        day: day(),
    }
}

pub async fn create(store: &dyn Store, new: &NewJob, params: serde_json::Value) -> CreateOutcome {
    let catalog = ModelCatalog::default();
    let costs = CostRules::default();
    let validate = |plan: &Plan| params::validate(new.capability, &params, plan, &catalog, &costs);
    store.create_job(new, &validate).await.unwrap()
}

pub async fn created(store: &dyn Store, user: &str, now: i64) -> JobRecord {
    match create(
        store,
        &new_job(user, now),
        json!({"prompt": "a lighthouse"}),
    )
    .await
    {
        CreateOutcome::Created(job) => job,
        other => panic!("expected a created job, got {other:?}"),
    }
}

pub fn at(now: i64) -> TransitionChange {
    TransitionChange {
        now,
        ..Default::default()
    }
}
