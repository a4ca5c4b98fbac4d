//! JSON-RPC 1.0 over a byte stream, as OVSDB uses it (RFC 7047 section 4):
//! messages are bare JSON objects one after another, with no length prefix,
//! so the reader runs a streaming JSON decoder over what it has received.
//! Requests carry numeric ids; the server's `echo` keep-alives are answered
//! here; notifications (`update`) are handed to the owner of the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A server-to-client message without an id to answer (e.g. monitor `update`).
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// Outstanding requests: id to (method, waiter).
type Pending = HashMap<u64, (String, oneshot::Sender<Result<Value>>)>;

/// State shared between callers and the reader task.
struct Shared {
    /// `None` once the connection is closed; holds the reason instead.
    pending: Mutex<Result<Pending, String>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Result<Pending, String>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain map; the map itself is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails every outstanding call and refuses new ones.
    fn close(&self, reason: String) {
        let previous = std::mem::replace(&mut *self.lock(), Err(reason.clone()));
        if let Ok(pending) = previous {
            for (_, (_, waiter)) in pending {
                let _ = waiter.send(Err(Error::Disconnected(reason.clone())));
            }
        }
    }
}

/// An open JSON-RPC connection to ovsdb-server.
pub struct Connection {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    request_timeout: Duration,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    /// Connects to `unix:<path>` or `tcp:<host>:<port>`. Notifications from the
    /// server arrive on the returned channel.
    pub async fn connect(
        addr: &str,
        request_timeout: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Notification>)> {
        let connect_err = |e: std::io::Error| Error::Connect {
            addr: addr.to_owned(),
            source: Arc::new(e),
        };
        if let Some(path) = addr.strip_prefix("unix:") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect_err)?;
            let (rd, wr) = stream.into_split();
            Ok(Self::start(rd, wr, request_timeout))
        } else if let Some(hostport) = addr.strip_prefix("tcp:") {
            let stream = tokio::net::TcpStream::connect(hostport)
                .await
                .map_err(connect_err)?;
            stream.set_nodelay(true).map_err(connect_err)?;
            let (rd, wr) = stream.into_split();
            Ok(Self::start(rd, wr, request_timeout))
        } else {
            Err(Error::Address(addr.to_owned()))
        }
    }

    /// Runs the protocol over any split byte stream.
    pub fn start<R, W>(
        rd: R,
        wr: W,
        request_timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<Notification>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Ok(HashMap::new())),
            out: out_tx,
        });
        let writer = tokio::spawn(write_loop(wr, out_rx, shared.clone()));
        let reader = tokio::spawn(read_loop(rd, shared.clone(), note_tx));
        let conn = Connection {
            shared,
            next_id: AtomicU64::new(1),
            request_timeout,
            reader,
            writer,
        };
        (conn, note_rx)
    }

    /// Sends one request and waits for its response.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.lock();
            let map = pending
                .as_mut()
                .map_err(|reason| Error::Disconnected(reason.clone()))?;
            map.insert(id, (method.to_owned(), tx));
        }
        let message = json!({"method": method, "params": params, "id": id});
        let bytes = serde_json::to_vec(&message)
            .map_err(|e| Error::Protocol(format!("encoding {method} request: {e}")))?;
        if self.shared.out.send(bytes).is_err() {
            self.forget(id);
            return Err(Error::Disconnected("writer stopped".into()));
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Disconnected("reader stopped".into())),
            Err(_) => {
                self.forget(id);
                Err(Error::Timeout {
                    method: method.to_owned(),
                    timeout: self.request_timeout,
                })
            }
        }
    }

    /// Whether the connection is gone (every call would fail).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_err()
    }

    fn forget(&self, id: u64) {
        if let Ok(map) = self.shared.lock().as_mut() {
            map.remove(&id);
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::warn!(error = %e, "OVSDB write failed");
            shared.close(format!("write failed: {e}"));
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedSender<Notification>,
) {
    let mut decoder = Decoder::default();
    let reason = loop {
        match rd.read_buf(&mut decoder.buf).await {
            Ok(0) => break "closed by the server".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
        match decoder.messages() {
            Ok(messages) => messages
                .into_iter()
                .for_each(|m| dispatch(m, &shared, &notes)),
            Err(e) => break e.to_string(),
        }
    };
    tracing::debug!(%reason, "OVSDB connection closed");
    shared.close(reason);
}

/// Splits a byte stream into complete JSON values, keeping any partial tail.
#[derive(Default)]
struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    fn messages(&mut self) -> Result<Vec<Value>> {
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        let mut out = Vec::new();
        loop {
            match stream.next() {
                Some(Ok(value)) => out.push(value),
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(Error::Protocol(format!("invalid JSON: {e}"))),
                None => break,
            }
        }
        let consumed = stream.byte_offset();
        self.buf.drain(..consumed);
        Ok(out)
    }
}

fn dispatch(message: Value, shared: &Shared, notes: &mpsc::UnboundedSender<Notification>) {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    if let Some(method) = message.get("method").and_then(Value::as_str) {
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        if method == "echo" {
            // Keep-alive: answer with the same params or the server drops us.
            let reply = json!({"result": params, "error": null, "id": id});
            let _ = shared.out.send(reply.to_string().into_bytes());
        } else if id.is_null() {
            let _ = notes.send(Notification {
                method: method.to_owned(),
                params,
            });
        } else {
            let reply =
                json!({"result": null, "error": format!("unknown method {method}"), "id": id});
            let _ = shared.out.send(reply.to_string().into_bytes());
        }
        return;
    }
    let Some(id) = id.as_u64() else {
        tracing::warn!(%message, "OVSDB response with an id we never sent");
        return;
    };
    let waiter = shared.lock().as_mut().ok().and_then(|map| map.remove(&id));
    let Some((method, waiter)) = waiter else {
        tracing::debug!(id, "OVSDB response for a request nobody waits for");
        return;
    };
    let answer = match message.get("error") {
        None | Some(Value::Null) => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        Some(error) => Err(Error::Rpc {
            method,
            error: describe_error(error),
        }),
    };
    let _ = waiter.send(answer);
}

/// Renders an OVSDB error (`{"error": .., "details": ..}` or a bare string).
pub(crate) fn describe_error(error: &Value) -> String {
    let kind = error.get("error").and_then(Value::as_str);
    let details = error.get("details").and_then(Value::as_str);
    match (kind, details, error.as_str()) {
        (Some(kind), Some(details), _) => format!("{kind}: {details}"),
        (Some(kind), None, _) => kind.to_owned(),
        (None, _, Some(text)) => text.to_owned(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_waits_for_split_messages_and_handles_back_to_back_ones() {
        let wire = br#"{"id":1,"result":[{"rows":[]}],"error":null}{"id":null,"method":"update","params":[1]}"#;
        let mut decoder = Decoder::default();
        let mut seen = Vec::new();
        for chunk in wire.chunks(7) {
            decoder.buf.extend_from_slice(chunk);
            seen.extend(decoder.messages().unwrap());
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["id"], 1);
        assert_eq!(seen[1]["method"], "update");
        assert!(decoder.buf.is_empty());
    }

    #[test]
    fn decoder_rejects_garbage() {
        let mut decoder = Decoder::default();
        decoder.buf.extend_from_slice(b"{\"id\":1} }");
        assert!(decoder.messages().is_err());
    }

    #[tokio::test]
    async fn echo_requests_are_answered_and_calls_fail_when_the_peer_goes_away() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (rd, wr) = ours.into_split();
        let (conn, _notes) = Connection::start(rd, wr, Duration::from_secs(5));
        let (mut peer_rd, mut peer_wr) = theirs.into_split();
        peer_wr
            .write_all(br#"{"method":"echo","params":["x"],"id":"echo"}"#)
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = peer_rd.read(&mut buf).await.unwrap();
        let reply: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(reply, json!({"result": ["x"], "error": null, "id": "echo"}));

        drop(peer_wr);
        drop(peer_rd);
        let err = conn.call("list_dbs", json!([])).await.unwrap_err();
        assert!(matches!(err, Error::Disconnected(_)), "{err}");
    }
}
