//! Rooms as the window sees them: on this app's own hub or another, read with the key the window
//! gives or the one the app keeps, their details with the hub that holds them, their live events.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::{lock, room_code, AppCore};
use crate::client::events::{RoomEvents, StreamItem};
use crate::client::HubClient;
use crate::protocol::{normalize_room_code, CreatedRoom, Health, Participant, RoomSummary};

impl AppCore {
    pub async fn health(&self) -> Result<Health, AppError> {
        self.own_client().await?.health().await.map_err(|e| AppError::from_client(&e, None))
    }

    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>, AppError> {
        self.own_client().await?.list_rooms().await.map_err(|e| AppError::from_client(&e, None))
    }

    pub async fn create_room(&self, name: &str, password: Option<&str>) -> Result<CreatedRoom, AppError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(AppError::new("Give the room a name, so people know which one to join."));
        }
        let password = password.filter(|p| !p.is_empty());
        let created = self
            .own_client()
            .await?
            .create_room(name, password, None)
            .await
            .map_err(|e| AppError::from_client(&e, None))?;
        if let Some(password) = password {
            self.keep_password(None, &created.room.code, password).await;
        }
        // The person owns this hub: the app keeps the room's host token for them, so the Room
        // screen can delete the room on any later day, with nothing to copy or lose.
        if let Some(token) = created.host_token.as_deref() {
            let (inner, code, token) = (self.inner.clone(), created.room.code.clone(), token.to_string());
            let _ = tokio::task::spawn_blocking(move || inner.secrets.put_host_token(&code, &token)).await;
        }
        self.inner.options.ui.changed();
        Ok(created)
    }

    /// Whether `client` talks to this app's own hub.
    async fn is_own(&self, client: &HubClient) -> bool {
        let own = self.local_hub_url().await;
        own.is_some_and(|own| own.trim_end_matches('/') == client.base_url().trim_end_matches('/'))
    }

    /// The host token the app keeps for room `code` of its own hub.
    async fn kept_host_token(&self, code: &str) -> Option<String> {
        let (inner, code) = (self.inner.clone(), code.to_string());
        tokio::task::spawn_blocking(move || inner.secrets.host_token(&code)).await.ok().flatten()
    }

    /// What to read room `code` with: the key the window gave, else, for a room of this app's own
    /// hub, the password or the host token the app keeps (a room this app made is not locked to
    /// its own window).
    async fn key_for(&self, client: &HubClient, code: &str, key: Option<&str>) -> Option<String> {
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            return Some(key.to_string());
        }
        if !self.is_own(client).await {
            return None;
        }
        match self.kept_password(None, code).await {
            Some(password) => Some(password),
            None => self.kept_host_token(code).await,
        }
    }

    pub async fn get_room(&self, code: &str) -> Result<RoomSummary, AppError> {
        let client = self.client_for(code).await?;
        client.get_room(&room_code(code)?).await.map_err(|e| AppError::from_client(&e, Some(code)))
    }

    /// The room's participants; `key` is a protected room's password (or its host token).
    /// Room `code` as the window shows it: the room, what it served (`stats`, with the key of a
    /// protected room), and `hubUrl`, the address others use for the hub that holds it (this
    /// app's own hub's LAN address, or the other hub's): every URL the window shows or copies is
    /// built from it.
    pub async fn room_details(&self, code: &str, key: Option<&str>) -> Result<Value, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let key = self.key_for(&client, &code, key).await;
        let details = client
            .get_room_details_as(&code, key.as_deref())
            .await
            .map_err(|e| AppError::from_client(&e, Some(&code)))?;
        let mut value = serde_json::to_value(&details).unwrap_or(Value::Null);
        // `isHost`: the app holds the room's host token (it made the room on its own hub).
        let host = self.is_own(&client).await && self.kept_host_token(&code).await.is_some();
        if let Value::Object(fields) = &mut value {
            fields.insert("hubUrl".into(), json!(self.public_url_of(&client).await));
            fields.insert("isHost".into(), json!(host));
        }
        Ok(value)
    }

    /// The address others use for the hub `client` talks to.
    async fn public_url_of(&self, client: &HubClient) -> String {
        let base = client.base_url().trim_end_matches('/').to_string();
        let own = self.local_hub_url().await.map(|u| u.trim_end_matches('/').to_string());
        match (own, self.hub_info().url) {
            (Some(own), Some(public)) if own == base => public,
            _ => base,
        }
    }

    /// The SVG of the QR code of room `code`'s invite link (`HUB/join/CODE`, on the hub that holds
    /// the room), drawn here: no network service.
    pub async fn invite_qr(&self, code: &str) -> Result<String, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let link = format!("{}/join/{code}", self.public_url_of(&client).await.trim_end_matches('/'));
        crate::hub::invite::qr_svg(&link).ok_or_else(|| AppError::new("The invite link is too long for a QR code."))
    }

    pub async fn list_participant_details(
        &self,
        code: &str,
        key: Option<&str>,
    ) -> Result<Vec<crate::protocol::stats::ParticipantDetails>, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let key = self.key_for(&client, &code, key).await;
        client
            .list_participant_details_as(&code, key.as_deref())
            .await
            .map_err(|e| AppError::from_client(&e, Some(&code)))
    }

    pub async fn list_participants(&self, code: &str, key: Option<&str>) -> Result<Vec<Participant>, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let key = self.key_for(&client, &code, key).await;
        client.list_participants_as(&code, key.as_deref()).await.map_err(|e| AppError::from_client(&e, Some(&code)))
    }

    /// Deletes room `code` with `host_token`, or, for a room this app made on its own hub, with
    /// the token it keeps.
    pub async fn delete_room(&self, code: &str, host_token: Option<&str>) -> Result<Value, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let own = self.is_own(&client).await;
        let token = match host_token.filter(|t| !t.is_empty()) {
            Some(token) => Some(token.to_string()),
            None if own => self.kept_host_token(&code).await,
            None => None,
        };
        let Some(token) = token else {
            return Err(
                AppError::new("Only the room's host can delete it.").hint("This app doesn't hold its host token.")
            );
        };
        client.delete_room(&code, &token).await.map_err(|e| AppError::from_client(&e, Some(&code)))?;
        if own {
            let (inner, code) = (self.inner.clone(), code.clone());
            let _ = tokio::task::spawn_blocking(move || {
                inner.secrets.forget_host_token(&code);
                inner.secrets.forget(None, &code);
            })
            .await;
        }
        self.inner.options.ui.changed();
        Ok(json!({ "success": true }))
    }

    /// Starts forwarding room `code`'s events to the window as `room-event`; `key` is a protected
    /// room's password (or its host token).
    pub async fn subscribe_room(&self, code: &str, key: Option<&str>) -> Result<(), AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let key = self.key_for(&client, &code, key).await;
        let mut events =
            RoomEvents::new(&client, &code).map_err(|e| AppError::from_client(&e, Some(&code)))?.with_key(key);
        let token = CancellationToken::new();
        if let Some(old) = lock(&self.inner.subscriptions).insert(code.clone(), token.clone()) {
            old.cancel();
        }
        let ui = self.inner.options.ui.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = token.cancelled() => break,
                    item = events.next() => item,
                };
                match item {
                    Ok(StreamItem::Connected { .. }) => ui.emit(
                        "room-event",
                        json!({ "type": "connected", "timestamp": crate::protocol::now_ms(), "roomCode": code, "data": {} }),
                    ),
                    Ok(StreamItem::Event { data, .. }) => {
                        let Ok(mut payload) = serde_json::from_str::<Value>(&data) else { continue };
                        if let (Some(object), Some(id)) = (payload.as_object_mut(), events.last_event_id()) {
                            if let Ok(id) = id.parse::<u64>() {
                                object.insert("id".into(), id.into());
                            }
                        }
                        ui.emit("room-event", payload);
                    }
                    Ok(StreamItem::Reconnecting { reason, .. }) => {
                        tracing::debug!(%code, %reason, "room events interrupted; reconnecting")
                    }
                    Err(e) => {
                        tracing::info!(%code, error = %e, "room events ended");
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    pub fn unsubscribe_room(&self, code: &str) {
        if let Some(code) = normalize_room_code(code) {
            if let Some(token) = lock(&self.inner.subscriptions).remove(&code) {
                token.cancel();
            }
        }
    }
}
