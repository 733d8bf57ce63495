//! `gambi room create|list|get|delete` and the seed's short forms `gambi create` and `gambi list`:
//! arguments, one [`HubClient`](crate::client::HubClient) call each, and the text rendering of
//! the answers (json and ndjson print the answer's data as is).

use serde_json::Value;

use super::output::{self, Output};
use super::{Failure, HubOptions, DEFAULT_HUB_URL};
use crate::client::HubClient;
use crate::protocol::{normalize_room_code, now_ms, CreatedRoom, PublicRuntimeConfig, RoomSummary, RuntimeConfig};

/// What a new room is created with, besides its name.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomOptions {
    /// Protect the room with a password: participants must give it to join.
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Runtime defaults for the room's requests, as a JSON object, e.g. '{"temperature": 0.7}'
    /// (temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, seed,
    /// instructions).
    #[arg(long, value_name = "JSON", value_parser = parse_defaults)]
    pub defaults: Option<RuntimeConfig>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// The room's name (1 to 100 characters).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub room: RoomOptions,
    #[command(flatten)]
    pub hub: HubOptions,
}

/// `gambi create "Name"`: the seed's form, with the name as a positional argument.
#[derive(Debug, Clone, clap::Args)]
pub struct ShortCreateArgs {
    /// The room's name (1 to 100 characters).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub room: RoomOptions,
    #[command(flatten)]
    pub hub: HubOptions,
}

impl From<ShortCreateArgs> for CreateArgs {
    fn from(a: ShortCreateArgs) -> Self {
        CreateArgs { name: a.name, room: a.room, hub: a.hub }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub hub: HubOptions,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// The room's 6-character code.
    #[arg(value_name = "CODE", allow_hyphen_values = true)]
    pub code: String,
    /// The room's password, to show as the API key of its OpenAI URL (never checked here; the
    /// hub never tells it).
    #[arg(long, value_name = "PASSWORD", env = "GAMBI_ROOM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    pub hub: HubOptions,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// The room's 6-character code.
    #[arg(value_name = "CODE", allow_hyphen_values = true)]
    pub code: String,
    /// The host token printed when the room was created.
    #[arg(long, value_name = "TOKEN", env = "GAMBI_HOST_TOKEN", hide_env_values = true)]
    pub host_token: String,
    #[command(flatten)]
    pub hub: HubOptions,
}

/// `--defaults`: a JSON object that reads as a runtime config. A misspelled key is refused
/// rather than silently dropped, since the room would then quietly run without it.
pub fn parse_defaults(raw: &str) -> Result<RuntimeConfig, String> {
    const EXAMPLE: &str = r#"pass a JSON object, like '{"temperature": 0.7, "max_tokens": 2000}'"#;
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e}); {EXAMPLE}"))?;
    let Value::Object(given) = &value else {
        return Err(format!("not a JSON object; {EXAMPLE}"));
    };
    let config: RuntimeConfig = serde_json::from_value(value.clone()).map_err(|e| format!("{e}; {EXAMPLE}"))?;
    let kept = serde_json::to_value(&config).map_err(|e| e.to_string())?;
    if let Some((key, _)) = given.iter().find(|(key, v)| !v.is_null() && kept.get(key.as_str()).is_none()) {
        return Err(format!(
            "unknown field {key:?} (known: temperature, top_p, max_tokens, stop, frequency_penalty, \
             presence_penalty, seed, instructions)"
        ));
    }
    Ok(config)
}

pub async fn create(args: CreateArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let created = client.create_room(&args.name, args.room.password.as_deref(), args.room.defaults).await?;
    Ok(args.hub.output().one(&created, || created_text(&client, &created))?)
}

pub async fn list(args: ListArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let rooms = client.list_rooms().await?;
    Ok(args.hub.output().list(&rooms, || rooms_text(&client, &rooms, now_ms()))?)
}

pub async fn get(args: GetArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let room = client.get_room(&args.code).await?;
    let key = api_key(&room, args.password.as_deref());
    // json/ndjson: the room as the hub gave it, plus (additive) the API key when it is known.
    let mut data = serde_json::to_value(&room)?;
    if let (Value::Object(map), Some(password)) = (&mut data, args.password.as_deref()) {
        if room.password_protected {
            map.insert("apiKey".into(), Value::String(password.to_string()));
        }
    }
    Ok(args.hub.output().one(&data, || room_text(&client, &room, now_ms(), &key))?)
}

pub async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let done = client.delete_room(&args.code, &args.host_token).await?;
    let code = normalize_room_code(&args.code).unwrap_or(args.code);
    let out: Output = args.hub.output();
    Ok(out.one(&done, || format!("Deleted room {code} from {}.", client.base_url()))?)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// ` --hub URL` when the hub is not the default one, so a suggested command works as printed.
fn hub_flag(client: &HubClient) -> String {
    if client.base_url() == DEFAULT_HUB_URL {
        String::new()
    } else {
        format!(" --hub {}", client.base_url())
    }
}

fn created_text(client: &HubClient, created: &CreatedRoom) -> String {
    let room = &created.room;
    let mut pairs = vec![
        ("Code", room.code.clone()),
        ("Name", room.name.clone()),
        ("Password", yes_no(room.password_protected)),
        ("OpenAI URL", client.inference_url(&room.code)),
    ];
    if let Some(defaults) = &room.defaults {
        pairs.push(("Defaults", defaults_text(defaults)));
    }
    if let Some(token) = &created.host_token {
        pairs.push(("Host token", token.clone()));
    }
    let mut text = format!("Created room {} on {}.\n\n", output::sanitize(&room.code), client.base_url());
    text.push_str(&output::fields(&pairs));
    if let Some(token) = &created.host_token {
        text.push_str(&format!(
            "\nThe host token is shown only this once. Keep it: it is what deletes the room:\n  \
             gambi room delete {} --host-token {}{}\n",
            output::sanitize(&room.code),
            output::sanitize(token),
            hub_flag(client)
        ));
    }
    text
}

