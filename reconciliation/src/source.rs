//! The raw byte stream under a statement reader: it hashes every byte as read (SHA-256 of the
//! file exactly as given, BOM included), finds the header line to sniff the delimiter, drops a
//! UTF-8 byte-order mark, and turns CRLF and lone CR line ends into LF so that the CSV reader's
//! line count is a true count of line ends (see `statement`'s row numbering).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

const BOM: &[u8] = b"\xEF\xBB\xBF";
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Source<R> {
    inner: R,
    raw: Vec<u8>,
    /// Normalised bytes not yet handed out, from `pos`.
    out: Vec<u8>,
    pos: usize,
    /// The last raw byte was a CR: its LF, if any, comes with the next chunk.
    pending_cr: bool,
    hasher: Sha256,
    raw_len: u64,
    eof: bool,
    /// Bytes handed out by `read`.
    served: u64,
    last_served: Option<u8>,
}

/// Where the header line's bytes were found, for sniffing.
pub(crate) enum HeaderLine<'a> {
    Found(&'a [u8]),
    /// Nothing but white space before the end of the input.
    Empty,
    TooLong,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source {
            inner,
            raw: vec![0; CHUNK],
            out: Vec::with_capacity(CHUNK),
            pos: 0,
            pending_cr: false,
            hasher: Sha256::new(),
            raw_len: 0,
            eof: false,
            served: 0,
            last_served: None,
        }
    }

    /// Reads one more chunk from the input, hashes it and appends it, normalised, to `out`.
    fn fill(&mut self) -> io::Result<()> {
        if self.eof {
            return Ok(());
        }
        let n = loop {
            match self.inner.read(&mut self.raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
            if std::mem::take(&mut self.pending_cr) {
                self.out.push(b'\n');
            }
            return Ok(());
        }
        let chunk = &self.raw[..n];
        self.hasher.update(chunk);
        self.raw_len += n as u64;
        let mut rest = chunk;
        if std::mem::take(&mut self.pending_cr) {
            self.out.push(b'\n');
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        if !rest.contains(&b'\r') {
            self.out.extend_from_slice(rest);
            return Ok(());
        }
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\r' => match rest.get(i + 1) {
                    Some(b'\n') => {
                        self.out.push(b'\n');
                        i += 1;
                    }
                    Some(_) => self.out.push(b'\n'),
                    None => self.pending_cr = true,
                },
                b => self.out.push(b),
            }
            i += 1;
        }
        Ok(())
    }

    /// Buffers input until it holds a whole first non-empty line (a line end outside double
    /// quotes), then drops a leading BOM. The line is returned without its line end.
    pub(crate) fn header_line(&mut self, limit: usize) -> io::Result<HeaderLine<'_>> {
        let mut scanned_to = 0;
        let mut quoted = false;
        let mut bom_checked = false;
        let end = loop {
            if !bom_checked && (self.out.len() >= BOM.len() || self.eof) {
                if self.out.starts_with(BOM) {
                    self.pos = BOM.len();
                    scanned_to = BOM.len();
                }
                bom_checked = true;
            }
            if bom_checked {
                let mut found = None;
                for (i, &b) in self.out.iter().enumerate().skip(scanned_to) {
                    match b {
                        b'"' => quoted = !quoted,
                        b'\n' if !quoted => {
                            if self.out[self.pos..i].iter().all(u8::is_ascii_whitespace) {
                                // Empty lines before the header are skipped by the CSV reader.
                                continue;
                            }
                            found = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                scanned_to = self.out.len();
                if found.is_some() {
                    break found;
                }
            }
            if self.out.len() > limit {
                return Ok(HeaderLine::TooLong);
            }
            if self.eof {
                break None;
            }
            self.fill()?;
        };
        let line = &self.out[self.pos..end.unwrap_or(self.out.len())];
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(HeaderLine::Empty);
        }
        Ok(HeaderLine::Found(line))
    }

    /// The SHA-256 of every byte read, in lower-case hex, once the input is exhausted.
    pub(crate) fn sha256_hex(&self) -> Option<String> {
        self.eof
            .then(|| hex::encode(self.hasher.clone().finalize()))
    }

    /// Bytes read from the input so far (BOM included).
    pub(crate) fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// True when everything has been read from the input and `consumed` bytes (as counted by
    /// the reader above) are all the bytes handed out, and the last of them was no line end:
    /// the record that ends there has no line end of its own.
    pub(crate) fn ends_without_newline_at(&self, consumed: u64) -> bool {
        self.eof
            && self.pos == self.out.len()
            && consumed == self.served
            && self.last_served != Some(b'\n')
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            self.fill()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        self.served += n as u64;
        self.last_served = Some(buf[n - 1]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Hands out its bytes a few at a time, to cross chunk boundaries.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn normalised(input: &[u8], step: usize) -> Vec<u8> {
        let mut source = Source::new(Trickle(input, step));
        let mut out = Vec::new();
        source.read_to_end(&mut out).unwrap();
        let expected = hex::encode(Sha256::digest(input));
        assert_eq!(source.sha256_hex(), Some(expected));
        assert_eq!(source.raw_len(), input.len() as u64);
        out
    }

    #[test]
    fn line_ends_become_lf_across_chunks() {
        for step in [1, 2, 3, 64] {
            assert_eq!(normalised(b"a\r\nb\rc\nd\r", step), b"a\nb\nc\nd\n");
            assert_eq!(normalised(b"\r\r\n\n", step), b"\n\n\n");
            assert_eq!(normalised(b"", step), b"");
        }
    }

    #[test]
    fn header_line_skips_bom_and_blank_lines_and_respects_quotes() {
        let input = b"\xEF\xBB\xBF\n  \n\"a\nb\";c\r\nrest";
        let mut source = Source::new(Trickle(input, 2));
        match source.header_line(1000).unwrap() {
            HeaderLine::Found(line) => assert_eq!(line, b"\n  \n\"a\nb\";c"),
            _ => panic!("no header"),
        }
        let mut out = Vec::new();
        source.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\n  \n\"a\nb\";c\nrest");
        assert!(source.ends_without_newline_at(out.len() as u64));
    }

    #[test]
    fn header_line_reports_empty_and_too_long() {
        let mut source = Source::new(Trickle(b"\xEF\xBB\xBF \r\n\n", 1));
        assert!(matches!(
            source.header_line(100).unwrap(),
            HeaderLine::Empty
        ));
        let long = vec![b'x'; 300];
        let mut source = Source::new(Trickle(&long, 7));
        assert!(matches!(
            source.header_line(100).unwrap(),
            HeaderLine::TooLong
        ));
    }
}
