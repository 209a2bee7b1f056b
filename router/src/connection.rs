//! One task per client connection: read a whole frame, decode it, run the
//! command, answer with the client's `requestID` (compressed the way the
//! request was). A frame that cannot be decoded gets an error reply where
//! its header can be read, then the connection closes.
//!
//! An idle connection holds no buffer: a request is first read into a
//! small scratch array inside the read future, the read buffer is
//! allocated only for the bytes of a message, and both buffers are given
//! back once the reply is written.

use std::sync::Arc;

use bson::doc;
use bytes::{Bytes, BytesMut};
use shardgate_wire::compression::compress_frame;
use shardgate_wire::op_msg::encode_msg;
use shardgate_wire::{
    check_frame, Compressor, Message, MsgHeader, OpMsg, OpQuery, OpReply, WireError, HEADER_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::commands::{dispatch, hello, Reply, Session};
use crate::error::RouterError;
use crate::state::RouterState;

/// Ids of the messages the router sends on one connection.
#[derive(Default)]
struct ReplyIds(i32);

impl ReplyIds {
    fn next(&mut self) -> i32 {
        self.0 = self.0.wrapping_add(1) & i32::MAX;
        self.0
    }
}

/// Why reading a frame stopped.
enum ReadError {
    /// The client closed the connection (or shutdown began between requests).
    Closed,
    /// The bytes are not a valid frame; `header` is what could be read of it.
    Wire(WireError, Option<MsgHeader>),
    /// The socket failed.
    Io(std::io::Error),
    /// A limit was hit (slow client, buffered-bytes budget).
    Limit(String),
}

/// Serves one client until it disconnects, sends garbage, or shutdown begins.
pub(crate) async fn serve<S>(
    stream: S,
    state: Arc<RouterState>,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::new();
    let mut out: Vec<u8>;
    let mut ids = ReplyIds::default();
    let limits = FrameLimits {
        timeout: std::time::Duration::from_secs(state.config.limits.frame_timeout_secs),
        budget: Some(state.buffered.clone()),
    };
    loop {
        // Idle until the next request: hold no buffers.
        if buf.is_empty() {
            buf = BytesMut::new();
        }
        out = Vec::new();
        let frame = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            frame = read_frame(&mut rd, &mut buf, &limits) => frame,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                unreadable(e, &buf, &mut wr, &session, &mut ids).await;
                break;
            }
        };
        // The permit is held until this request is answered.
        let Frame {
            bytes: frame,
            _permit: _held,
        } = frame;
        let header = MsgHeader::parse(&frame).ok();
        let decoded = match Message::decode(frame) {
            Ok(d) => d,
            Err(e) => {
                reject(&mut wr, &e, header, &session, ids.next()).await;
                break;
            }
        };
        let compressor = decoded
            .compressor
            .filter(|c| session.compressors.contains(c));
        out.clear();
        // Boxed: the state of a running command (every handler the router
        // has, nested) lives on the heap only while a request is served,
        // not inline in every idle connection's task.
        let how = (header, compressor);
        let close = Box::pin(respond(
            &state,
            &mut session,
            decoded,
            &mut wr,
            how,
            &mut out,
            &mut ids,
        ))
        .await;
        if close {
            break;
        }
    }
    let _ = wr.shutdown().await;
    Box::pin(state.cursors.kill_for_connection(session.connection_id)).await;
}

/// Answers one request and writes its replies; whether the connection
/// closes after.
async fn respond<W: AsyncWrite + Unpin>(
    state: &Arc<RouterState>,
    session: &mut Session,
    decoded: shardgate_wire::message::Decoded,
    wr: &mut W,
    how: (Option<MsgHeader>, Option<Compressor>),
    out: &mut Vec<u8>,
    ids: &mut ReplyIds,
) -> bool {
    let answered = answer(state, session, decoded, out, ids).await;
    send_replies(state, session, answered, wr, how, out, ids).await
}

/// Writes the reply that answering left in `out`, and for an exhaust
/// cursor each next batch without a request for it, until the cursor is
/// done or the client goes. Whether the connection closes after.
async fn send_replies<W: AsyncWrite + Unpin>(
    state: &Arc<RouterState>,
    session: &mut Session,
    mut answered: Result<Option<Written>, Closing>,
    wr: &mut W,
    (header, compressor): (Option<MsgHeader>, Option<Compressor>),
    out: &mut Vec<u8>,
    ids: &mut ReplyIds,
) -> bool {
    loop {
        let (close_after, exhaust) = match answered {
            Ok(Some(written)) => written,
            Ok(None) => return false,
            Err(Closing::Now) => return true,
            Err(Closing::Reject(e)) => {
                reject(wr, &e, header, session, ids.next()).await;
                return true;
            }
        };
        let written = match compressor.map(|c| compress_frame(out, c)) {
            Some(Ok(z)) => wr.write_all(&z).await,
            _ => wr.write_all(out).await,
        };
        let Some((msg, reply_id)) = exhaust.filter(|_| written.is_ok() && !close_after) else {
            return written.is_err() || close_after;
        };
        out.clear();
        answered = answer_msg(state, session, &msg, reply_id, out, ids).await;
    }
}

