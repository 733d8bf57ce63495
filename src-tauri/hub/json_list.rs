//! A JSON document with one long array in it, `prefix [item,item,…] suffix`, sent as the
//! connection takes it: frames of about [`FRAME`] bytes are joined from the items' cached JSON as
//! they are asked for, so a 10,000-participant listing (5.6 MB) is never held, copied or faulted
//! into fresh memory whole. Its exact length is known up front and goes out as `Content-Length`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// The size a frame is filled to (one item may take it a little past).
pub const FRAME: usize = 64 * 1024;

/// The body: what is left of the document. The prefix is gone once the array is opened, the
/// suffix once it is closed.
pub struct JsonList {
    prefix: Option<Bytes>,
    items: std::vec::IntoIter<Bytes>,
    suffix: Option<Bytes>,
    first: bool,
    remaining: u64,
}

impl JsonList {
    /// `prefix` and `suffix` go around the array as they are (`{"data":` and `}` say); each item
    /// must be one JSON value.
    pub fn new(prefix: impl Into<Bytes>, items: Vec<Bytes>, suffix: impl Into<Bytes>) -> JsonList {
        let (prefix, suffix) = (prefix.into(), suffix.into());
        let commas = items.len().saturating_sub(1);
        let length = prefix.len() + 1 + items.iter().map(Bytes::len).sum::<usize>() + commas + 1 + suffix.len();
        JsonList {
            prefix: Some(prefix),
            items: items.into_iter(),
            suffix: Some(suffix),
            first: true,
            remaining: length as u64,
        }
    }

    /// The next frame, or None once the document is out.
    fn fill(&mut self) -> Option<Bytes> {
        self.suffix.as_ref()?;
        let mut frame = Vec::with_capacity(FRAME + 4 * 1024);
        if let Some(prefix) = self.prefix.take() {
            frame.extend_from_slice(&prefix);
            frame.push(b'[');
        }
        while frame.len() < FRAME {
            match self.items.next() {
                Some(item) => {
                    if !std::mem::take(&mut self.first) {
                        frame.push(b',');
                    }
                    frame.extend_from_slice(&item);
                }
                None => {
                    frame.push(b']');
                    if let Some(suffix) = self.suffix.take() {
                        frame.extend_from_slice(&suffix);
                    }
                    break;
                }
            }
        }
        self.remaining = self.remaining.saturating_sub(frame.len() as u64);
        Some(Bytes::from(frame))
    }
}

impl http_body::Body for JsonList {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.fill().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.suffix.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl IntoResponse for JsonList {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::new(self));
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn whole(list: JsonList) -> (u64, usize, Vec<u8>) {
        let declared = http_body::Body::size_hint(&list).exact().unwrap_or(u64::MAX);
        let mut body = Body::new(list);
        let (mut frames, mut out) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap_or_default();
            assert!(!data.is_empty(), "no empty frames");
            frames += 1;
            out.extend_from_slice(&data);
        }
        (declared, frames, out)
    }

    fn items(n: usize, size: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("{{\"id\":\"p{i}\",\"pad\":\"{}\"}}", "x".repeat(size)))).collect()
    }

    #[tokio::test]
    async fn any_number_of_items_makes_the_document_it_declared() {
        for (n, size) in [(0, 0), (1, 10), (2, 10), (3, FRAME), (1000, 500), (10_000, 550)] {
            let list = items(n, size);
            let expected = {
                let joined: Vec<&[u8]> = list.iter().map(|b| b.as_ref()).collect();
                format!("{{\"data\":[{}],\"meta\":{{}}}}", String::from_utf8(joined.join(&b","[..])).unwrap())
            };
            let (declared, frames, out) = whole(JsonList::new(&b"{\"data\":"[..], list, &b",\"meta\":{}}"[..])).await;
            assert_eq!(String::from_utf8(out.clone()).unwrap(), expected, "{n} items");
            assert_eq!(declared, out.len() as u64, "{n} items: Content-Length is exact");
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value["data"].as_array().map(Vec::len), Some(n));
            // Frames stay near FRAME: the document is never built whole.
            assert!(frames >= out.len() / (FRAME + 2 * size + 64), "{n} items in {frames} frames");
        }
    }

    #[tokio::test]
    async fn the_size_hint_counts_down_to_zero_and_then_the_body_ends() {
        let mut list = JsonList::new(&b"{\"participants\":"[..], items(500, 300), &b"}"[..]);
        let total = http_body::Body::size_hint(&list).exact().unwrap();
        let mut seen = 0u64;
        while let Some(frame) = list.fill() {
            seen += frame.len() as u64;
            assert_eq!(http_body::Body::size_hint(&list).exact(), Some(total - seen));
        }
        assert_eq!(seen, total);
        assert!(http_body::Body::is_end_stream(&list));
    }
}
