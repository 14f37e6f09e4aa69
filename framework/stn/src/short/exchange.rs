//! One HTTP/1.1 exchange on a stream the driver opened itself (`hyper`'s connection-level
//! client, so the address, the proxy and TLS stay the driver's choice).
//!
//! The stream is wrapped in a [`Metered`] adapter that reports every read to the engine (its
//! first-packet and packet-to-packet timers count any response byte, as Mars's do) and keeps
//! the first bytes of each response, so a garbage status line is told apart from bad headers.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use hyper_util::rt::TokioIo;
use phobos_stn_proto::{CloseCause, ExchangeError, HttpFailure, HttpRequest, HttpResponse};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::connector::{close_cause, is_tls_failure, LinkStream, PeerProbe, PeerState};

/// Size limits applied to a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest status line plus headers (hyper's read buffer; at least 8 KiB).
    pub(crate) max_head: usize,
    /// The largest body.
    pub(crate) max_body: usize,
}

/// Called with the number of bytes of each read from the server.
pub(crate) type OnRead = Box<dyn Fn(usize) + Send + Sync>;

/// An HTTP/1.1 client connection: hyper's request sender plus the task driving the socket
/// (aborted when this is dropped, which closes the socket).
pub(crate) struct H1Conn {
    sender: SendRequest<Full<Bytes>>,
    meter: Arc<Meter>,
    driver: JoinHandle<()>,
    /// Turns `true` when the connection has ended (either side closed it, or an error).
    closed: watch::Receiver<bool>,
    /// Looks at the socket under hyper before an idle connection is reused.
    probe: Option<PeerProbe>,
}

impl H1Conn {
    /// Starts HTTP/1.1 on `stream`; `probe` (from the stream, for a connection that may be
    /// kept alive) lets [`check_idle`](Self::check_idle) look at the socket later.
    pub(crate) async fn handshake(
        stream: Box<dyn LinkStream>,
        probe: Option<PeerProbe>,
        limits: Limits,
    ) -> Result<H1Conn, ExchangeError> {
        let meter = Arc::new(Meter::default());
        let io = TokioIo::new(Metered {
            inner: stream,
            meter: meter.clone(),
        });
        let mut builder = Builder::new();
        // Design: Mars writes `Content-Length`, `User-Agent`… in title case; hyper keeps
        // names lower case unless asked.
        //
        // The head limit is hyper's `max_header_size`, checked against the parsed head: its
        // read buffer limit (`max_buf_size`, at least 8 KiB) alone is checked only between
        // reads, and let heads of 1.6–1.9 times the limit through. hyper's default of 100
        // header lines refused valid heads far below the limit; the count now scales with it
        // (`max_header_lines`).
        builder
            .title_case_headers(true)
            .max_buf_size(limits.max_head.max(MIN_HEAD_BUFFER))
            .max_header_size(limits.max_head)
            .max_headers(max_header_lines(limits.max_head));
        let (sender, conn) = builder
            .handshake::<_, Full<Bytes>>(io)
            .await
            .map_err(|e| map_error(&e, &meter))?;
        let (closed_tx, closed) = watch::channel(false);
        let driver = tokio::spawn(
            async move {
                // Errors reach the pending request; the connection just ends.
                let _ = conn.await;
                let _ = closed_tx.send(true);
            }
            .in_current_span(),
        );
        Ok(H1Conn {
            sender,
            meter,
            driver,
            closed,
            probe,
        })
    }

    /// Resolves when the connection has ended (the server closed an idle connection, most
    /// often).
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.clone();
        async move {
            // An error means the connection task is gone: closed as well.
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Whether the connection can take another request (not closed by either side).
    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed() && !self.driver.is_finished()
    }