/// Why a connection closes after a request.
enum Closing {
    /// At once, without a reply.
    Now,
    /// With an error reply to the frame.
    Reject(WireError),
}

/// What answering a request wrote into `out`: whether the connection
/// closes after it, and for an exhaust cursor the `getMore` to run next
/// with the id of the reply it follows.
type Written = (bool, Option<(OpMsg, i32)>);

/// Runs one request and encodes its reply into `out`; `None` for a
/// `moreToCome` request (no reply).
async fn answer(
    state: &Arc<RouterState>,
    session: &mut Session,
    decoded: shardgate_wire::message::Decoded,
    out: &mut Vec<u8>,
    ids: &mut ReplyIds,
) -> Result<Option<Written>, Closing> {
    let request_id = decoded.header.request_id;
    match decoded.message {
        Message::Msg(msg) => answer_msg(state, session, &msg, request_id, out, ids).await,
        Message::Query(q) => {
            let reply = legacy_query(state, session, &q).await;
            if std::mem::take(&mut session.close_now) {
                tracing::info!("test fault: failCommand closes the connection");
                return Err(Closing::Now);
            }
            reply.encode_into(ids.next(), request_id, out);
            Ok(Some((false, None)))
        }
        Message::Reply(_) => Err(Closing::Reject(WireError::Malformed(
            "clients may not send OP_REPLY".into(),
        ))),
    }
}

/// Runs an OP_MSG request (`request_id`) and encodes its reply. A
/// `getMore` with `exhaustAllowed` whose cursor stays open is answered
/// with `moreToCome`, as mongod and mongos (≥ 7.1) stream exhaust cursors:
/// the same `getMore` runs next, its reply answering this one.
async fn answer_msg(
    state: &Arc<RouterState>,
    session: &mut Session,
    msg: &OpMsg,
    request_id: i32,
    out: &mut Vec<u8>,
    ids: &mut ReplyIds,
) -> Result<Option<Written>, Closing> {
    let (reply, malformed) = dispatch(state, session, msg).await;
    if std::mem::take(&mut session.close_now) {
        tracing::info!("test fault: failCommand closes the connection");
        return Err(Closing::Now);
    }
    if state.config.enable_test_commands && is_write(msg) && state.take_close_after_write() {
        tracing::info!("test fault: closing the connection after a write");
        return Err(Closing::Now);
    }
    if msg.flags.more_to_come() && !malformed {
        return Ok(None);
    }
    let reply_id = ids.next();
    let exhaust =
        msg.flags.exhaust_allowed() && !malformed && is_get_more(msg) && open_cursor_reply(&reply);
    let flags = if exhaust {
        shardgate_wire::op_msg::OpMsgFlags::MORE_TO_COME
    } else {
        0
    };
    match reply {
        Reply::Body(body) => encode_msg(reply_id, request_id, flags, &body, &[], out),
        Reply::Msg(m) => {
            let reply = OpMsg {
                flags: shardgate_wire::op_msg::OpMsgFlags(flags),
                ..m
            };
            reply.encode_into(reply_id, request_id, out);
        }
    }
    Ok(Some((malformed, exhaust.then(|| (msg.clone(), reply_id)))))
}

/// Whether a request is a `getMore`.
fn is_get_more(msg: &OpMsg) -> bool {
    let body = msg.body();
    matches!(body.iter().next(), Some(Ok((name, _))) if name.as_str() == "getMore")
}

/// Whether a reply is a successful cursor batch whose cursor stays open.
fn open_cursor_reply(reply: &Reply) -> bool {
    let body = match reply {
        Reply::Body(b) => bson::RawDocument::from_bytes(b).ok(),
        Reply::Msg(m) => Some(m.body()),
    };
    body.is_some_and(|b| {
        b.get_document("cursor")
            .and_then(|c| c.get_i64("id"))
            .is_ok_and(|id| id != 0)
    })
}

