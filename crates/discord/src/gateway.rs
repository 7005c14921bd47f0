//! The gateway connection's receive loop: interactions are handed to the
//! instance's handler; the shard reconnects and resumes by itself, and a close
//! that forbids reconnecting ends the instance.

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use twilight_gateway::{CloseFrame, Event, EventTypeFlags, Message, Shard};

use crate::Handler;

/// Discord's gateway, used when `gateway_url` names no proxy.
pub(crate) const DISCORD_GATEWAY: &str = "wss://gateway.discord.gg";

pub(crate) async fn listen(
    mut shard: Shard,
    handler: Handler,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let bot_id = handler.bot.settings().bot_id.clone();
    let wanted = EventTypeFlags::INTERACTION_CREATE | EventTypeFlags::READY;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = shard.next() => message,
        };
        // Entitlement dispatches twilight cannot parse are read here; the
        // rest is parsed as `next_event` would.
        let event = match message {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(Message::Close(frame))) => Some(Ok(Event::GatewayClose(frame))),
            Some(Ok(Message::Text(json))) => {
                if let Some((source, e)) = crate::subscriptions::entitlement_dispatch(&json) {
                    handler.spawn_entitlement(source, e);
                    continue;
                }
                match twilight_gateway::parse(json, wanted) {
                    Ok(Some(event)) => Some(Ok(event.into())),
                    Ok(None) => continue,
                    Err(e) => Some(Err(e)),
                }
            }
        };
        match event {
            None => {
                tracing::error!(%bot_id, "Discord closed the gateway for good (token revoked, sharding required or intents refused); this bot stops");
                lost.cancel();
                return;
            }
            Some(Ok(Event::InteractionCreate(i))) => handler.spawn_from_gateway(i.0),
            Some(Ok(Event::Ready(ready))) => {
                tracing::info!(%bot_id, application_id = %ready.application.id, "gateway ready")
            }
            Some(Ok(_)) => {}
            // The shard reconnects (or resumes) by itself; fatal closes end the stream.
            Some(Err(e)) => tracing::warn!(%bot_id, error = %e, "gateway receive error"),
        }
    }
    shard.close(CloseFrame::NORMAL);
}