    /// Whether this idle connection can take a request now; `Err` with how it ended when
    /// hyper has seen it close, or its probe finds that the server closed it (a FIN or a
    /// reset waiting) or sent bytes no request asked for (such a connection is closing, or
    /// out of step: nothing could tell its bytes from the next response's). Without a probe
    /// only what hyper has read counts.
    pub(crate) fn check_idle(&self) -> Result<(), CloseCause> {
        if !self.is_open() {
            return Err(CloseCause::RemoteClosed);
        }
        match self.probe.as_ref().map(PeerProbe::check) {
            None | Some(PeerState::Quiet) => Ok(()),
            Some(PeerState::Failed(errno)) => Err(CloseCause::Io(errno)),
            Some(_) => Err(CloseCause::RemoteClosed),
        }
    }

    /// Sends `req` and reads the whole response, calling `on_read` for every read.
    pub(crate) async fn exchange(
        &mut self,
        req: &HttpRequest,
        limits: Limits,
        on_read: OnRead,
    ) -> Result<HttpResponse, ExchangeError> {
        let request = build_request(req)?;
        self.meter.start(on_read);
        let result = self.run(request, limits).await;
        self.meter.stop();
        // `reusable` is the server's side only: whether the request asked for reuse is the
        // core's to judge (it keeps a connection only for a `Connection: Keep-Alive` request),
        // and hyper itself closes a connection whose request said `close`.
        result
    }

    async fn run(
        &mut self,
        mut request: Request<Full<Bytes>>,
        limits: Limits,
    ) -> Result<HttpResponse, ExchangeError> {
        let meter = self.meter.clone();
        let counter = meter.clone();
        hyper::ext::on_informational(&mut request, move |_| counter.interim());
        if let Err(e) = self.sender.ready().await {
            // The connection ended before the request was handed to it.
            return Err(not_sent(map_error(&e, &meter)));
        }
        // Design: `try_send_request`, so that hyper gives the request back when the
        // connection ended before it wrote any of it (the core may then send it elsewhere,
        // whatever its method: RFC 9112 §9.3.1); `send_request` reported that case like a
        // failure after the request went out.
        let sent = self.sender.try_send_request(request).await;
        let refused = meter.write_error();
        let resp = match (sent, refused) {
            (Ok(resp), _) => resp,
            (Err(e), _) if e.message().is_some() => {
                return Err(not_sent(map_error(e.error(), &meter)))
            }
            // The request could not be written and no answer came: the write's error.
            (Err(_), Some(e)) => return Err(ExchangeError::Closed(close_cause(&e))),
            (Err(e), None) => return Err(map_error(e.error(), &meter)),
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), value)
            })
            .collect();
        let too_large = HttpFailure::BodyTooLarge {
            limit: limits.max_body as u64,
        };
        // A declared length over the limit fails before any body byte is read. Only a length
        // that frames the body counts: with `Transfer-Encoding` the chunks do (RFC 9112
        // §6.3), and a 204 or 304 has no body whatever it declares (a 304 may give the
        // length the full response would have had, RFC 9110 §8.6). Taken from such a
        // response, a small false length made every later chunk copy the whole body
        // (quadratic: 0.7 s for 8 MiB in 4 KiB chunks against 67 ms, a review's measurement
        // on loopback, 2026-11-29), and a large one
        // refused a body hyper would have read.
        let framed_by_length = !matches!(status, 204 | 304)
            && !resp
                .headers()
                .contains_key(hyper::header::TRANSFER_ENCODING);
        let declared = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .filter(|_| framed_by_length)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body as u64) {
            return Err(ExchangeError::Http(too_large));
        }
        // A connection whose request was refused part way is not used again.
        let keeps = resp.version() == hyper::Version::HTTP_11
            && !wants_close(&headers)
            && meter.write_error().is_none();
        let mut body = resp.into_body();
        let mut buf = BodyBuf::new(declared, limits.max_body);
        let mut frames: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| map_error(&e, &meter))?;
            if let Ok(data) = frame.into_data() {
                frames += 1;
                if frames > FREE_BODY_FRAMES + buf.len() as u64 / MIN_BYTES_PER_FRAME {
                    return Err(ExchangeError::Http(HttpFailure::BadBody));
                }
                buf.push(&data)
                    .map_err(|()| ExchangeError::Http(too_large))?;
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: buf.finish(),
            reusable: keeps,
        })
    }
}