/// Answers (where it can) a frame that could not be read whole; the
/// connection closes after.
async fn unreadable<W: AsyncWrite + Unpin>(
    e: ReadError,
    buf: &[u8],
    wr: &mut W,
    session: &Session,
    ids: &mut ReplyIds,
) {
    match e {
        ReadError::Limit(why) => {
            tracing::info!(peer = %session.peer, %why, "closing a client connection");
            if let Ok(header) = MsgHeader::parse(buf) {
                let body = RouterError::command(6, "HostUnreachable", why).to_reply();
                write_error(wr, &body, header, ids.next()).await;
            }
        }
        ReadError::Closed => {}
        ReadError::Io(e) => {
            tracing::debug!(error = %e, peer = %session.peer, "client connection failed");
        }
        ReadError::Wire(e, header) => reject(wr, &e, header, session, ids.next()).await,
    }
}

/// What reading a frame may use: how long a begun frame may take, and the
/// router-wide budget of buffered bytes (in KB permits).
pub(crate) struct FrameLimits {
    /// A frame that has begun must be whole within this.
    pub timeout: std::time::Duration,
    /// Buffered-bytes budget; `None` for no budget.
    pub budget: Option<Arc<tokio::sync::Semaphore>>,
}

/// A whole frame and its share of the buffered-bytes budget (released when
/// dropped, once the frame was handled).
pub(crate) struct Frame {
    bytes: Bytes,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Reads one whole frame, reserving room only after its length was checked
/// and the buffered-bytes budget granted it.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Frame, ReadError> {
    let mut permit = None;
    let mut deadline = None;
    loop {
        match check_frame(buf) {
            Ok(Some(len)) => {
                return Ok(Frame {
                    bytes: buf.split_to(len).freeze(),
                    _permit: permit,
                })
            }
            Ok(None) => {}
            Err(e) => {
                // Read the rest of the header, if it is coming, to answer it.
                read_header_rest(rd, buf).await;
                return Err(ReadError::Wire(e, MsgHeader::parse(buf).ok()));
            }
        }
        if !buf.is_empty() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + limits.timeout);
        }
        if buf.len() >= 4 {
            let want = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if permit.is_none() {
                permit = reserve(limits, want).await?;
            }
            buf.reserve(want.saturating_sub(buf.len()));
        }
        let read = match deadline {
            Some(d) => match tokio::time::timeout_at(d, read_some(rd, buf)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ReadError::Limit(format!(
                        "a message did not arrive whole within {} s",
                        limits.timeout.as_secs()
                    )))
                }
            },
            None => read_some(rd, buf).await,
        };
        match read {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => {
                return Err(ReadError::Wire(
                    WireError::Truncated("connection closed mid-message"),
                    None,
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Bytes of a new request read before the read buffer is allocated.
const SCRATCH: usize = 512;

/// Reads more of a frame into `buf`. Between requests `buf` is empty and
/// unallocated: the read goes to a small array first, so a connection
/// waiting for its next request holds no buffer.
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if !buf.is_empty() || buf.capacity() > 0 {
        return rd.read_buf(buf).await;
    }
    let mut scratch = [0u8; SCRATCH];
    let n = rd.read(&mut scratch).await?;
    buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
    Ok(n)
}

/// Reads what is missing of a frame's header, if it arrives soon.
async fn read_header_rest<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) {
    if buf.len() >= HEADER_LEN {
        return;
    }
    let mut rest = [0u8; HEADER_LEN];
    let want = HEADER_LEN - buf.len();
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        rd.read_exact(&mut rest[..want]),
    )
    .await;
    if let Ok(Ok(_)) = read {
        buf.extend_from_slice(&rest[..want]);
    }
}

/// The buffered-bytes budget for a `want`-byte frame; waiting for it takes
/// at most half the frame time.
async fn reserve(
    limits: &FrameLimits,
    want: usize,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ReadError> {
    let Some(budget) = &limits.budget else {
        return Ok(None);
    };
    let kb = want.div_ceil(1024).max(1) as u32;
    match tokio::time::timeout(limits.timeout / 2, budget.clone().acquire_many_owned(kb)).await {
        Ok(Ok(p)) => Ok(Some(p)),
        _ => Err(ReadError::Limit(format!(
            "the router is buffering too many incoming bytes to accept a {want}-byte message now; retry"
        ))),
    }
}

/// Answers the first request of a connection the router will not serve
/// (over a connection limit) with `why`, then closes it.
pub(crate) async fn refuse<S>(stream: S, why: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::new();
    let limits = FrameLimits {
        timeout: std::time::Duration::from_secs(2),
        budget: None,
    };
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        read_frame(&mut rd, &mut buf, &limits),
    )
    .await;
    if let Ok(Ok(frame)) = first {
        if let Ok(header) = MsgHeader::parse(&frame.bytes) {
            let body = RouterError::command(6, "HostUnreachable", why).to_reply();
            write_error(&mut wr, &body, header, 1).await;
        }
    }
    let _ = wr.shutdown().await;
}

/// Answers an undecodable frame with an error (OP_REPLY for OP_QUERY, else
/// OP_MSG) when its header is known.
async fn reject<W: AsyncWrite + Unpin>(
    wr: &mut W,
    e: &WireError,
    header: Option<MsgHeader>,
    session: &Session,
    reply_id: i32,
) {
    tracing::info!(error = %e, peer = %session.peer, "closing connection after a malformed message");
    let Some(header) = header else { return };
    let body = RouterError::Wire(e.clone()).to_reply();
    write_error(wr, &body, header, reply_id).await;
}

/// Writes an error reply to the request with `header`: OP_REPLY for an
/// OP_QUERY, else OP_MSG.
async fn write_error<W: AsyncWrite + Unpin>(
    wr: &mut W,
    body: &[u8],
    header: MsgHeader,
    reply_id: i32,
) {
    let mut out = Vec::new();
    if header.op_code == 2004 {
        OpReply {
            response_flags: OpReply::QUERY_FAILURE,
            document: body.to_vec().into(),
        }
        .encode_into(reply_id, header.request_id, &mut out);
    } else {
        encode_msg(reply_id, header.request_id, 0, body, &[], &mut out);
    }
    let _ = wr.write_all(&out).await;
}

/// OP_QUERY is only for the legacy handshake (`hello`/`isMaster` on
/// `db.$cmd`, possibly wrapped in `$query`).
async fn legacy_query(state: &RouterState, session: &mut Session, q: &OpQuery) -> OpReply {
    let query = q.query();
    let cmd = match query.get_document("$query") {
        Ok(inner) => inner,
        Err(_) => query,
    };
    let name = cmd
        .iter()
        .next()
        .and_then(|e| e.ok())
        .map(|(k, _)| k.as_str());
    let is_handshake = q.full_collection_name.ends_with(".$cmd")
        && matches!(name, Some("hello" | "isMaster" | "ismaster"));
    let failing = match name {
        Some(name) if is_handshake => handshake_fail_point(state, session, name, cmd).await,
        _ => None,
    };
    let (flags, body) = if let Some(error) = failing {
        (OpReply::QUERY_FAILURE, error)
    } else if is_handshake {
        let mut d = hello(session, cmd, name != Some("hello"));
        crate::auth::hello_extras(state, session, cmd, &mut d).await;
        d.insert("ok", 1.0);
        (0, d.to_vec().unwrap_or_default())
    } else {
        let d = doc! {
            "ok": 0.0,
            "errmsg": "OP_QUERY is no longer supported except for the hello handshake; use OP_MSG",
            "code": 352,
            "codeName": "UnsupportedOpQueryCommand",
        };
        (OpReply::QUERY_FAILURE, d.to_vec().unwrap_or_default())
    };
    OpReply {
        response_flags: flags,
        document: body.into(),
    }
}

/// `failCommand` on a legacy handshake, as mongod applies it there too
/// (the application name from the handshake's own metadata): the error
/// reply, or none (then `session.close_now` may say to close instead).
async fn handshake_fail_point(
    state: &RouterState,
    session: &mut Session,
    name: &str,
    cmd: &bson::RawDocument,
) -> Option<Vec<u8>> {
    let app = cmd
        .get_document("client")
        .and_then(|c| c.get_document("application"))
        .and_then(|a| a.get_str("name"))
        .ok()
        .map(str::to_owned)
        .or_else(|| session.slot.app_name());
    let ctx = crate::labels::Context::default();
    let action = state.fail_points.check(name, app.as_deref(), ctx)?;
    if let Some(d) = action.block {
        tokio::time::sleep(d).await;
    }
    if action.close {
        session.close_now = true;
        return None;
    }
    action.error.as_ref().and_then(|e| e.to_vec().ok())
}

/// Whether a message is a write command (for the test-only fault hook).
fn is_write(msg: &OpMsg) -> bool {
    let name = msg
        .body()
        .iter()
        .next()
        .and_then(|e| e.ok())
        .map(|(k, _)| k);
    name.and_then(|n| crate::commands::registry().get(n.as_str()))
        .is_some_and(|spec| spec.writes)
}
