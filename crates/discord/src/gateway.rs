//! The gateway connection's receive loop: interactions are handed to the
//! instance's handler; the shard reconnects and resumes by itself, and a close
//! that forbids reconnecting ends the instance.

use tokio_util::sync::CancellationToken;
use twilight_gateway::{CloseFrame, Event, EventTypeFlags, Shard, StreamExt as _};

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
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = shard.next_event(wanted) => event,
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