/// Body frames (a chunk, or a read of a sized body) a response may have beyond one per
/// [`MIN_BYTES_PER_FRAME`] bytes of body; past them it is refused as
/// [`HttpFailure::BadBody`].
///
/// Design: the body limit counts decoded bytes, and each frame costs the same work whatever
/// it carries. A server sending 1-byte chunks (`1\r\nx\r\n`, six wire bytes a body byte)
/// made the client spend 26.8 s of CPU on one task's 16 MiB limit (two attempts; 0.12 s in
/// 4 KiB chunks), an audit's measurement (2026-11-29). A real server's chunks and reads
/// carry hundreds of bytes or more.
const FREE_BODY_FRAMES: u64 = 256;
/// The fewest body bytes a frame must carry on average, past [`FREE_BODY_FRAMES`].
const MIN_BYTES_PER_FRAME: u64 = 16;

/// A response body being read.
///
/// Design: the body is the app's to keep, so it should not hold more memory than its length.
/// A declared length (already checked against the limit) is the buffer's goal: up to
/// [`RESERVE_UNSEEN`] of it is reserved at once, and the buffer doubles towards it as bytes
/// arrive, ending exactly at it. Without one the buffer doubles, but never past the limit,
/// and a result with much unused room is copied into an exact one. Letting it grow freely
/// kept up to 1.8 times the body alive with the response, and reached twice the limit while
/// reading; reserving a declared length whole let the server, by one header, make the
/// client allocate up to the limit (and, under a limit of `usize::MAX`, panic on a length
/// no allocation can hold).
struct BodyBuf {
    buf: BytesMut,
    /// The declared length, or the limit.
    goal: usize,
    max: usize,
}

/// The most of a declared body length reserved before its bytes arrive.
const RESERVE_UNSEEN: usize = 1024 * 1024;

impl BodyBuf {
    /// An empty body of at most `max` bytes; `declared` is its `Content-Length`, if any (at
    /// most `max`).
    fn new(declared: Option<u64>, max: usize) -> Self {
        let goal = declared.map_or(max, |n| usize::try_from(n).unwrap_or(max).min(max));
        let first = declared.map_or(0, |_| goal.min(RESERVE_UNSEEN));
        BodyBuf {
            buf: BytesMut::with_capacity(first),
            goal,
            max,
        }
    }

    /// The body bytes so far.
    fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends `data`; `Err` when the body would pass the limit.
    fn push(&mut self, data: &[u8]) -> Result<(), ()> {
        let need = self.buf.len() + data.len();
        if need > self.max {
            return Err(());
        }
        if need > self.goal {
            // More than the declared length: it was not the body's, so grow by doubling
            // (growing to each piece's end copied the whole body per piece).
            self.goal = self.max;
        }
        if need > self.buf.capacity() {
            // `BytesMut::reserve` may double past what it is asked for: grow by hand.
            let grown = self
                .buf
                .capacity()
                .saturating_mul(2)
                .min(self.goal)
                .max(need);
            let mut bigger = BytesMut::with_capacity(grown);
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Whether [`finish`](Self::finish) copies the body into an exact buffer: when more than
    /// an eighth of the buffer's room would go unused.
    fn copies(&self) -> bool {
        self.buf.capacity() - self.buf.len() > self.buf.len() / 8
    }

    /// The body, holding at most an eighth more memory than its length.
    fn finish(self) -> Bytes {
        if self.copies() {
            Bytes::copy_from_slice(&self.buf)
        } else {
            self.buf.freeze()
        }
    }
}

impl Drop for H1Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Builds hyper's request: `POST <path> HTTP/1.1`, the headers in the given order.
fn build_request(req: &HttpRequest) -> Result<Request<Full<Bytes>>, ExchangeError> {
    let mut request = Request::post(req.path.as_str())
        .body(Full::new(req.body.clone()))
        .map_err(|_| ExchangeError::Request)?;
    let headers = request.headers_mut();
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ExchangeError::Request)?;
        let value = HeaderValue::from_str(value).map_err(|_| ExchangeError::Request)?;
        // Design: `append`, not `insert`: a map that only grows iterates in insertion
        // order, which is the order hyper writes (the codec's sorted order).
        headers.append(name, value);
    }
    Ok(request)
}

