//! Application commands: global and guild commands stored per application,
//! validated as Discord validates them (names, descriptions, options,
//! choices, duplicates), with the form-error envelope when they are not.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::rest::{bot_for_app, error, error_at, form_error, merge};
use super::state::Shared;

fn valid_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '\'')
        && name
            .chars()
            .all(|c| c.to_lowercase().eq(std::iter::once(c)))
}

fn check_len(errors: &mut Value, path: &[String], value: &Value, min: usize, max: usize) {
    let n = value.as_str().map(|s| s.chars().count());
    match n {
        None if min > 0 => merge(
            errors,
            error_at(path, "BASE_TYPE_REQUIRED", "This field is required"),
        ),
        Some(n) if n < min || n > max => merge(
            errors,
            error_at(
                path,
                "BASE_TYPE_BAD_LENGTH",
                &format!("Must be between {min} and {max} in length."),
            ),
        ),
        _ => {}
    }
}

fn check_options(errors: &mut Value, path: &[String], options: &Value, depth: usize) {
    let Some(options) = options.as_array() else {
        return;
    };
    if options.len() > 25 {
        merge(
            errors,
            error_at(
                path,
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            ),
        );
    }
    let mut seen_optional = false;
    let mut names = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let at = |key: &str| {
            let mut p = path.to_vec();
            p.push(i.to_string());
            p.push(key.to_owned());
            p
        };
        let kind = option["type"].as_u64().unwrap_or(0);
        if !(1..=11).contains(&kind) || (depth >= 2 && kind <= 2) {
            merge(
                errors,
                error_at(
                    &at("type"),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.",
                ),
            );
        }
        check_len(errors, &at("name"), &option["name"], 1, 32);
        if let Some(name) = option["name"].as_str() {
            if !valid_name(name) {
                merge(
                    errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    ),
                );
            }
            if names.contains(&name) {
                merge(
                    errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        "Option name already exists",
                    ),
                );
            }
            names.push(name);
        }
        check_len(errors, &at("description"), &option["description"], 1, 100);
        let required = option["required"].as_bool().unwrap_or(false);
        if kind > 2 {
            if required && seen_optional {
                merge(
                    errors,
                    error_at(
                        &at("required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    ),
                );
            }
            seen_optional |= !required;
        }
        if let Some(choices) = option["choices"].as_array() {
            if choices.len() > 25 {
                merge(
                    errors,
                    error_at(
                        &at("choices"),
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    ),
                );
            }
            for (j, choice) in choices.iter().enumerate() {
                let mut p = at("choices");
                p.push(j.to_string());
                p.push("name".into());
                check_len(errors, &p, &choice["name"], 1, 100);
            }
        }
        if kind <= 2 {
            check_options(errors, &at("options"), &option["options"], depth + 1);
        }
    }
}

