//! Incremental Server-Sent-Events parser: owns turning raw network bytes (split anywhere,
//! even inside a UTF-8 character or a CRLF) into complete events, following the WHATWG
//! `text/event-stream` rules, with the memory held for one partial event bounded.

/// Largest partial event (pending line plus buffered fields) kept in memory; a larger
/// event is dropped whole.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event. `event` is `None` when the stream gave no (or an empty) `event:` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental parser; feed it bytes with [`SseParser::push`].
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The last line ended with '\r': a '\n' right after it belongs to the same line ending.
    after_cr: bool,
    /// Whether a line has been completed yet (only the very first may start with a BOM).
    seen_line: bool,
    event: Option<String>,
    data: Option<String>,
    /// An oversized event is being skipped until its terminating blank line.
    discarding: bool,
    /// While discarding: whether the current line has any bytes (so is not the blank line).
    discard_line_nonempty: bool,
}

impl SseParser {
    /// Feed raw bytes as they arrive from the network (chunks can split anywhere, even inside a
    /// UTF-8 char or a line ending); returns the complete events seen so far, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = self.skip_lf_after_cr(bytes);
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (segment, tail) = rest.split_at(pos);
            self.append(segment);
            self.after_cr = tail.first() == Some(&b'\r');
            out.extend(self.end_line());
            rest = self.skip_lf_after_cr(tail.get(1..).unwrap_or_default());
        }
        self.append(rest);
        out
    }

    /// True when bytes are buffered that do not yet form a complete event (an unterminated
    /// line, buffered `data:`/`event:` fields, or an oversized event still being skipped).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.data.is_some() || self.event.is_some() || self.discarding
    }

    /// Drops a '\n' that completes a "\r\n" whose '\r' ended the previous line.
    fn skip_lf_after_cr<'a>(&mut self, rest: &'a [u8]) -> &'a [u8] {
        let Some((first, tail)) = rest.split_first() else {
            return rest;
        };
        let skip = self.after_cr && *first == b'\n';
        self.after_cr = false;
        if skip { tail } else { rest }
    }

    fn append(&mut self, segment: &[u8]) {
        if segment.is_empty() {
            return;
        }
        if self.discarding {
            self.discard_line_nonempty = true;
            return;
        }
        self.line.extend_from_slice(segment);
        if self.buffered_len() > MAX_EVENT_BYTES {
            self.start_discarding(true);
        }
    }

    fn buffered_len(&self) -> usize {
        let field_len = |f: &Option<String>| f.as_ref().map_or(0, String::len);
        self.line.len() + field_len(&self.data) + field_len(&self.event)
    }

    fn start_discarding(&mut self, mid_line: bool) {
        self.line = Vec::new();
        self.data = None;
        self.event = None;
        self.discarding = true;
        self.discard_line_nonempty = mid_line;
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        if self.discarding {
            if !std::mem::take(&mut self.discard_line_nonempty) {
                self.discarding = false;
            }
            return None;
        }
        let raw = std::mem::take(&mut self.line);
        let first_line = !std::mem::replace(&mut self.seen_line, true);
        let bytes = match raw.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if first_line => rest,
            _ => &raw,
        };
        if bytes.is_empty() {
            return self.dispatch();
        }
        self.process_field(&String::from_utf8_lossy(bytes));
        None
    }

    fn process_field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        if self.buffered_len() > MAX_EVENT_BYTES {
            self.start_discarding(false);
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take().filter(|name| !name.is_empty());
        self.data.take().map(|data| SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, bool) {
        let mut parser = SseParser::default();
        let events = chunks.iter().flat_map(|c| parser.push(c)).collect();
        (events, parser.has_partial())
    }

    /// CRLF endings, comments, multi-line data, ignored fields and multi-byte UTF-8.
    const SAMPLE: &str = ": keep-alive comment\r\n\
        event: message_start\r\n\
        id: 7\r\n\
        retry: 1000\r\n\
        data: {\"a\":\"h\u{e9}llo \u{2713}\"}\r\n\
        \r\n\
        data: line one\r\n\
        data:line two \u{1f980}\r\n\
        data\r\n\
        \r\n\
        event: ping\n\
        data:  two spaces\r\r\
        event: only-a-name\r\n\
        \r\n\
        event: message_stop\n\
        data: {}\n\n";

    fn sample_expected() -> Vec<SseEvent> {
        vec![
            ev(Some("message_start"), "{\"a\":\"h\u{e9}llo \u{2713}\"}"),
            ev(None, "line one\nline two \u{1f980}\n"),
            ev(Some("ping"), " two spaces"),
            ev(Some("message_stop"), "{}"),
        ]
    }

    #[test]
    fn parses_sample_in_one_chunk() {
        let (events, partial) = parse_chunks(&[SAMPLE.as_bytes()]);
        assert_eq!(events, sample_expected());
        assert!(!partial);
    }

    #[test]
    fn sample_has_multibyte_chars_and_crlf() {
        // Guards the split tests below: they must exercise these cases.
        assert!(SAMPLE.contains("\r\n"));
        assert!(SAMPLE.len() > SAMPLE.chars().count() + 3);
    }

    #[test]
    fn every_two_way_split_gives_same_events() {
        let bytes = SAMPLE.as_bytes();
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            let (events, partial) = parse_chunks(&[a, b]);
            assert_eq!(events, sample_expected(), "split at {i}");
            assert!(!partial, "split at {i}");
        }
    }

    #[test]
    fn every_three_way_split_gives_same_events() {
        let bytes = SAMPLE.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let chunks = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                let (events, _) = parse_chunks(&chunks);
                assert_eq!(events, sample_expected(), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_by_byte_gives_same_events() {
        let chunks: Vec<&[u8]> = SAMPLE.as_bytes().chunks(1).collect();
        let (events, partial) = parse_chunks(&chunks);
        assert_eq!(events, sample_expected());
        assert!(!partial);
    }

    #[test]
    fn utf8_char_split_across_chunks_is_reassembled() {
        let bytes = "data: \u{1f980}\n\n".as_bytes();
        // Split inside the 4-byte crab.
        let (events, _) = parse_chunks(&[&bytes[..8], &bytes[8..]]);
        assert_eq!(events, vec![ev(None, "\u{1f980}")]);
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_ending() {
        let (events, _) = parse_chunks(&[b"data: a\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(events, vec![ev(None, "a\nb")]);
    }

    #[test]
    fn lone_cr_line_endings_dispatch() {
        let (events, _) = parse_chunks(&[b"event: x\rdata: 1\r\rdata: 2\r\r"]);
        assert_eq!(events, vec![ev(Some("x"), "1"), ev(None, "2")]);
    }

    #[test]
    fn event_name_does_not_leak_into_next_event() {
        let (events, _) = parse_chunks(&[b"event: a\ndata: 1\n\ndata: 2\n\n"]);
        assert_eq!(events, vec![ev(Some("a"), "1"), ev(None, "2")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        let (events, partial) = parse_chunks(&[b"event: lonely\n\n: comment\n\n"]);
        assert!(events.is_empty());
        assert!(!partial);
    }

    #[test]
    fn empty_data_line_dispatches_empty_event() {
        let (events, _) = parse_chunks(&[b"data:\n\n"]);
        assert_eq!(events, vec![ev(None, "")]);
    }

    #[test]
    fn leading_bom_is_stripped_once() {
        let (events, _) = parse_chunks(&[b"\xEF\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(events, vec![ev(None, "x")]);
    }

    #[test]
    fn has_partial_tracks_incomplete_events() {
        let mut parser = SseParser::default();
        assert!(!parser.has_partial());
        assert!(parser.push(b"data: x").is_empty());
        assert!(parser.has_partial());
        assert!(parser.push(b"\n").is_empty());
        assert!(parser.has_partial());
        assert_eq!(parser.push(b"\n"), vec![ev(None, "x")]);
        assert!(!parser.has_partial());
    }

    #[test]
    fn oversized_event_is_dropped_and_parsing_recovers() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: big\ndata: ").is_empty());
        let mib = vec![b'x'; 1024 * 1024];
        for _ in 0..9 {
            assert!(parser.push(&mib).is_empty());
            assert!(parser.line.len() <= MAX_EVENT_BYTES);
        }
        assert!(parser.has_partial());
        assert!(parser.push(b"\ndata: more of the big event\n").is_empty());
        assert!(parser.push(b"\n").is_empty());
        assert!(!parser.has_partial());
        let events = parser.push(b"event: small\ndata: ok\n\n");
        assert_eq!(events, vec![ev(Some("small"), "ok")]);
    }

    #[test]
    fn oversized_event_from_many_data_lines_is_dropped() {
        let mut parser = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(1024 * 1024));
        for _ in 0..9 {
            assert!(parser.push(line.as_bytes()).is_empty());
        }
        assert!(parser.data.as_ref().map_or(0, String::len) <= MAX_EVENT_BYTES);
        assert!(parser.push(b"\n").is_empty());
        assert_eq!(parser.push(b"data: next\n\n"), vec![ev(None, "next")]);
    }

    #[test]
    fn event_just_under_limit_is_kept() {
        let mut parser = SseParser::default();
        let payload = "z".repeat(MAX_EVENT_BYTES - 16);
        let events = parser.push(format!("data: {payload}\n\n").as_bytes());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), payload.len());
    }
}
