//! The management plane: `{"data", "meta": {"requestId"}}` envelopes, errors with code, message and
//! hint. This is the surface the CLI, the desktop app and participant sessions speak.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::hub::body::{ApiJson, OptionalApiJson};
use crate::hub::error::{ApiError, HubError};
use crate::hub::json_list::JsonList;
use crate::hub::request_id;
use crate::hub::sse;
use crate::hub::stats;
use crate::hub::validate::{self, Surface};
use crate::hub::Hub;
use crate::protocol::stats::{ParticipantDetails, RoomDetails};
use crate::protocol::{
    is_participant_id, now_ms, ConnectionKind, Envelope, Health, Meta, Registered, Success, TunnelBootstrap,
};

use super::{existing_id, room_code, ClientAddr, Params};

type Result<T> = std::result::Result<T, ApiError>;
type P<T> = Params<T, ApiError>;

fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, Json(Envelope { data, meta: Meta { request_id: request_id::current() } })).into_response()
}

pub async fn health() -> Response {
    ok(
        StatusCode::OK,
        Health { status: "ok".into(), timestamp: now_ms(), version: Some(env!("CARGO_PKG_VERSION").into()) },
    )
}

pub async fn list(State(hub): State<Hub>) -> Response {
    ok(StatusCode::OK, hub.registry().list_rooms())
}

pub async fn create(
    State(hub): State<Hub>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson,
) -> Result<Response> {
    let created = super::classic::create_room(&hub, &body, client).await?;
    Ok(ok(StatusCode::CREATED, created))
}

/// The room summary, with its `stats` for readers who may see its details (anyone for an open
/// room; the key or the host token for a protected one). Without them it is the summary alone, as
/// before: the details are left out, the room is not refused.
pub async fn room(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    let room = hub.registry().room(&code)?;
    let stats = match hub.check_reader(&code, bearer(&headers), client).await {
        Ok(()) => Some(stats::room_stats(&hub, &code)?),
        Err(_) => None,
    };
    Ok(ok(StatusCode::OK, RoomDetails { room, stats }))
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

pub async fn delete_room(State(hub): State<Hub>, P { 0: code, .. }: P<String>, headers: HeaderMap) -> Result<Response> {
    let code = room_code(&code)?;
    hub.registry().delete_room(&code, bearer(&headers))?;
    hub.tunnels().close_room(&code);
    hub.persist().await;
    tracing::info!(%code, "room deleted by its host");
    Ok(ok(StatusCode::OK, Success { success: true }))
}

pub async fn participants(
    State(hub): State<Hub>,
    P { 0: code, .. }: P<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.check_reader(&code, bearer(&headers), client).await?;
    let mut items = hub.registry().participant_pieces(&code)?;
    let served = hub.stats().participants(&code, now_ms());
    if !served.is_empty() {
        for item in &mut items {
            if let Some(spliced) = stats::with_stats(item, &served) {
                *item = spliced.into();
            }
        }
    }
    let meta = serde_json::to_string(&Meta { request_id: request_id::current() })
        .map_err(|e| HubError::Internal(e.to_string()))?;
    Ok(JsonList::new(&b"{\"data\":"[..], items, format!(",\"meta\":{meta}}}")).into_response())
}

pub async fn participant(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    // The participant itself may always read its own record.
    if !hub.registry().proves_participant(&code, &id, bearer(&headers)) {
        hub.check_reader(&code, bearer(&headers), client).await?;
    }
    let record = hub.registry().participant(&code, existing_id(&id)?)?;
    let stats = hub.stats().participant(&code, &record.public.id, now_ms());
    Ok(ok(StatusCode::OK, ParticipantDetails { participant: record.public, stats: Some(stats) }))
}

/// `ws://host/v1/rooms/CODE/participants/ID/tunnel`, from the host the participant used to reach
/// the hub (it knows a route to it), else the address the hub listens on.
fn tunnel_url(hub: &Hub, headers: &HeaderMap, code: &str, id: &str) -> String {
    // `http://host` → `ws://host`, `https://host` → `wss://host`.
    let origin = crate::hub::invite::origin_of(hub, headers);
    format!("ws{}/v1/rooms/{code}/participants/{id}/tunnel", origin.trim_start_matches("http"))
}

pub async fn upsert(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    if !is_participant_id(&id) {
        return Err(validate::invalid_id().into());
    }
    let (registration, _) = validate::registration(&body, Surface::V1)?;
    let claim = hub.claim(bearer(&headers));
    // A share that proves its id with its token needs no password check: it already passed one,
    // and a guess flood against the room must not keep it out after a reconnect.
    if !hub.registry().proves_participant(&code, &id, claim.token) {
        hub.check_password(&code, validate::password_of(&body)?, client).await?;
    }
    let upserted = hub.registry().upsert_as(&code, &id, registration, ConnectionKind::Tunnel, claim)?;
    if upserted.participant_token.is_some() {
        // The id is bound to a new token: a restarted hub must still know it.
        hub.persist().await;
    }
    let token = hub.registry().issue_tunnel_token(&code, &id, upserted.participant_token.is_some());
    let status = if upserted.created { StatusCode::CREATED } else { StatusCode::OK };
    let registered = Registered {
        tunnel: TunnelBootstrap { url: tunnel_url(&hub, &headers, &code, &id), token },
        participant: upserted.participant,
        room_id: upserted.room_id,
        participant_token: upserted.participant_token,
    };
    Ok(ok(status, registered))
}

pub async fn leave(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.leave(&code, existing_id(&id)?, bearer(&headers))?;
    hub.persist().await;
    Ok(ok(StatusCode::OK, Success { success: true }))
}

pub async fn heartbeat(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    headers: HeaderMap,
    OptionalApiJson(body): OptionalApiJson,
) -> Result<Response> {
    let code = room_code(&code)?;
    let news = validate::heartbeat(body.as_ref())?;
    let claim = hub.claim(bearer(&headers));
    Ok(ok(StatusCode::OK, hub.registry().heartbeat_news(&code, existing_id(&id)?, news, claim)?))
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
    Ok(sse::room_stream(hub, code, sse::last_event_id(&headers), Surface::V1, ticket).into_response())
}

/// `GET /v1/rooms/:code/participants/:id/tunnel?token=…`: the token is checked (and spent) before
/// the upgrade; a wrong, used or expired one never gets a WebSocket.
pub async fn tunnel(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
    headers: HeaderMap,
    query: std::result::Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
    upgrade: std::result::Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let code = room_code(&code)?;
    let id = existing_id(&id)?.to_string();
    hub.registry().participant(&code, &id)?;
    let upgrade = upgrade.map_err(|e| {
        HubError::invalid(
            format!("This endpoint is a WebSocket: {}.", e.body_text()),
            "Open it with a WebSocket client, with the token from the registration.",
        )
    })?;
    let token = query.ok().and_then(|q| q.0.get("token").cloned()).unwrap_or_default();
    if token.is_empty() {
        return Err(HubError::TunnelTokenInvalid.into());
    }
    hub.registry().redeem_tunnel_token(&code, &id, &token, hub.claim(bearer(&headers)))?;
    Ok(upgrade
        // tungstenite zero-fills its whole read buffer on every read: keep it near a frame's size.
        .read_buffer_size(16 * 1024)
        .max_message_size(crate::hub::tunnel::MAX_FRAME_BYTES)
        .max_frame_size(crate::hub::tunnel::MAX_FRAME_BYTES)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "tunnel upgrade failed"))
        .on_upgrade(move |socket| crate::hub::tunnel::run(hub, code, id, socket)))
}