/// Whether `Connection` says `close` (either side).
fn wants_close(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

/// Maps a hyper error to the core's vocabulary.
///
/// | hyper says | core gets |
/// |---|---|
/// | more than [`MAX_INTERIM`] interim (1xx) responses | [`HttpFailure::BadHeaders`] |
/// | parse error and the response does not start with `HTTP/`, or a bad version or status | [`HttpFailure::BadStatusLine`] |
/// | other parse error (headers, content length, head too large) | [`HttpFailure::BadHeaders`] |
/// | message incomplete, connection closed | [`CloseCause::RemoteClosed`] |
/// | body read failed: unexpected EOF | [`CloseCause::RemoteClosed`] |
/// | a TLS failure under HTTP (a damaged record, a peer's alert) | [`CloseCause::Damaged`] |
/// | body read failed: invalid data (chunk framing) | [`HttpFailure::BadBody`] |
/// | another IO error | [`CloseCause::Io`] with its errno |
/// | the request itself was refused (user error) | [`ExchangeError::Request`] |
fn map_error(err: &hyper::Error, meter: &Meter) -> ExchangeError {
    if meter.too_many_interim() {
        return ExchangeError::Http(HttpFailure::BadHeaders);
    }
    if err.is_parse_status() || (err.is_parse() && meter.bad_status_line()) {
        return ExchangeError::Http(HttpFailure::BadStatusLine);
    }
    if err.is_parse() || err.is_parse_too_large() {
        let text = err.to_string();
        if text.contains("version") {
            return ExchangeError::Http(HttpFailure::BadStatusLine);
        }
        return ExchangeError::Http(HttpFailure::BadHeaders);
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return ExchangeError::Closed(CloseCause::RemoteClosed);
    }
    if let Some(io) = io_source(err) {
        if is_tls_failure(io) {
            return ExchangeError::Closed(CloseCause::Damaged);
        }
        return match io.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                ExchangeError::Http(HttpFailure::BadBody)
            }
            _ => ExchangeError::Closed(close_cause(io)),
        };
    }
    if err.is_user() {
        return ExchangeError::Request;
    }
    ExchangeError::Closed(CloseCause::Io(-1))
}

/// `err` for a request of which nothing was written: an ended connection is
/// [`ExchangeError::NotSent`].
fn not_sent(err: ExchangeError) -> ExchangeError {
    match err {
        ExchangeError::Closed(cause) => ExchangeError::NotSent(cause),
        other => other,
    }
}

/// The first `io::Error` in the error's source chain.
fn io_source(err: &hyper::Error) -> Option<&io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// What the [`Metered`] stream shares with its [`H1Conn`].
#[derive(Default)]
struct Meter {
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    on_read: Option<OnRead>,
    /// The first bytes of the current response.
    prefix: Vec<u8>,
    /// A write the server refused (see [`Metered::poll_write`]): its error kind and errno.
    write_failed: Option<(io::ErrorKind, Option<i32>)>,
    /// Interim (1xx) responses before the current response's final one.
    interim: usize,
}

