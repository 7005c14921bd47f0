//! The Bot API's shape: `/bot<token>/<method>` routed to its method,
//! parameters read from the query and from form, JSON or multipart bodies,
//! answers in the `{"ok", "result"}` envelope and failures in Telegram's
//! words, flood control a test injects, and the command menu methods.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::faults::{broken_answer, me};
use super::files::get_file;
use super::members::get_chat_member;
use super::messages::{
    delete_message, edit_message_text, send_chat_action, send_file, send_message,
};
use super::payments::{
    answer_pre_checkout_query, create_invoice_link, edit_user_star_subscription,
    refund_star_payment, send_invoice,
};
use super::state::{BotState, Files, Shared, StateInner, UserInfo};
use super::types::{Call, Command, MessageKind, Upload};
use super::updates::{delete_webhook, get_updates, set_webhook, webhook_info};
use super::{TelegramStandIn, MAX_UPLOAD_BYTES};

/// Methods the stand-in serves, spelled as documented.
const METHODS: &[&str] = &[
    "getMe",
    "logOut",
    "close",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "deleteMessage",
    "sendPhoto",
    "sendVideo",
    "sendAudio",
    "sendDocument",
    "sendVoice",
    "sendChatAction",
    "getFile",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "sendInvoice",
    "createInvoiceLink",
    "answerPreCheckoutQuery",
    "refundStarPayment",
    "editUserStarSubscription",
    "getChatMember",
];

impl TelegramStandIn {
    /// The next `times` calls of `method` answer 429 `Too Many Requests:
    /// retry after {retry_after_secs}` with `parameters.retry_after`.
    pub fn flood(&self, token: &str, method: &str, times: u32, retry_after_secs: u32) {
        let key = method.to_ascii_lowercase();
        self.mutate(token, |bot, _| {
            bot.floods.insert(key, (times, retry_after_secs));
        });
    }
}

#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: u16,
    pub(super) description: String,
    pub(super) retry_after: Option<u32>,
}

impl Failure {
    pub(super) fn new(code: u16, description: &str) -> Self {
        Self {
            code,
            description: description.to_owned(),
            retry_after: None,
        }
    }

    pub(super) fn bad(what: &str) -> Self {
        Self::new(400, &format!("Bad Request: {what}"))
    }

    fn flood(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                &format!("Too Many Requests: retry after {retry_after}"),
            )
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(retry) = self.retry_after {
            body["parameters"] = json!({ "retry_after": retry });
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(body)).into_response()
    }
}

pub(super) struct Reply {
    pub(super) result: Value,
    pub(super) description: Option<String>,
}

impl From<Value> for Reply {
    fn from(result: Value) -> Self {
        Self {
            result,
            description: None,
        }
    }
}

pub(super) type Answer = Result<Reply, Failure>;

fn answer_response(answer: Answer) -> Response {
    match answer {
        Ok(reply) => {
            let mut body = json!({ "ok": true, "result": reply.result });
            if let Some(d) = reply.description {
                body["description"] = json!(d);
            }
            Json(body).into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

#[derive(Clone, Debug)]
enum Param {
    Json(Value),
    Text(String),
    File(Upload),
}

#[derive(Default)]
pub(super) struct Params(HashMap<String, Param>);

/// Where a file to send comes from.
pub(super) enum Source {
    Upload(Upload),
    Ref(String),
}

impl Params {
    pub(super) fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Param::Json(Value::Null) => None,
            Param::Json(Value::String(s)) | Param::Text(s) => Some(s.clone()),
            Param::Json(other) => Some(other.to_string()),
            Param::File(_) => None,
        }
    }

    pub(super) fn int(&self, name: &str) -> Result<Option<i64>, Failure> {
        let bad = || Failure::bad(&format!("invalid {name} specified"));
        match self.0.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::Number(n))) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) if s.trim().is_empty() => Ok(None),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                s.trim().parse().map(Some).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
        }
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(Param::Json(Value::Bool(b))) => *b,
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                matches!(s.trim(), "true" | "True" | "1")
            }
            Some(Param::Json(Value::Number(n))) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// An object or array, given as JSON or as JSON text.
    pub(super) fn json(&self, name: &str) -> Result<Option<Value>, Failure> {
        match self.0.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str(s)
                    .map(Some)
                    .map_err(|_| Failure::bad(&format!("can't parse {name} JSON object")))
            }
            Some(Param::Json(v)) => Ok(Some(v.clone())),
            Some(Param::File(_)) => Err(Failure::bad(&format!("can't parse {name} JSON object"))),
        }
    }

    /// The file to send in field `name`: a part, an `attach://` reference to
    /// a part, or a `file_id`/URL.
    pub(super) fn source(&self, name: &str) -> Result<Option<Source>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Param::File(upload)) => Ok(Some(Source::Upload(upload.clone()))),
            Some(_) => {
                let Some(text) = self.text(name).filter(|t| !t.trim().is_empty()) else {
                    return Ok(None);
                };
                if let Some(part) = text.strip_prefix("attach://") {
                    return match self.0.get(part) {
                        Some(Param::File(upload)) => Ok(Some(Source::Upload(upload.clone()))),
                        _ => Err(Failure::bad("wrong file identifier/HTTP URL specified")),
                    };
                }
                Ok(Some(Source::Ref(text)))
            }
        }
    }

    /// The parameters as JSON, files as `{"file_name", "size"}`.
    fn summary(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Param::Json(v) => v.clone(),
                    Param::Text(s) => Value::String(s.clone()),
                    Param::File(u) => json!({ "file_name": u.file_name, "size": u.bytes.len() }),
                };
                (k.clone(), v)
            })
            .collect();
        Value::Object(map)
    }
}