/// Validates one command; an error tree (empty if valid).
fn check_command(command: &Value, path: &[String]) -> Value {
    let mut errors = json!({});
    let at = |key: &str| {
        let mut p = path.to_vec();
        p.push(key.to_owned());
        p
    };
    if !command.is_object() {
        return error_at(
            path,
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        );
    }
    let kind = command["type"].as_u64().unwrap_or(1);
    check_len(&mut errors, &at("name"), &command["name"], 1, 32);
    if kind == 1 {
        if let Some(name) = command["name"].as_str() {
            if !valid_name(name) {
                merge(
                    &mut errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    ),
                );
            }
        }
        check_len(
            &mut errors,
            &at("description"),
            &command["description"],
            1,
            100,
        );
        check_options(&mut errors, &at("options"), &command["options"], 0);
    } else if command["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty())
    {
        merge(
            &mut errors,
            error_at(
                &at("description"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 0 and 0 in length.",
            ),
        );
    }
    errors
}

/// Stores `commands` (validated) for an application and scope, keeping the
/// IDs of commands whose name and type stay.
fn store_commands(
    shared: &Shared,
    app: u64,
    guild: Option<u64>,
    commands: &[Value],
    replace: bool,
) -> Result<Vec<Value>, Box<Response>> {
    let mut errors = json!({});
    for (i, command) in commands.iter().enumerate() {
        let path = if replace {
            vec![i.to_string()]
        } else {
            Vec::new()
        };
        merge(&mut errors, check_command(command, &path));
    }
    if replace {
        let mut seen = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let key = (
                c["name"].as_str().unwrap_or(""),
                c["type"].as_u64().unwrap_or(1),
            );
            if seen.contains(&key) {
                merge(
                    &mut errors,
                    error_at(
                        &[i.to_string(), "name".into()],
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    ),
                );
            }
            seen.push(key);
        }
        if commands
            .iter()
            .filter(|c| c["type"].as_u64().unwrap_or(1) == 1)
            .count()
            > 100
        {
            merge(
                &mut errors,
                error_at(
                    &[],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                ),
            );
        }
    }
    if errors.as_object().is_some_and(|o| !o.is_empty()) {
        return Err(Box::new(form_error(errors)));
    }
    let mut state = shared.lock();
    let existing = state
        .commands
        .get(&(app, guild))
        .cloned()
        .unwrap_or_default();
    let mut stored: Vec<Value> = if replace {
        Vec::new()
    } else {
        existing.clone()
    };
    let mut out = Vec::new();
    for command in commands {
        let kind = command["type"].as_u64().unwrap_or(1);
        let name = command["name"].as_str().unwrap_or("");
        let old = existing
            .iter()
            .find(|c| c["name"] == name && c["type"] == kind);
        let id = old
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| shared.snowflake().to_string());
        let mut value = json!({
            "id": id,
            "application_id": app.to_string(),
            "version": shared.snowflake().to_string(),
            "default_member_permissions": command.get("default_member_permissions").cloned().unwrap_or(Value::Null),
            "type": kind,
            "name": name,
            "name_localizations": command.get("name_localizations").cloned().unwrap_or(Value::Null),
            "description": command["description"].as_str().unwrap_or(""),
            "description_localizations": command.get("description_localizations").cloned().unwrap_or(Value::Null),
            "dm_permission": command.get("dm_permission").cloned().unwrap_or(json!(true)),
            "contexts": command.get("contexts").cloned().unwrap_or(Value::Null),
            "integration_types": command.get("integration_types").cloned().unwrap_or(json!([0])),
            "nsfw": command.get("nsfw").cloned().unwrap_or(json!(false)),
        });
        if let Some(options) = command.get("options").filter(|o| o.is_array()) {
            value["options"] = options.clone();
        }
        if let Some(guild) = guild {
            value["guild_id"] = json!(guild.to_string());
        }
        stored.retain(|c| !(c["name"] == name && c["type"] == kind));
        stored.push(value.clone());
        out.push(value);
    }
    state.commands.insert((app, guild), stored);
    drop(state);
    shared.changed();
    Ok(out)
}

pub(super) async fn put_commands(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    put_scoped(&shared, &app, None, &headers, &body)
}

pub(super) async fn put_guild_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(guild) = guild.parse() else {
        return error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
    };
    put_scoped(&shared, &app, Some(guild), &headers, &body)
}

fn put_scoped(
    shared: &Shared,
    app: &str,
    guild: Option<u64>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let bot = match bot_for_app(shared, headers, app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let Ok(Value::Array(commands)) = serde_json::from_slice::<Value>(body) else {
        return form_error(error_at(&[], "BASE_TYPE_ARRAY", "Must be an array."));
    };
    match store_commands(shared, bot.application_id, guild, &commands, true) {
        Ok(out) => Json(out).into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn post_command(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let Ok(command) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        );
    };
    match store_commands(&shared, bot.application_id, None, &[command], false) {
        Ok(mut out) => (StatusCode::CREATED, Json(out.remove(0))).into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn get_commands(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => Json(
            shared
                .lock()
                .commands
                .get(&(bot.application_id, None))
                .cloned()
                .unwrap_or_default(),
        )
        .into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn get_guild_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => Json(
            shared
                .lock()
                .commands
                .get(&(bot.application_id, guild.parse().ok()))
                .cloned()
                .unwrap_or_default(),
        )
        .into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn get_command(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let found = shared
        .lock()
        .commands
        .get(&(bot.application_id, None))
        .and_then(|c| c.iter().find(|c| c["id"] == id.as_str()).cloned());
    match found {
        Some(command) => Json(command).into_response(),
        None => error(StatusCode::NOT_FOUND, 10063, "Unknown application command"),
    }
}

pub(super) async fn delete_command(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let removed = {
        let mut state = shared.lock();
        let commands = state
            .commands
            .entry((bot.application_id, None))
            .or_default();
        let before = commands.len();
        commands.retain(|c| c["id"] != id.as_str());
        before != commands.len()
    };
    shared.changed();
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, 10063, "Unknown application command")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_discords_pattern() {
        assert!(valid_name("imagine"));
        assert!(valid_name("tts-voice_2"));
        assert!(valid_name("día"));
        assert!(!valid_name("Imagine"));
        assert!(!valid_name("two words"));
        assert!(!valid_name("slash/"));
    }
}
