//! The classic API of seed 000: bare JSON, errors as `{"error": "message"}` with the seed's exact
//! messages. Participants that join here are `direct`: the hub calls their endpoint itself.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::hub::body::ClassicJson;
use crate::hub::egress::Reach;
use crate::hub::error::{ClassicError, HubError};
use crate::hub::json_list::JsonList;
use crate::hub::sse;
use crate::hub::validate::{self, Surface};
use crate::hub::Hub;
use crate::protocol::{ConnectionKind, CreatedRoom};

use super::v1::bearer;
use super::{existing_id, room_code, ClientAddr, Params};

type Result<T> = std::result::Result<T, ClassicError>;
type P<T> = Params<T, ClassicError>;

pub async fn list(State(hub): State<Hub>) -> Json<Value> {
    Json(json!({ "rooms": hub.registry().list_rooms() }))
}

/// Creates a room (shared by both surfaces: they differ only in how they wrap the answer).
pub async fn create_room(
    hub: &Hub,
    body: &Value,
    client: Option<std::net::IpAddr>,
) -> std::result::Result<CreatedRoom, HubError> {
    let request = validate::create_room(body)?;
    hub.quotas().create_room(client)?;
    // Refused before any argon2 work; the registry checks again under its lock.
    let limit = hub.config().max_rooms;
    if hub.registry().room_count() >= limit {
        return Err(HubError::Capacity { what: format!("the hub already has {limit} rooms (--max-rooms)") });
    }
    let hash = match request.password {
        Some(p) => Some(hub.passwords().hash(p).await?),
        None => None,
    };
    let created = hub.registry().try_create_room(request.name, request.defaults, hash)?;
    hub.persist().await;
    tracing::info!(code = %created.room.code, protected = created.room.password_protected, "room created");
    Ok(created)
}

pub async fn create(
    State(hub): State<Hub>,
    ClientAddr(client): ClientAddr,
    ClassicJson(body): ClassicJson,
) -> Result<Response> {
    let created = create_room(&hub, &body, client).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn join(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ClassicJson(body): ClassicJson,
) -> Result<Json<Value>> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    let (mut registration, id) = validate::registration(&body, Surface::Classic)?;
    // The hub calls a direct participant's endpoint itself: where it may point depends on where
    // the registration comes from.
    registration.reach = Reach::of_source(client);
    crate::hub::egress::check_direct(&crate::hub::egress::base_url(&registration.endpoint)?, registration.reach)?;
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let claim = hub.claim(bearer(&headers));
    // As on `/v1`: the participant's own token stands in for the password.
    if !hub.registry().proves_participant(&code, &id, claim.token) {
        hub.check_password(&code, validate::password_of(&body)?, client).await?;
    }
    let upserted = hub.registry().upsert_as(&code, &id, registration, ConnectionKind::Direct, claim)?;
    if upserted.participant_token.is_some() {
        hub.persist().await;
    }
    let mut answer = json!({ "participant": upserted.participant, "roomId": upserted.room_id });
    if let Some(token) = upserted.participant_token {
        answer["participantToken"] = Value::String(token);
    }
    Ok(Json(answer))
}

pub async fn health(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClassicJson(body): ClassicJson,
) -> Result<Json<Value>> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    let id = match body.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.as_str(),
        _ => return Err(HubError::MissingFields { fields: "id", hint: "Send {\"id\": \"<participant id>\"}." }.into()),
    };
    let result = hub.registry().heartbeat(&code, existing_id(id)?, None)?;
    Ok(Json(json!({ "success": true, "status": result.status, "lastSeen": result.last_seen })))
}

pub async fn leave(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let code = room_code(&code)?;
    hub.leave(&code, existing_id(&id)?, bearer(&headers))?;
    hub.persist().await;
    Ok(Json(json!({ "success": true })))
}

pub async fn participants(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.check_reader(&code, bearer(&headers), client).await?;
    let items = hub.registry().participant_pieces(&code)?;
    Ok(JsonList::new(&b"{\"participants\":"[..], items, &b"}"[..]).into_response())
}

pub async fn events(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    hub.check_reader(&code, bearer(&headers), client).await?;
    let ticket = hub.open_stream(&code, client)?;
    Ok(sse::room_stream(hub, code, sse::last_event_id(&headers), Surface::Classic, ticket).into_response())
}