async fn read_params(request: Request) -> Result<Params, Failure> {
    let mut params = Params::default();
    if let Some(query) = request.uri().query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            params.0.insert(k.into_owned(), Param::Text(v.into_owned()));
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BYTES + 1024 * 1024)
        .await
        .map_err(|_| Failure::new(413, "Request Entity Too Large"))?;
    if bytes.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("multipart/form-data") {
        let request = Request::from_parts(parts, Body::from(bytes));
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|_| Failure::bad("can't parse multipart/form-data request"))?;
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(_) => return Err(Failure::bad("can't parse multipart/form-data request")),
            };
            let name = field.name().unwrap_or("").to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let mime = field.content_type().map(str::to_owned);
            let data = field
                .bytes()
                .await
                .map_err(|_| Failure::bad("can't parse multipart/form-data request"))?;
            let value = match file_name {
                Some(file_name) => Param::File(Upload {
                    file_name: Some(file_name).filter(|n| !n.is_empty()),
                    mime,
                    bytes: data,
                }),
                None => Param::Text(String::from_utf8_lossy(&data).into_owned()),
            };
            params.0.insert(name, value);
        }
    } else if content_type.starts_with("application/json") {
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| Failure::bad("can't parse JSON object"))?;
        let Value::Object(map) = value else {
            return Err(Failure::bad("can't parse JSON object"));
        };
        for (k, v) in map {
            params.0.insert(k, Param::Json(v));
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            params.0.insert(k.into_owned(), Param::Text(v.into_owned()));
        }
    }
    Ok(params)
}

pub(super) async fn api(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(token) = bot.strip_prefix("bot").map(str::to_owned) else {
        return Failure::new(404, "Not Found").into_response();
    };
    if !shared.lock().bots.contains_key(&token) {
        return Failure::new(401, "Unauthorized").into_response();
    }
    let params = match read_params(request).await {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let name = METHODS
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(&method));
    let (index, flood, broken) = {
        let mut state = shared.lock();
        let Some(bot) = state.bots.get_mut(&token) else {
            return Failure::new(401, "Unauthorized").into_response();
        };
        bot.calls.push(Call {
            method: name.map_or(method.clone(), str::to_owned),
            params: params.summary(),
            status: None,
        });
        let flood = match bot.floods.get_mut(&method.to_ascii_lowercase()) {
            Some((times, retry)) if *times > 0 => {
                *times -= 1;
                Some(*retry)
            }
            _ => None,
        };
        let broken = name.is_some() && bot.faults.breaks(&method);
        (bot.calls.len() - 1, flood, broken)
    };
    shared.bump();
    if broken {
        return broken_answer();
    }
    let answer = match (name, flood) {
        (None, _) => Err(Failure::new(404, "Not Found")),
        (Some(_), Some(retry)) => Err(Failure::flood(retry)),
        (Some(name), None) => call(&shared, &token, name, &params).await,
    };
    let status = match &answer {
        Ok(_) => 200,
        Err(f) => f.code,
    };
    if let Some(bot) = shared.lock().bots.get_mut(&token) {
        bot.calls[index].status = Some(status);
    }
    shared.bump();
    answer_response(answer)
}

