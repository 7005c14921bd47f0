//! The Discord stand-in sells premium app subscriptions as Discord's
//! Monetization documentation describes: SKUs and entitlements over REST
//! (read here with twilight-http, the client Tessera's bot uses), the
//! gateway dispatches that follow an entitlement (read with
//! twilight-gateway), the entitlements each interaction carries, and premium
//! buttons in messages.

mod common;

use futures::StreamExt as _;
use serde_json::{json, Value};
use twilight_gateway::{Event, Message, Shard};
use twilight_http::request::application::monetization::CreateTestEntitlementOwner;
use twilight_model::application::monetization::EntitlementType;
use twilight_model::id::Id;

use tessera_testkit::standins::discord::{DiscordOptions, SKU_CONSUMABLE, SKU_SUBSCRIPTION};

use common::discord::{
    api_error, client, next, register, shard, standin_with_bot, APP, CHANNEL, TOKEN, USER, WAIT,
};

const OTHER_USER: u64 = USER + 7;

fn ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `d` of the next dispatch named `t`, read as raw JSON: twilight-model
/// 0.18 parses ENTITLEMENT_CREATE but not ENTITLEMENT_UPDATE or
/// ENTITLEMENT_DELETE.
async fn next_dispatch(shard: &mut Shard, t: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match shard.next().await {
                Some(Ok(Message::Text(text))) => {
                    let payload: Value = serde_json::from_str(&text).unwrap();
                    if payload["op"] == 0 && payload["t"] == t {
                        return payload["d"].clone();
                    }
                }
                Some(_) => {}
                None => panic!("the shard ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {t} within the wait"))
}

fn id_of(value: &Value) -> u64 {
    value["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn skus_and_entitlements_are_listed_and_filtered() {
    let standin = standin_with_bot(DiscordOptions {
        route_limit: 50,
        ..DiscordOptions::default()
    })
    .await;
    let http = client(&standin, TOKEN);
    let starter = standin.add_sku(APP, SKU_SUBSCRIPTION, "STARTER");
    let pro = standin.add_sku(APP, SKU_SUBSCRIPTION, "PRO");

    // twilight's Sku keeps its fields private: read the JSON.
    let response = http.get_skus(Id::new(APP)).await.unwrap();
    let skus: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let ids: Vec<u64> = skus.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, vec![starter, pro]);
    assert_eq!(skus[0]["name"], "STARTER");
    assert_eq!(skus[0]["type"], SKU_SUBSCRIPTION);
    assert_eq!(skus[0]["application_id"], APP.to_string());

    let granted = standin.grant_entitlement(APP, USER, starter);
    standin.grant_entitlement(APP, OTHER_USER, pro);
    let mine = http
        .entitlements(Id::new(APP))
        .user_id(Id::new(USER))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id.get(), id_of(&granted));
    assert_eq!(mine[0].sku_id.get(), starter);
    assert_eq!(mine[0].kind, EntitlementType::ApplicationSubscription);
    assert!(mine[0].starts_at.is_some());
    assert_eq!(mine[0].ends_at, None, "an active subscription has no end");
    let pro_ids = [Id::new(pro)];
    let by_sku = http
        .entitlements(Id::new(APP))
        .sku_ids(&pro_ids)
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(by_sku.len(), 1);
    assert_eq!(by_sku[0].user_id.map(Id::get), Some(OTHER_USER));

    // An ended entitlement is listed unless exclude_ended.
    standin
        .end_entitlement(id_of(&granted), ms_now() - 1000)
        .unwrap();
    let all = http
        .entitlements(Id::new(APP))
        .user_id(Id::new(USER))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert!(all[0].ends_at.is_some());
    let current = http
        .entitlements(Id::new(APP))
        .user_id(Id::new(USER))
        .exclude_ended(true)
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert!(current.is_empty());

    // Test entitlements: no dates; deleted ones are left out by default.
    let test = http
        .create_test_entitlement(
            Id::new(APP),
            Id::new(pro),
            CreateTestEntitlementOwner::User(Id::new(USER)),
        )
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(test.kind, EntitlementType::TestModePurchase);
    assert_eq!(test.starts_at, None);
    assert_eq!(test.user_id.map(Id::get), Some(USER));
    http.delete_test_entitlement(Id::new(APP), test.id)
        .await
        .unwrap();
    let listed = http
        .entitlements(Id::new(APP))
        .sku_ids(&pro_ids)
        .user_id(Id::new(USER))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // twilight-http 0.18's `exclude_deleted` sets `exclude_ended` instead:
    // ask by hand.
    let url = format!(
        "{}/api/v10/applications/{APP}/entitlements?user_id={USER}&sku_ids={pro}&exclude_deleted=false",
        standin.base_url()
    );
    let with_deleted: Value = reqwest::Client::new()
        .get(url)
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(with_deleted[0]["deleted"], true, "{with_deleted}");

    // Discord's refusals.
    let error = http
        .delete_test_entitlement(Id::new(APP), test.id)
        .await
        .unwrap_err();
    let (status, body) = api_error(&error);
    assert_eq!((status, body["code"].clone()), (404, json!(10029)));
    let error = http
        .create_test_entitlement(
            Id::new(APP),
            Id::new(12345),
            CreateTestEntitlementOwner::User(Id::new(USER)),
        )
        .await
        .unwrap_err();
    let (status, body) = api_error(&error);
    assert_eq!((status, body["code"].clone()), (404, json!(10027)));
    let error = http.entitlements(Id::new(APP + 1)).await.unwrap_err();
    assert_eq!(api_error(&error).0, 403, "another application's");
}

