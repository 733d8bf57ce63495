//! Server-Sent Events framing for the inference plane: an incremental parser for the streams that
//! providers (Ollama, LM Studio, llama.cpp, ...) send back, and the encoder for frames the hub
//! writes itself (the Responses fallback's events, in-stream errors).
//!
//! This module knows nothing about JSON or OpenAI: it turns bytes into `(event, data)` frames and
//! back. What a frame means (a chat chunk, `[DONE]`, an error) is decided by the caller. The event
//! streams of the management plane have their own writer; this one is for relaying upstream bytes.

use bytes::Bytes;

/// The default ceiling on one pending line or one frame's data. A provider chunk is a few hundred
/// bytes; a whole non-streamed tool-call argument string can reach megabytes, so the ceiling is
/// generous, but finite so that a provider that never sends a newline cannot grow the hub's memory
/// without bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event: what a browser's `EventSource` would hand to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `event:` field, `None` when absent or empty (the SSE default type, `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`, without the trailing newline.
    pub data: String,
}

/// Incremental SSE parser. Feed it bytes as they arrive, in pieces of any size; it keeps the
/// unfinished line between calls, so a frame (or a multi-byte UTF-8 character) split across two
/// network reads comes out whole.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line. Kept as bytes, not `String`, because a read
    /// may end in the middle of a UTF-8 sequence; lines are decoded only once complete.
    line: Vec<u8>,
    /// The previous push ended on `\r`: a `\n` at the start of the next push belongs to the same
    /// line ending (`\r\n` split across reads) and must not produce an empty line (a dispatch).
    skip_lf: bool,
    /// The current line already went over the limit: ignore bytes until its end.
    discarding_line: bool,
    /// Part of the current frame was lost (an oversized line or data): drop the whole frame at its
    /// blank line rather than hand out a truncated JSON document.
    frame_dropped: bool,
    /// No line completed yet: a leading byte-order mark is still to be stripped.
    at_stream_start: bool,
    event: Option<String>,
    data: String,
    /// Distinguishes "no data line" (no dispatch) from "one empty data line" (dispatch `""`).
    has_data: bool,
    last_event_id: Option<String>,
    max_frame_bytes: usize,
    dropped_frames: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default size limit ([`DEFAULT_MAX_FRAME_BYTES`]).
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_FRAME_BYTES)
    }

    /// A parser whose pending line and frame data may not exceed `max_frame_bytes` each.
    pub fn with_limit(max_frame_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            skip_lf: false,
            discarding_line: false,
            frame_dropped: false,
            at_stream_start: true,
            event: None,
            data: String::new(),
            has_data: false,
            last_event_id: None,
            max_frame_bytes: max_frame_bytes.max(1),
            dropped_frames: 0,
        }
    }

    /// Frames dropped so far because a line or the frame's data went over the limit. The caller
    /// reports it (a log line, a metric); the stream itself goes on with the next frame.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// The last `id:` field seen, as the SSE spec keeps it across frames.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Feeds the next bytes of the stream and returns the frames they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if let Some((b'\n', tail)) = rest.split_first() {
                    rest = tail;
                    continue;
                }
            }
            let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.append_partial(rest);
                break;
            };
            let (head, tail) = rest.split_at(pos);
            let Some((&terminator, after)) = tail.split_first() else {
                break;
            };
            self.skip_lf = terminator == b'\r';
            rest = after;

            if self.discarding_line {
                // The oversized line ends here; its frame is already marked as dropped.
                self.discarding_line = false;
                continue;
            }
            if self.line.is_empty() {
                // Fast path: the whole line is in this read, no copy into the buffer.
                if head.len() > self.max_frame_bytes {
                    self.drop_frame();
                    continue;
                }
                self.process_line(head, &mut frames);
            } else {
                if self.line.len() + head.len() > self.max_frame_bytes {
                    self.line = Vec::new();
                    self.drop_frame();
                    continue;
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.process_line(&line, &mut frames);
                // Reuse the allocation for the next long line.
                line.clear();
                self.line = line;
            }
        }
        frames
    }

    /// Ends the stream: a last line without its newline is processed, and a last frame without
    /// its blank line is dispatched (providers that close the connection right after the final
    /// `data:` line are common). The parser is then ready for a new stream.
    pub fn finish(&mut self) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        if !self.discarding_line && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut frames);
        }
        self.dispatch(&mut frames);
        let dropped = self.dropped_frames;
        *self = Self::with_limit(self.max_frame_bytes);
        self.dropped_frames = dropped;
        frames
    }

    fn append_partial(&mut self, bytes: &[u8]) {
        if self.discarding_line {
            return;
        }
        if self.line.len() + bytes.len() > self.max_frame_bytes {
            self.line = Vec::new();
            self.discarding_line = true;
            self.drop_frame();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn drop_frame(&mut self) {
        if !self.frame_dropped {
            self.frame_dropped = true;
            self.dropped_frames += 1;
        }
        self.data = String::new();
        self.has_data = false;
    }

    fn process_line(&mut self, line: &[u8], frames: &mut Vec<SseFrame>) {
        let mut line = line;
        if self.at_stream_start {
            self.at_stream_start = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(frames);
            return;
        }
        if line.first() == Some(&b':') {
            return; // a comment, used by servers as a keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (field, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.frame_dropped {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_frame_bytes {
                    self.drop_frame();
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => {
                let value = String::from_utf8_lossy(value);
                self.event = (!value.is_empty()).then(|| value.into_owned());
            }
            // The spec ignores ids containing NUL: they could not be sent back in a header.
            b"id" if !value.contains(&0) => {
                self.last_event_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {} // `retry` and unknown fields mean nothing to a relay
        }
    }

    fn dispatch(&mut self, frames: &mut Vec<SseFrame>) {
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::replace(&mut self.has_data, false);
        let dropped = std::mem::replace(&mut self.frame_dropped, false);
        if has_data && !dropped {
            frames.push(SseFrame { event, data });
        }
    }
}

/// Encodes one SSE frame: `event: X` when given, one `data:` line per line of `data` (so a payload
/// with newlines survives the trip), then the blank line that dispatches it.
pub fn encode(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.map_or(0, str::len) + 16);
    if let Some(event) = event {
        // A line break inside the name would end the field and inject another one.
        let clean: String = event.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        if !clean.is_empty() {
            out.push_str("event: ");
            out.push_str(&clean);
            out.push('\n');
        }
    }
    let mut rest = data;
    loop {
        let (line, next) = match rest.find(['\n', '\r']) {
            Some(pos) => {
                let after = rest.get(pos..).unwrap_or_default();
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                (rest.get(..pos).unwrap_or_default(), Some(after.get(skip..).unwrap_or_default()))
            }
            None => (rest, None),
        };
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: Option<&str>, data: &str) -> SseFrame {
        SseFrame { event: event.map(str::to_owned), data: data.to_owned() }
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseFrame> {
        let mut parser = SseParser::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            frames.extend(parser.push(chunk));
        }
        frames.extend(parser.finish());
        frames
    }

    #[test]
    fn parses_simple_frames() {
        let frames = parse_all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]);
        assert_eq!(frames, vec![frame(None, "{\"a\":1}"), frame(None, "[DONE]")]);
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        let frames = parse_all(&[b"event: x\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n"]);
        assert_eq!(frames, vec![frame(Some("x"), "1"), frame(None, "2"), frame(None, "3")]);
    }

    #[test]
    fn crlf_split_between_pushes_is_one_line_ending() {
        let frames = parse_all(&[b"data: a\r", b"\ndata: b\r\n", b"\r", b"\n"]);
        // `a` and `b` belong to one frame: the split `\r\n` must not look like a blank line.
        assert_eq!(frames, vec![frame(None, "a\nb")]);
    }

    #[test]
    fn multiple_data_lines_are_joined() {
        let frames = parse_all(&[b"data: one\ndata:two\ndata:  three\n\n"]);
        assert_eq!(frames, vec![frame(None, "one\ntwo\n three")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let frames = parse_all(&[b": keep-alive\n\nretry: 10\nfoo: bar\ndata: x\n\n"]);
        assert_eq!(frames, vec![frame(None, "x")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_does_not_leak() {
        let frames = parse_all(&[b"event: lonely\n\ndata: next\n\n"]);
        assert_eq!(frames, vec![frame(None, "next")]);
    }

    #[test]
    fn empty_data_line_dispatches_empty_data() {
        let frames = parse_all(&[b"data:\n\ndata\n\n"]);
        assert_eq!(frames, vec![frame(None, ""), frame(None, "")]);
    }

    #[test]
    fn id_field_is_remembered() {
        let mut parser = SseParser::new();
        let frames = parser.push(b"id: 42\nevent: e\ndata: d\n\n");
        assert_eq!(frames, vec![frame(Some("e"), "d")]);
        assert_eq!(parser.last_event_id(), Some("42"));
        parser.push(b"id: bad\0id\ndata: d\n\n");
        assert_eq!(parser.last_event_id(), Some("42"));
    }

    #[test]
    fn leading_bom_is_stripped() {
        let frames = parse_all(&[b"\xEF\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(frames, vec![frame(None, "x")]);
    }

    #[test]
    fn finish_flushes_last_frame_without_blank_line() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data: a\n\ndata: b"), vec![frame(None, "a")]);
        assert_eq!(parser.finish(), vec![frame(None, "b")]);
        // And the parser is clean for another stream.
        assert_eq!(parser.push(b"data: c\n\n"), vec![frame(None, "c")]);
        assert_eq!(parser.finish(), vec![]);
    }

    #[test]
    fn multibyte_utf8_split_inside_a_character() {
        let text = "data: olá 🌍 ção\n\n".as_bytes();
        // The globe is 4 bytes: split in its middle.
        let globe = text.iter().position(|&b| b == 0xF0).unwrap();
        let frames = parse_all(&[&text[..globe + 2], &text[globe + 2..]]);
        assert_eq!(frames, vec![frame(None, "olá 🌍 ção")]);
    }

    #[test]
    fn splitting_at_every_position_yields_the_same_frames() {
        let stream: &[u8] = "\u{feff}: hello\r\nevent: response.created\r\ndata: {\"x\":\"é🌍\"}\r\n\r\n\
              id: 7\ndata: line1\ndata: line2\n\n\
              data: {\"choices\":[]}\r\r\
              event: e\ndata: é\n\ndata: [DONE]\n\ndata: tail"
            .as_bytes();
        let expected = parse_all(&[stream]);
        assert_eq!(expected.len(), 6);
        for a in 0..=stream.len() {
            let one_split = parse_all(&[&stream[..a], &stream[a..]]);
            assert_eq!(one_split, expected, "split at {a}");
            for b in a..=stream.len() {
                let two_splits = parse_all(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(two_splits, expected, "split at {a} and {b}");
            }
        }
        // And byte by byte.
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&singles), expected);
    }

    #[test]
    fn oversized_line_is_dropped_and_counted() {
        let mut parser = SseParser::with_limit(16);
        let mut frames = parser.push(b"data: small\n\ndata: 0123456789");
        frames.extend(parser.push(b"0123456789abcdef"));
        frames.extend(parser.push(b"more\ndata: rest-of-frame\n\ndata: ok\n\n"));
        frames.extend(parser.finish());
        assert_eq!(frames, vec![frame(None, "small"), frame(None, "ok")]);
        assert_eq!(parser.dropped_frames(), 1);
    }

    #[test]
    fn oversized_line_in_one_push_is_dropped() {
        let mut parser = SseParser::with_limit(8);
        let frames = parser.push(b"data: this line is too long\n\ndata: ok\n\n");
        assert_eq!(frames, vec![frame(None, "ok")]);
        assert_eq!(parser.dropped_frames(), 1);
    }

    #[test]
    fn oversized_frame_data_is_dropped() {
        let mut parser = SseParser::with_limit(12);
        let frames = parser.push(b"data: 12345\ndata: 67890\ndata: abc\n\ndata: ok\n\n");
        assert_eq!(frames, vec![frame(None, "ok")]);
        assert_eq!(parser.dropped_frames(), 1);
    }

    #[test]
    fn pending_buffer_never_exceeds_the_limit() {
        let mut parser = SseParser::with_limit(1024);
        for _ in 0..1000 {
            assert!(parser.push(&[b'x'; 100]).is_empty());
            assert!(parser.line.len() <= 1024);
        }
        assert_eq!(parser.dropped_frames(), 1);
        // The long line's frame ends at the blank line; the next frame is intact.
        assert_eq!(parser.push(b"\n\ndata: ok\n\n"), vec![frame(None, "ok")]);
    }

    #[test]
    fn encode_formats_frames() {
        assert_eq!(&encode(None, "x")[..], b"data: x\n\n");
        assert_eq!(&encode(Some("response.created"), "{}")[..], b"event: response.created\ndata: {}\n\n");
        assert_eq!(&encode(None, "a\nb\r\nc")[..], b"data: a\ndata: b\ndata: c\n\n");
        assert_eq!(&encode(Some("a\nb"), "")[..], b"event: ab\ndata: \n\n");
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let cases = [
            (Some("error"), "{\"error\":{\"message\":\"boom\"}}"),
            (None, "multi\nline\n\npayload"),
            (None, ""),
            (Some("x"), " leading space"),
        ];
        for (event, data) in cases {
            let frames = parse_all(&[&encode(event, data)]);
            assert_eq!(frames, vec![frame(event, data)]);
        }
    }
}