impl Meter {
    fn start(&self, on_read: OnRead) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.on_read = Some(on_read);
        s.prefix.clear();
        s.write_failed = None;
        s.interim = 0;
    }

    /// Notes an interim (1xx) response hyper skipped.
    fn interim(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.interim += 1;
    }

    /// More interim responses came than [`MAX_INTERIM`]: the response fails.
    fn too_many_interim(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.interim > MAX_INTERIM
    }

    /// Notes a write the server refused.
    fn write_failed(&self, e: &io::Error) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.write_failed.get_or_insert((e.kind(), e.raw_os_error()));
    }

    /// The refused write, if one was: as the error it was.
    fn write_error(&self) -> Option<io::Error> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.write_failed.map(|(kind, errno)| match errno {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::from(kind),
        })
    }

    fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.on_read = None;
    }

    fn on_read(&self, data: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let room = STATUS_PREFIX.len().saturating_sub(s.prefix.len());
        let take = room.min(data.len());
        s.prefix.extend_from_slice(&data[..take]);
        if let Some(f) = &s.on_read {
            f(data.len());
        }
    }

    /// The response so far does not start like a status line.
    fn bad_status_line(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        !STATUS_PREFIX.starts_with(&s.prefix)
    }
}

/// A stream that tells its [`Meter`] about every read.
struct Metered {
    inner: Box<dyn LinkStream>,
    meter: Arc<Meter>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.meter.too_many_interim() {
            // hyper reads on past any number of them: stop it here.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many interim responses",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let got = &buf.filled()[before..];
            if !got.is_empty() {
                self.meter.on_read(got);
            }
        }
        res
    }
}

impl Metered {
    /// A write's result as hyper should see it.
    ///
    /// Design: a server may answer before it has read the whole request (a `413` to a large
    /// upload) and close; writing the rest of the body then fails (`EPIPE`, `ECONNRESET`),
    /// and hyper gave up on the request with that error, dropping the complete answer it
    /// could still read. So a refused write is noted and reported to hyper as done: hyper
    /// goes on to read the response, and only when none comes does the exchange fail, with
    /// the write's error (what it failed with before). Any other write error is hyper's at
    /// once.
    fn written(&self, res: Poll<io::Result<usize>>, len: usize) -> Poll<io::Result<usize>> {
        match res {
            Poll::Ready(Err(e)) if refused(&e) => {
                self.meter.write_failed(&e);
                Poll::Ready(Ok(len))
            }
            other => other,
        }
    }

    /// Whether a write was already refused: the rest of the request goes nowhere.
    fn refusing(&self) -> bool {
        let s = self
            .meter
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.write_failed.is_some()
    }
}