#[tokio::test]
async fn entitlements_follow_the_gateway_and_ride_on_interactions() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    register(&standin).await;
    let mut shard = shard(&standin, TOKEN).await;
    let starter = standin.add_sku(APP, SKU_SUBSCRIPTION, "STARTER");

    let granted = standin.grant_entitlement(APP, USER, starter);
    serde_json::from_value::<twilight_model::application::monetization::Entitlement>(
        granted.clone(),
    )
    .expect("twilight reads the entitlement");
    let Event::EntitlementCreate(created) =
        next(&mut shard, |e| matches!(e, Event::EntitlementCreate(_))).await
    else {
        unreachable!()
    };
    assert_eq!(created.0.id.get(), id_of(&granted));
    assert_eq!(created.0.user_id.map(Id::get), Some(USER));
    assert_eq!(created.0.ends_at, None);

    // Interactions carry the user's active entitlements, and only theirs.
    standin.slash(
        TOKEN,
        CHANNEL,
        USER,
        "imagine",
        json!({ "prompt": "a fox" }),
    );
    let Event::InteractionCreate(interaction) =
        next(&mut shard, |e| matches!(e, Event::InteractionCreate(_))).await
    else {
        unreachable!()
    };
    let carried: Vec<u64> = interaction
        .0
        .entitlements
        .iter()
        .map(|e| e.sku_id.get())
        .collect();
    assert_eq!(carried, vec![starter]);
    let other = standin.slash(
        TOKEN,
        CHANNEL,
        OTHER_USER,
        "imagine",
        json!({ "prompt": "x" }),
    );
    assert_eq!(other.payload["entitlements"], json!([]));

    // The subscription ends: ENTITLEMENT_UPDATE with ends_at, and
    // interactions stop carrying it.
    let ends = ms_now() - 1000;
    standin.end_entitlement(id_of(&granted), ends).unwrap();
    let updated = next_dispatch(&mut shard, "ENTITLEMENT_UPDATE").await;
    let updated: twilight_model::application::monetization::Entitlement =
        serde_json::from_value(updated).expect("an entitlement");
    assert_eq!(updated.id.get(), id_of(&granted));
    let ends_at = updated.ends_at.expect("ends_at is set");
    assert_eq!(ends_at.as_micros() / 1000, ends as i64);
    let later = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "y" }));
    assert_eq!(later.payload["entitlements"], json!([]));

    // Discord deletes it (a refund): ENTITLEMENT_DELETE.
    standin.delete_entitlement(id_of(&granted)).unwrap();
    let deleted = next_dispatch(&mut shard, "ENTITLEMENT_DELETE").await;
    assert_eq!(deleted["id"], granted["id"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(standin.delete_entitlement(999), None);
}

#[tokio::test]
async fn consumables_are_consumed_once() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = client(&standin, TOKEN);
    let tokens = standin.add_sku(APP, SKU_CONSUMABLE, "1000 tokens");
    let starter = standin.add_sku(APP, SKU_SUBSCRIPTION, "STARTER");
    let pack = standin.grant_entitlement(APP, USER, tokens);
    assert_eq!(pack["consumed"], false);
    let id = Id::new(id_of(&pack));
    http.consume_entitlement(Id::new(APP), id).await.unwrap();
    assert_eq!(standin.entitlements(APP)[0]["consumed"], true);
    let again = http
        .consume_entitlement(Id::new(APP), id)
        .await
        .unwrap_err();
    assert_eq!(api_error(&again).0, 400);
    let subscription = standin.grant_entitlement(APP, USER, starter);
    let refused = http
        .consume_entitlement(Id::new(APP), Id::new(id_of(&subscription)))
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&refused).0,
        400,
        "a subscription is not consumable"
    );
}

#[tokio::test]
async fn premium_buttons_are_kept_and_checked() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let starter = standin.add_sku(APP, SKU_SUBSCRIPTION, "STARTER");
    let post = |body: Value| {
        let url = format!("{}/api/v10/channels/{CHANNEL}/messages", standin.base_url());
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .header("Authorization", format!("Bot {TOKEN}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                answer.status().as_u16(),
                answer.json::<Value>().await.unwrap(),
            )
        }
    };
    let button = json!({ "type": 2, "style": 6, "sku_id": starter.to_string() });
    let (status, message) = post(json!({
        "content": "Out of tokens for today.",
        "components": [{ "type": 1, "components": [button] }],
    }))
    .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        message["components"][0]["components"][0]["sku_id"],
        starter.to_string()
    );
    let kept = standin.channel_messages(CHANNEL);
    assert_eq!(kept[0].components[0]["components"][0]["style"], 6);

    let (status, body) = post(json!({
        "components": [{ "type": 1, "components": [
            { "type": 2, "style": 6, "label": "Buy", "custom_id": "buy" }
        ] }],
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 50035);
    let errors = &body["errors"]["components"]["0"]["components"]["0"];
    assert!(errors["sku_id"]["_errors"].is_array(), "{body}");
    assert!(errors["custom_id"]["_errors"].is_array(), "{body}");
    assert_eq!(standin.channel_messages(CHANNEL).len(), 1);
}