async fn call(shared: &Arc<Shared>, token: &str, name: &str, params: &Params) -> Answer {
    if name == "getUpdates" {
        return get_updates(shared, token, params).await;
    }
    let mut state = shared.lock();
    let StateInner {
        bots,
        files,
        users,
        members,
        ..
    } = &mut *state;
    let bot = bots.get_mut(token).expect("checked before");
    let mut ctx = Ctx {
        token,
        bot,
        files,
        users,
        members,
    };
    let answer = match name {
        "getMe" => Ok(me(ctx.bot).into()),
        "logOut" | "close" => Ok(json!(true).into()),
        "setWebhook" => set_webhook(&mut ctx, params),
        "deleteWebhook" => Ok(delete_webhook(ctx.bot, params.flag("drop_pending_updates"))),
        "getWebhookInfo" => Ok(webhook_info(ctx.bot).into()),
        "sendMessage" => send_message(&mut ctx, params),
        "editMessageText" => edit_message_text(&mut ctx, params),
        "deleteMessage" => delete_message(&mut ctx, params),
        "sendPhoto" => send_file(&mut ctx, params, MessageKind::Photo),
        "sendVideo" => send_file(&mut ctx, params, MessageKind::Video),
        "sendAudio" => send_file(&mut ctx, params, MessageKind::Audio),
        "sendDocument" => send_file(&mut ctx, params, MessageKind::Document),
        "sendVoice" => send_file(&mut ctx, params, MessageKind::Voice),
        "sendChatAction" => send_chat_action(&mut ctx, params),
        "getFile" => get_file(&mut ctx, params),
        "setMyCommands" => set_my_commands(&mut ctx, params),
        "getMyCommands" => get_my_commands(&mut ctx, params),
        "deleteMyCommands" => delete_my_commands(&mut ctx, params),
        "sendInvoice" => send_invoice(&mut ctx, params),
        "createInvoiceLink" => create_invoice_link(&mut ctx, params),
        "answerPreCheckoutQuery" => answer_pre_checkout_query(&mut ctx, params),
        "refundStarPayment" => refund_star_payment(&mut ctx, params),
        "editUserStarSubscription" => edit_user_star_subscription(&mut ctx, params),
        "getChatMember" => get_chat_member(&mut ctx, params),
        _ => Err(Failure::new(404, "Not Found")),
    };
    drop(state);
    shared.bump();
    answer
}

pub(super) struct Ctx<'a> {
    pub(super) token: &'a str,
    pub(super) bot: &'a mut BotState,
    pub(super) files: &'a mut Files,
    pub(super) users: &'a HashMap<i64, UserInfo>,
    pub(super) members: &'a HashMap<(i64, i64), String>,
}

fn scope_and_language(params: &Params) -> Result<(Value, String), Failure> {
    let scope = params
        .json("scope")?
        .unwrap_or_else(|| json!({ "type": "default" }));
    if !scope.get("type").is_some_and(Value::is_string) {
        return Err(Failure::bad("can't parse BotCommandScope JSON object"));
    }
    let language = params.text("language_code").unwrap_or_default();
    Ok((scope, language))
}

fn set_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let list = params
        .json("commands")?
        .ok_or_else(|| Failure::bad("parameter \"commands\" is required"))?;
    let Value::Array(items) = list else {
        return Err(Failure::bad("can't parse commands JSON object"));
    };
    if items.len() > 100 {
        return Err(Failure::bad("too many commands specified"));
    }
    let mut commands = Vec::new();
    for item in items {
        let command = item.get("command").and_then(Value::as_str).unwrap_or("");
        let description = item
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let valid = (1..=32).contains(&command.len())
            && command
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Failure::bad("BOT_COMMAND_INVALID"));
        }
        if !(1..=256).contains(&description.chars().count()) {
            return Err(Failure::bad("command description must be non-empty"));
        }
        commands.push(Command {
            command: command.to_owned(),
            description: description.to_owned(),
        });
    }
    let (scope, language) = scope_and_language(params)?;
    ctx.bot
        .commands
        .retain(|(s, l, _)| !(s == &scope && l == &language));
    if !commands.is_empty() {
        ctx.bot.commands.push((scope, language, commands));
    }
    Ok(json!(true).into())
}

fn get_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let (scope, language) = scope_and_language(params)?;
    let commands: Vec<Value> = ctx
        .bot
        .commands
        .iter()
        .find(|(s, l, _)| s == &scope && l == &language)
        .map(|(_, _, c)| {
            c.iter()
                .map(|c| json!({ "command": c.command, "description": c.description }))
                .collect()
        })
        .unwrap_or_default();
    Ok(Value::Array(commands).into())
}

fn delete_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let (scope, language) = scope_and_language(params)?;
    ctx.bot
        .commands
        .retain(|(s, l, _)| !(s == &scope && l == &language));
    Ok(json!(true).into())
}

pub(super) fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}
