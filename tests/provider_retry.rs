//! The participant retries, once and on a fresh connection, a request its model server closed the
//! connection on without answering a single byte (a keep-alive connection the server had just
//! closed: the request crossed the close). Found with the real llama-server (issue 13): each such
//! request was a 502 in the room. A server that never answers still gives one clean 502, after
//! exactly two attempts.
//!
//! The model server here is a raw TCP listener speaking just enough HTTP/1.1, so it can read a
//! request and close the connection on it the way a closing server does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::participant_cli::{Proc, STARTUP};
use crate::util::{call, http, read_http_request, TestHub};

/// One chat completion the fake model server read: on which connection (numbered in the order
/// they were accepted, from 0) and whether it closed that connection instead of answering.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Chat {
    connection: usize,
    dropped: bool,
}

/// A model server serving `llama3` (`/v1/models`; the probe's empty POSTs get a 400) whose chat
/// completions are answered with one fixed completion, except those `drop(n)` is true for (`n`
/// counts chat completions from 0): for those it closes the connection, having read the request
/// and sent nothing. Returns its URL and every chat completion it read.
async fn closing_server(drop: fn(usize) -> bool) -> (String, Arc<Mutex<Vec<Chat>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let chats = Arc::new(Mutex::new(Vec::new()));
    let seen = chats.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let connection = accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, body)) = read_http_request(&mut socket, &mut buf).await else { return };
                    let request_line = head.lines().next().unwrap_or_default().to_string();
                    let (status, answer) = if request_line.starts_with("GET /v1/models ") {
                        (200, json!({"object": "list", "data": [{"id": "llama3", "object": "model"}]}))
                    } else if request_line.starts_with("POST ") && body.trim() == "{}" {
                        (400, json!({"error": {"message": "missing fields", "type": "invalid_request_error"}}))
                    } else if request_line.starts_with("POST /v1/chat/completions ") {
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.len();
                            seen.push(Chat { connection, dropped: drop(n) });
                            n
                        };
                        if drop(n) {
                            // Read, never answered: the connection closes with nothing sent.
                            return;
                        }
                        let message = json!({"role": "assistant", "content": "answered"});
                        let usage = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
                        let choice = json!({"index": 0, "message": message, "finish_reason": "stop"});
                        (200, json!({"id": "c", "object": "chat.completion", "choices": [choice], "usage": usage}))
                    } else {
                        (404, json!({"error": "not found"}))
                    };
                    let text = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{text}",
                        text.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, chats)
}

/// Joins `gambi participant join` as `id` to a new room on `hub`, serving `llama3` from `server`;
/// returns the process (live) and the room's OpenAI base URL.
async fn join(hub: &TestHub, server: &str, id: &str) -> (Proc, String) {
    let (code, _) = hub.room("closing model server", None).await;
    let args = [
        "participant",
        "join",
        "--room",
        &code,
        "--participant-id",
        id,
        "--model",
        "llama3",
        "--endpoint",
        server,
        "--no-specs",
        "--format",
        "ndjson",
        "--hub",
        &hub.url,
    ];
    let mut proc = Proc::spawn(&args);
    proc.state("live", STARTUP).await;
    (proc, format!("{}/rooms/{code}/v1", hub.url))
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// The server closes the connection the first chat completion came on without answering: the
/// participant sends it again, on a connection the server accepted after that close, and the room
/// answers 200.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_model_server_closed_the_connection_on_unanswered_is_sent_again_on_a_fresh_one() {
    let (server, chats) = closing_server(|n| n == 0).await;
    let hub = TestHub::start().await;
    let (proc, base) = join(&hub, &server, "closing-1").await;
    let (status, _, v) = call(http().post(format!("{base}/chat/completions")).json(&chat("closing-1"))).await;
    assert_eq!(status, 200, "{v}\nlog:\n{}", proc.log());
    assert_eq!(v["choices"][0]["message"]["content"], "answered", "{v}");
    let chats = chats.lock().unwrap().clone();
    assert_eq!(chats.len(), 2, "{chats:?}");
    assert!(chats[0].dropped && !chats[1].dropped, "{chats:?}");
    assert!(chats[1].connection > chats[0].connection, "the retry reused an old connection: {chats:?}");
}

/// A server that closes every connection on a chat completion unanswered: one 502 in the room,
/// after exactly two attempts (the first and one retry), and no more requests after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_server_that_never_answers_gives_one_502_after_exactly_two_attempts() {
    let (server, chats) = closing_server(|_| true).await;
    let hub = TestHub::start().await;
    let (proc, base) = join(&hub, &server, "closing-2").await;
    let (status, _, v) = call(http().post(format!("{base}/chat/completions")).json(&chat("closing-2"))).await;
    assert_eq!(status, 502, "{v}\nlog:\n{}", proc.log());
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("closed the connection without answering"), "{v}");
    // Nothing goes on trying behind the 502.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = chats.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].connection > seen[0].connection, "the retry reused an old connection: {seen:?}");
    // The next call is the same: two more attempts, one more 502.
    let (status, _, v) = call(http().post(format!("{base}/chat/completions")).json(&chat("closing-2"))).await;
    assert_eq!(status, 502, "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(chats_seen(&chats), 4);
}

fn chats_seen(chats: &Mutex<Vec<Chat>>) -> usize {
    chats.lock().unwrap().len()
}
