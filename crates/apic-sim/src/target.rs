//! Request targets as nginx takes them.
//!
//! curl users type `?query-target-filter=eq(fvTenant.name,"common")` with raw quotes, and a real
//! APIC (nginx) evaluates it. actix-http parses the request line with `httparse` (which takes
//! every visible byte) and then builds an `http::Uri`, which refuses `"`, `<`, `>`, `` ` ``,
//! `\`, `{`, `}`, `|`, `^` and non-ASCII bytes with an empty 400. [`LenientTarget`] sits
//! between the socket and actix-http and percent-encodes exactly those bytes in each request
//! line; the sim percent-decodes paths and query values, so the handlers see what was sent.
//!
//! To find each request line it follows the HTTP/1.1 framing with the same parser actix-http
//! uses (`httparse`): a head, then `Content-Length` bytes of body. Whatever it is not sure
//! about (a head that does not parse or is too large, `Transfer-Encoding`, an upgrade, a
//! malformed `Content-Length`) ends the rewriting for the rest of the connection: from then
//! on bytes pass unchanged and actix-http answers as it would without this layer. It never
//! touches a body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// actix-http gives up on a head larger than this (its `MAX_BUFFER_SIZE`); so do we.
const MAX_HEAD: usize = 131_072;
/// actix-http's header count limit; a head with more is refused by it, not by us.
const MAX_HEADERS: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a request head (request line and headers).
    Head,
    /// Passing this many body bytes unchanged.
    Body(u64),
    /// Passing everything unchanged until the connection ends.
    Raw,
}

/// A connection whose request lines are percent-encoded where `http::Uri` is stricter than
/// nginx; see the module documentation.
pub struct LenientTarget<T> {
    io: T,
    phase: Phase,
    /// Bytes of an incomplete head, held until it is complete.
    head: Vec<u8>,
    /// Bytes ready for the reader.
    out: Vec<u8>,
    /// How much of `out` has been handed out.
    read: usize,
}

impl<T> LenientTarget<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            phase: Phase::Head,
            head: Vec::new(),
            out: Vec::new(),
            read: 0,
        }
    }

    /// Takes bytes from the socket, appending what the reader should see to `out`.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match self.phase {
                Phase::Raw => {
                    self.out.extend_from_slice(input);
                    return;
                }
                Phase::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.phase = if left == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(left)
                    };
                }
                Phase::Head => {
                    self.head.extend_from_slice(input);
                    input = &[];
                    self.take_heads();
                }
            }
        }
    }

    /// Moves every complete head in `head` (and the body bytes after it) to `out`.
    fn take_heads(&mut self) {
        while self.phase == Phase::Head && !self.head.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.head) {
                Ok(httparse::Status::Partial) if self.head.len() <= MAX_HEAD => return,
                Ok(httparse::Status::Complete(len)) => {
                    let next = framing(&req);
                    let target = req.path.map(|p| {
                        let start = p.as_ptr() as usize - self.head.as_ptr() as usize;
                        start..start + p.len()
                    });
                    let head: Vec<u8> = self.head.drain(..len).collect();
                    match target {
                        Some(t) => {
                            self.out.extend_from_slice(&head[..t.start]);
                            encode_into(&head[t.clone()], &mut self.out);
                            self.out.extend_from_slice(&head[t.end..]);
                        }
                        None => self.out.extend_from_slice(&head),
                    }
                    self.phase = next;
                    let rest = std::mem::take(&mut self.head);
                    self.feed(&rest);
                    return;
                }
                // Too large, or not HTTP as actix-http reads it: actix-http decides.
                _ => {
                    self.phase = Phase::Raw;
                    let rest = std::mem::take(&mut self.head);
                    self.out.extend_from_slice(&rest);
                }
            }
        }
    }
}

/// What follows a complete head: its body, then the next head; `Raw` when unsure.
fn framing(req: &httparse::Request<'_, '_>) -> Phase {
    if req.method == Some("CONNECT") {
        return Phase::Raw;
    }
    let mut length = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return Phase::Raw;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (length, parsed) {
                (None, Some(n)) => length = Some(n),
                _ => return Phase::Raw,
            }
        }
    }
    match length {
        None | Some(0) => Phase::Head,
        Some(n) => Phase::Body(n),
    }
}

/// Bytes `httparse` takes in a target but `http::Uri` refuses; `%` and `#` stay as they are.
fn needs_encoding(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b))
}

fn encode_into(target: &[u8], out: &mut Vec<u8>) {
    for &b in target {
        if needs_encoding(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LenientTarget<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.read);
                buf.put_slice(&this.out[this.read..this.read + n]);
                this.read += n;
                if this.read == this.out.len() {
                    this.out.clear();
                    this.read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut chunk_buf) {
                Poll::Ready(Ok(())) if chunk_buf.filled().is_empty() => {
                    // End of stream: an incomplete head goes to actix-http as it is.
                    this.out.append(&mut this.head);
                    if this.out.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => this.feed(chunk_buf.filled()),
                other => return other,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LenientTarget<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = LenientTarget::new(());
        for c in chunks {
            t.feed(c);
        }
        t.out
    }

    #[test]
    fn quotes_in_the_target_are_encoded_and_bodies_are_not() {
        let body = br#"{"a":"b"}"#;
        let first = format!(
            "POST /x?q=\"1\" HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let second = b"GET /y?f=eq(a,\"b\")|<c> HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut wire = first.into_bytes();
        wire.extend_from_slice(body);
        wire.extend_from_slice(second);
        // Byte by byte: heads split anywhere are still found.
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let out = String::from_utf8(through(&chunks)).unwrap();
        assert_eq!(
            out,
            "POST /x?q=%221%22 HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}\
             GET /y?f=eq(a,%22b%22)%7C%3Cc%3E HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[test]
    fn unsure_framing_passes_the_rest_unchanged() {
        let wire: &[u8] =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\"x\"\r\n0\r\n\r\nGET /\" HTTP/1.1\r\n\r\n";
        assert_eq!(through(&[wire]), wire);
        let twice: &[u8] =
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n\"\"";
        assert_eq!(through(&[twice]), twice);
        let garbage: &[u8] = b"\x01\x02 not http\r\n\r\n\"";
        assert_eq!(through(&[garbage]), garbage);
    }
}