/// Whether a write error says the server no longer takes the request.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refusing() {
            return Poll::Ready(Ok(buf.len()));
        }
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(res, buf.len())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refusing() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.refusing() {
            return Poll::Ready(Ok(len));
        }
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(res, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Every HTTP/1.x status line starts with this.
const STATUS_PREFIX: &[u8] = b"HTTP/";
/// hyper's smallest accepted read buffer.
const MIN_HEAD_BUFFER: usize = 8 * 1024;
/// The most interim (1xx) responses accepted before a final one.
///
/// Design: hyper skips interim responses without limit, parsing each. A server sending
/// `100 Continue` endlessly kept a runtime worker parsing them until the read/write timeout,
/// and the driver waiting behind it (its timers fired seconds late, stats went unanswered).
/// Real servers send one or two (`100 Continue`, `103 Early Hints`); past this many the
/// response fails as a bad head, after at most one more read buffer of them (the head limit).
const MAX_INTERIM: usize = 32;

/// The most header lines a response head of at most `max_head` bytes may have: one per 128
/// bytes of the limit, at least hyper's default 100 and at most 1,024 (hyper sets room for
/// every allowed line aside for each response, about 64 bytes each).
fn max_header_lines(max_head: usize) -> usize {
    (max_head / 128).clamp(100, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Limits = Limits {
        max_head: 16 * 1024,
        max_body: 1024,
    };

    fn request(body: &'static [u8]) -> HttpRequest {
        HttpRequest {
            path: "/cgi-bin/x".to_owned(),
            headers: vec![
                ("Content-Length".to_owned(), body.len().to_string()),
                ("Host".to_owned(), "s.example".to_owned()),
            ],
            body: Bytes::from_static(body),
        }
    }

    /// Runs one exchange against a server that reads the request head and answers `reply`
    /// (then closes).
    async fn against(reply: &'static [u8]) -> (Result<HttpResponse, ExchangeError>, usize) {
        against_with(reply.to_vec(), LIMITS).await
    }

    /// [`against`] with other limits.
    async fn against_with(
        reply: Vec<u8>,
        limits: Limits,
    ) -> (Result<HttpResponse, ExchangeError>, usize) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            let _ = server.read(&mut buf).await;
            let _ = server.write_all(&reply).await;
            let _ = server.shutdown().await;
        });
        let mut conn = H1Conn::handshake(Box::new(client), None, limits)
            .await
            .unwrap();
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reads.clone();
        let res = conn
            .exchange(
                &request(b"hello"),
                limits,
                Box::new(move |n| {
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }),
            )
            .await;
        (res, reads.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_huge_declared_length_under_no_limit_fails_when_the_body_stops_short() {
        let limits = Limits {
            max_head: 16 * 1024,
            max_body: usize::MAX,
        };
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nabc".to_vec();
        let (res, _) = against_with(reply, limits).await;
        assert!(
            matches!(res, Err(ExchangeError::Closed(_))),
            "the server closed in the body: {res:?}"
        );
    }

    #[tokio::test]
    async fn reads_a_content_length_response_and_counts_its_bytes() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc";
        let (res, read) = against(reply).await;
        let ex = res.unwrap();
        assert_eq!(ex.status, 200);
        assert_eq!(&ex.body[..], b"abc");
        assert_eq!(ex.header("x-a"), Some("b"));
        assert_eq!(read, reply.len());
    }

    #[tokio::test]
    async fn reads_a_chunked_response() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (res, _) = against(reply).await;
        assert_eq!(&res.unwrap().body[..], b"abcde");
    }

    #[tokio::test]
    async fn maps_broken_responses_to_typed_errors() {
        let cases: [(&[u8], ExchangeError); 6] = [
            (
                b"GARBAGE NOT HTTP\r\n\r\n",
                ExchangeError::Http(HttpFailure::BadStatusLine),
            ),
            (
                b"HTTP/1.1 2x0 OK\r\n\r\n",
                ExchangeError::Http(HttpFailure::BadStatusLine),
            ),
            (
                b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
                ExchangeError::Http(HttpFailure::BadHeaders),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                ExchangeError::Closed(CloseCause::RemoteClosed),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
                ExchangeError::Http(HttpFailure::BadBody),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
                ExchangeError::Http(HttpFailure::BodyTooLarge { limit: 1024 }),
            ),
        ];
        for (reply, want) in cases {
            let (res, _) = against(reply).await;
            assert_eq!(res.err(), Some(want), "{}", String::from_utf8_lossy(reply));
        }
    }

    #[tokio::test]
    async fn an_oversized_chunked_body_is_cut_at_the_limit() {
        let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            reply.extend_from_slice(b"200\r\n");
            reply.extend_from_slice(&[b'x'; 0x200]);
            reply.extend_from_slice(b"\r\n");
        }
        reply.extend_from_slice(b"0\r\n\r\n");
        let reply: &'static [u8] = reply.leak();
        let (res, _) = against(reply).await;
        assert_eq!(
            res.err(),
            Some(ExchangeError::Http(HttpFailure::BodyTooLarge {
                limit: 1024
            }))
        );
    }

    #[tokio::test]
    async fn an_endless_run_of_interim_responses_is_a_bad_head() {
        let with_interim = |n: usize| {
            let mut reply = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(n);
            reply.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            reply
        };
        // A few are skipped, as before.
        let (res, _) = against_with(with_interim(MAX_INTERIM), LIMITS).await;
        assert_eq!(&res.unwrap().body[..], b"ok");
        // hyper read on through any number of them (an endless run held a worker until the
        // timeouts).
        let (res, _) = against_with(with_interim(20_000), LIMITS).await;
        assert_eq!(
            res.unwrap_err(),
            ExchangeError::Http(HttpFailure::BadHeaders)
        );
    }

    #[tokio::test]
    async fn an_empty_reply_is_a_remote_close() {
        let (res, read) = against(b"").await;
        assert_eq!(
            res.err(),
            Some(ExchangeError::Closed(CloseCause::RemoteClosed))
        );
        assert_eq!(read, 0);
    }

    #[tokio::test]
    async fn keep_alive_needs_both_sides() {
        let (res, _) = against(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert!(res.unwrap().reusable);
        let (res, _) =
            against(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
        assert!(!res.unwrap().reusable);
    }

    #[tokio::test]
    async fn a_request_for_a_connection_that_already_ended_is_not_sent() {
        let (client, server) = tokio::io::duplex(1024);
        let mut conn = H1Conn::handshake(Box::new(client), None, LIMITS)
            .await
            .unwrap();
        assert_eq!(conn.check_idle(), Ok(()));
        drop(server);
        conn.closed().await;
        assert_eq!(conn.check_idle(), Err(CloseCause::RemoteClosed));
        // Before, this was a failure like any other (`Closed`), as if the request had gone
        // out.
        let res = conn
            .exchange(&request(b"x"), LIMITS, Box::new(|_| {}))
            .await;
        assert_eq!(
            res.err(),
            Some(ExchangeError::NotSent(CloseCause::RemoteClosed))
        );
    }

    #[tokio::test]
    async fn an_invalid_header_name_is_a_request_error() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut conn = H1Conn::handshake(Box::new(client), None, LIMITS)
            .await
            .unwrap();
        let mut req = request(b"");
        req.headers.push(("Bad Name".to_owned(), "x".to_owned()));
        let res = conn.exchange(&req, LIMITS, Box::new(|_| {})).await;
        assert_eq!(res.err(), Some(ExchangeError::Request));
    }

    /// A head of `lines` header lines padded to `len` bytes in all, then a 2-byte body.
    fn head_of(lines: usize, len: usize) -> Vec<u8> {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
        for i in 0..lines {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        let pad = len.saturating_sub(head.len() + b"X-Pad: \r\n\r\n".len());
        head.extend_from_slice(b"X-Pad: ");
        head.extend(std::iter::repeat_n(b'p', pad));
        head.extend_from_slice(b"\r\n\r\n");
        head.extend_from_slice(b"ok");
        head
    }

    #[tokio::test]
    async fn a_head_of_many_lines_within_the_limit_is_read() {
        let limits = Limits {
            max_head: 128 * 1024,
            max_body: 1024,
        };
        // hyper's own default refused more than 100 lines.
        let (res, _) = against_with(head_of(500, 0), limits).await;
        assert_eq!(&res.unwrap().body[..], b"ok");
        let (res, _) = against_with(head_of(1100, 0), limits).await;
        assert_eq!(
            res.unwrap_err(),
            ExchangeError::Http(HttpFailure::BadHeaders),
            "more lines than 1,024"
        );
    }

    #[tokio::test]
    async fn the_head_limit_is_exact() {
        for max_head in [1024, 16 * 1024, 128 * 1024] {
            let limits = Limits {
                max_head,
                max_body: 1024,
            };
            let (res, _) = against_with(head_of(3, max_head - 64), limits).await;
            assert_eq!(&res.unwrap().body[..], b"ok", "a head within {max_head}");
            // Heads up to 1.9 times the limit used to pass.
            let (res, _) = against_with(head_of(3, max_head + max_head / 2), limits).await;
            assert_eq!(
                res.unwrap_err(),
                ExchangeError::Http(HttpFailure::BadHeaders),
                "a head of 1.5 times {max_head}"
            );
        }
    }

    #[tokio::test]
    async fn a_length_beside_chunks_or_on_a_304_does_not_frame_the_body() {
        // Before, the length was taken from these responses too: the chunked body below was
        // refused as too large, as was the 304 (whose body is empty).
        let reply =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999999\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        let (res, _) = against(reply).await;
        assert_eq!(&res.unwrap().body[..], b"ab");
        let (res, _) =
            against(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 999999\r\n\r\n").await;
        let res = res.unwrap();
        assert_eq!((res.status, res.body.len()), (304, 0));
    }

    #[test]
    fn a_body_longer_than_its_declared_length_grows_by_doubling() {
        // A false small length (hyper reads the chunks, not it) made each piece past it
        // reallocate and copy the whole body.
        let mut body = BodyBuf::new(Some(1), 16 * 1024 * 1024);
        let mut grows = 0;
        for _ in 0..8192 {
            let before = body.buf.capacity();
            body.push(&[7u8; 1024]).unwrap();
            if body.buf.capacity() != before {
                grows += 1;
            }
        }
        assert_eq!(body.len(), 8 * 1024 * 1024);
        assert!(grows <= 30, "{grows} reallocations for 8,192 pieces");
    }

    #[test]
    fn a_body_keeps_little_more_memory_than_its_length() {
        let max = 16 * 1024 * 1024;
        // Read in pieces without a declared length, as a chunked body is.
        for (piece, count) in [(9000, 1034), (8192, 1136), (9000, 900), (1, 5000)] {
            let mut body = BodyBuf::new(None, max);
            for _ in 0..count {
                body.push(&vec![7u8; piece]).unwrap();
                assert!(body.buf.capacity() <= max, "never past the limit");
            }
            let len = piece * count;
            // Growth by doubling: never more than twice the body while reading.
            assert!(body.buf.capacity() <= 2 * len, "{piece} × {count}");
            let kept = if body.copies() {
                len
            } else {
                body.buf.capacity()
            };
            assert!(kept <= len + len / 8, "{piece} × {count}: {kept} kept");
            assert_eq!(body.finish().len(), len);
        }
        // A declared length is reserved exactly when small.
        let mut body = BodyBuf::new(Some(93_000), max);
        assert_eq!(body.buf.capacity(), 93_000);
        for _ in 0..93 {
            body.push(&[1u8; 1000]).unwrap();
        }
        assert_eq!(body.buf.capacity(), 93_000);
        assert!(!body.copies());
        // A large one is reserved as its bytes come, and the buffer ends exactly at it.
        let mut body = BodyBuf::new(Some(9_300_000), max);
        assert_eq!(body.buf.capacity(), RESERVE_UNSEEN);
        for _ in 0..93 {
            body.push(&[1u8; 100_000]).unwrap();
            assert!(body.buf.capacity() <= 2 * body.buf.len().max(RESERVE_UNSEEN));
        }
        assert_eq!(body.buf.capacity(), 9_300_000);
        assert!(!body.copies());
        // A length no memory holds, under a limit that does not stop it, reserves nothing
        // it has not seen (it panicked, or aborted the process).
        let body = BodyBuf::new(Some(1 << 63), usize::MAX);
        assert_eq!(body.buf.capacity(), RESERVE_UNSEEN);
        // The limit holds whatever the pieces.
        let mut body = BodyBuf::new(None, 1000);
        body.push(&[0u8; 600]).unwrap();
        assert!(body.push(&[0u8; 401]).is_err());
        assert!(body.buf.capacity() <= 1000);
    }
}
