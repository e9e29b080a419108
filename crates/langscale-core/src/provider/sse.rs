//! Server-sent events, as far as chat streams need them: the `data` of each event, events
//! split on a blank line, lines ending in `\n`, `\r\n` or `\r`, comments and other fields
//! skipped, and bytes arriving in arbitrary pieces (even mid-line or mid-character).

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    data: Vec<u8>,
    has_data: bool,
    /// The last line ended in `\r`: a `\n` right after it is part of that line end.
    after_cr: bool,
}

impl SseParser {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The data of the next complete event, if one has arrived.
    pub(crate) fn next_event(&mut self) -> Option<String> {
        loop {
            if self.after_cr && self.buf.get(self.start) == Some(&b'\n') {
                self.start += 1;
            }
            self.after_cr = false;
            let rest = self.buf.get(self.start..)?;
            let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            self.after_cr = rest.get(end) == Some(&b'\r');
            let line_start = self.start;
            self.start += end + 1;
            let line = self.buf.get(line_start..line_start + end)?.to_vec();
            if let Some(data) = self.line(&line) {
                return Some(data);
            }
        }
    }

    /// At the end of the body: an event the server did not close with a blank line.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = self.buf.get(self.start..).map(<[u8]>::to_vec);
        self.start = self.buf.len();
        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
            // Only a complete field line counts; a half line is dropped with the event.
            let _ = self.line(&rest);
        }
        self.line(b"")
    }

    fn line(&mut self, line: &[u8]) -> Option<String> {
        if line.is_empty() {
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            let data = std::mem::take(&mut self.data);
            return Some(String::from_utf8_lossy(&data).into_owned());
        }
        if line.first() == Some(&b':') {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = line.get(i + 1..).unwrap_or_default();
                (
                    line.get(..i).unwrap_or_default(),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut SseParser) -> Vec<String> {
        std::iter::from_fn(|| parser.next_event()).collect()
    }

    #[test]
    fn events_split_on_blank_lines_whatever_the_line_ends() {
        let mut p = SseParser::default();
        p.push(b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\r\ndata: two\r\ndata: lines\r\n\r\ndata:three\r\rdata: [DONE]\n\n");
        assert_eq!(all(&mut p), ["{\"a\":1}", "two\nlines", "three", "[DONE]"]);
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn bytes_may_arrive_one_at_a_time() {
        let text = "data: {\"content\": \"h\u{e9}llo\"}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for b in text.as_bytes() {
            p.push(std::slice::from_ref(b));
            got.extend(all(&mut p));
        }
        assert_eq!(got, ["{\"content\": \"h\u{e9}llo\"}", "[DONE]"]);
    }

    #[test]
    fn an_unterminated_last_event_is_kept() {
        let mut p = SseParser::default();
        p.push(b"data: a\n\ndata: b");
        assert_eq!(all(&mut p), ["a"]);
        assert_eq!(p.finish().as_deref(), Some("b"));
        assert_eq!(p.finish(), None);
    }
}