fn rooms_text(client: &HubClient, rooms: &[RoomSummary], now: u64) -> String {
    if rooms.is_empty() {
        return format!(
            "No rooms on {} yet. Create one with: gambi room create --name \"My room\"{}",
            client.base_url(),
            hub_flag(client)
        );
    }
    let rows: Vec<Vec<String>> = rooms
        .iter()
        .map(|r| {
            vec![
                r.code.clone(),
                output::truncate(&r.name, 40),
                r.participant_count.map_or_else(|| "-".into(), |n| n.to_string()),
                yes_no(r.password_protected),
                output::ago(r.created_at, now),
            ]
        })
        .collect();
    output::table(&["CODE", "NAME", "PARTICIPANTS", "PROTECTED", "CREATED"], &rows)
}

/// What an OpenAI client of this room sends as its API key.
fn api_key(room: &RoomSummary, password: Option<&str>) -> String {
    match (room.password_protected, password) {
        (true, Some(p)) => p.to_string(),
        (true, None) => "the room password (pass --password to show it here)".into(),
        (false, _) => "anything (the room has no password)".into(),
    }
}

fn room_text(client: &HubClient, room: &RoomSummary, now: u64, key: &str) -> String {
    let mut pairs = vec![("Code", room.code.clone()), ("Name", room.name.clone())];
    if let Some(n) = room.participant_count {
        pairs.push(("Participants", n.to_string()));
    }
    pairs.push(("Password", yes_no(room.password_protected)));
    pairs.push(("Created", format!("{} ({})", output::iso_time(room.created_at), output::ago(room.created_at, now))));
    if let Some(defaults) = &room.defaults {
        pairs.push(("Defaults", defaults_text(defaults)));
    }
    pairs.push(("OpenAI URL", client.inference_url(&room.code)));
    pairs.push(("API key", key.to_string()));
    pairs.push(("Room id", room.id.clone()));
    pairs.push(("Host id", room.host_id.clone()));
    output::fields(&pairs)
}

/// `temperature=0.7, max_tokens=2000, instructions set`, in the protocol's field order.
fn defaults_text(d: &PublicRuntimeConfig) -> String {
    let numbers = [
        ("temperature", d.temperature.map(|v| v.to_string())),
        ("top_p", d.top_p.map(|v| v.to_string())),
        ("max_tokens", d.max_tokens.map(|v| v.to_string())),
        ("stop", d.stop.as_ref().and_then(|s| serde_json::to_string(s).ok())),
        ("frequency_penalty", d.frequency_penalty.map(|v| v.to_string())),
        ("presence_penalty", d.presence_penalty.map(|v| v.to_string())),
        ("seed", d.seed.map(|v| v.to_string())),
    ];
    let mut parts: Vec<String> =
        numbers.into_iter().filter_map(|(key, value)| value.map(|v| format!("{key}={v}"))).collect();
    if d.has_instructions {
        parts.push("instructions set".into());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(code: &str, name: &str, count: Option<usize>, protected: bool) -> RoomSummary {
        RoomSummary {
            id: "id".into(),
            code: code.into(),
            name: name.into(),
            host_id: "host".into(),
            created_at: 0,
            password_protected: protected,
            defaults: None,
            participant_count: count,
        }
    }

    #[test]
    fn room_lists_are_tables() {
        let client = HubClient::new("http://localhost:3000").unwrap();
        let text = rooms_text(
            &client,
            &[room("ABC123", "My AI Room", Some(3), true), room("XYZ789", "B", None, false)],
            120_000,
        );
        assert_eq!(
            text,
            "CODE    NAME        PARTICIPANTS  PROTECTED  CREATED\n\
             ABC123  My AI Room  3             yes        2m ago\n\
             XYZ789  B           -             no         2m ago\n"
        );
        let empty = rooms_text(&client, &[], 0);
        assert!(empty.starts_with("No rooms on http://localhost:3000 yet."), "{empty}");
        assert!(!empty.contains("--hub"), "{empty}");
        let other = HubClient::new("10.0.0.2:3000").unwrap();
        assert!(rooms_text(&other, &[], 0).ends_with("--hub http://10.0.0.2:3000"));
    }

    #[test]
    fn defaults_read_as_key_values() {
        let config = RuntimeConfig {
            temperature: Some(0.7),
            max_tokens: Some(2000),
            instructions: Some("be brief".into()),
            ..Default::default()
        };
        assert_eq!(defaults_text(&config.public()), "temperature=0.7, max_tokens=2000, instructions set");
        assert_eq!(defaults_text(&PublicRuntimeConfig::default()), "none");
    }

    #[test]
    fn defaults_flag_refuses_typos_and_wrong_types() {
        assert_eq!(parse_defaults(r#"{"temperature": 0.5, "seed": null}"#).unwrap().temperature, Some(0.5));
        assert!(parse_defaults("{bad").unwrap_err().contains("not valid JSON"));
        assert!(parse_defaults("[]").unwrap_err().contains("not a JSON object"));
        assert!(parse_defaults(r#"{"temprature": 0.5}"#).unwrap_err().contains("unknown field \"temprature\""));
        assert!(parse_defaults(r#"{"max_tokens": "many"}"#).is_err());
    }
}
