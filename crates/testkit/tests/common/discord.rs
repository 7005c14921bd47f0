//! What the Discord stand-in's tests share: the bot they register, twilight
//! clients and shards pointed at the stand-in, the commands they register,
//! and reading Discord's error bodies.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_http::error::ErrorType;
use twilight_http::Client;
use twilight_model::application::command::Command;
use twilight_model::id::Id;

use tessera_testkit::standins::discord::{DiscordOptions, DiscordStandIn};

pub const TOKEN: &str = "MTEx.standin.bot-token";

pub const APP: u64 = 1_200_000_000_000_000_001;

pub const CHANNEL: u64 = 1_300_000_000_000_000_001;

pub const USER: u64 = 1_400_000_000_000_000_001;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn client(standin: &DiscordStandIn, token: &str) -> Client {
    Client::builder()
        .token(token.to_owned())
        .proxy(standin.rest_proxy(), true)
        .timeout(Duration::from_secs(10))
        .build()
}

pub fn commands() -> Vec<Command> {
    serde_json::from_value(json!([
        {
            "type": 1,
            "version": "1",
            "name": "imagine",
            "description": "Draw a picture",
            "options": [
                { "type": 3, "name": "prompt", "description": "What to draw", "required": true },
                { "type": 4, "name": "steps", "description": "Sampling steps" },
            ],
        },
        {
            "type": 1,
            "version": "1",
            "name": "transcribe",
            "description": "Turn speech into text",
            "options": [
                { "type": 11, "name": "audio", "description": "The recording", "required": true },
            ],
        },
    ]))
    .unwrap()
}

pub async fn standin_with_bot(options: DiscordOptions) -> DiscordStandIn {
    let standin = DiscordStandIn::start_with(options).await;
    standin.add_bot(TOKEN, APP, "tessera");
    standin
}

pub async fn register(standin: &DiscordStandIn) -> Client {
    let http = client(standin, TOKEN);
    http.interaction(Id::new(APP))
        .set_global_commands(&commands())
        .await
        .unwrap();
    http
}

/// A shard connected through the stand-in, past READY.
pub async fn shard(standin: &DiscordStandIn, token: &str) -> Shard {
    let config = ConfigBuilder::new(token.to_owned(), Intents::GUILDS)
        .proxy_url(standin.gateway_url())
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);
    let ready = next(&mut shard, |e| matches!(e, Event::Ready(_))).await;
    let Event::Ready(ready) = ready else {
        unreachable!()
    };
    assert_eq!(ready.version, 10);
    assert_eq!(ready.application.id.get(), APP);
    assert_eq!(ready.resume_gateway_url, standin.resume_gateway_url());
    shard
}

/// The next event `wanted` accepts, within [`WAIT`].
pub async fn next(shard: &mut Shard, wanted: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match shard.next_event(EventTypeFlags::all()).await {
                Some(Ok(event)) if wanted(&event) => return event,
                Some(_) => {}
                None => panic!("the shard ended"),
            }
        }
    })
    .await
    .expect("the event within the wait")
}

/// The status and JSON body of a twilight error response.
pub fn api_error(error: &twilight_http::Error) -> (u16, Value) {
    match error.kind() {
        ErrorType::Response { body, status, .. } => {
            (status.get(), serde_json::from_slice(body).unwrap())
        }
        other => panic!("not an API error: {other:?}"),
    }
}
