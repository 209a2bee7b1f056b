//! One connection to a shard: send a whole frame, read a whole frame.

use bytes::{Bytes, BytesMut};
use shardgate_wire::{check_frame, Message, MsgHeader, OpMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to a shard: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// An open, handshaken connection to one shard.
pub(crate) struct ShardConn {
    stream: Box<dyn Io>,
    buf: BytesMut,
    next_request_id: i32,
    /// Pool generation this connection was opened in.
    pub(crate) generation: u64,
    /// When it was last returned to the pool.
    pub(crate) last_used: std::time::Instant,
}

impl ShardConn {
    /// Connects and runs the `hello` handshake.
    pub(crate) async fn connect(
        addr: &str,
        generation: u64,
        auth: Option<&crate::config::ShardAuth>,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> std::io::Result<ShardConn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match tls {
            Some(connector) => {
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| std::io::Error::other(format!("shard TLS name {host}: {e}")))?;
                Box::new(connector.connect(name, tcp).await?)
            }
            None => Box::new(tcp),
        };
        let mut conn = ShardConn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            next_request_id: 1,
            generation,
            last_used: std::time::Instant::now(),
        };
        let hello = bson::doc! {"hello": 1, "$db": "admin"}
            .to_vec()
            .map_err(std::io::Error::other)?;
        let reply = conn.round_trip(&OpMsg::from_body(hello)).await?;
        let ok = reply
            .body()
            .get("ok")
            .ok()
            .flatten()
            .and_then(|v| v.as_f64().or(v.as_i32().map(f64::from)))
            .unwrap_or(0.0);
        if ok != 1.0 {
            return Err(std::io::Error::other("shard refused hello"));
        }
        if let Some(auth) = auth {
            conn.authenticate(auth).await?;
        }
        Ok(conn)
    }

    /// Logs in with the router's credentials (SCRAM). Errors never carry
    /// the password.
    async fn authenticate(&mut self, auth: &crate::config::ShardAuth) -> std::io::Result<()> {
        use crate::scram::{ClientScram, Mechanism};
        let denied = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("authentication as {}@{} failed: {why}", auth.user, auth.db),
            )
        };
        let mechanism = Mechanism::from_name(&auth.mechanism)
            .ok_or_else(|| denied(format!("unknown mechanism {}", auth.mechanism)))?;
        let (mut client, first) =
            ClientScram::start(mechanism, &auth.user, &auth.password).map_err(denied)?;
        let bin = |bytes: Vec<u8>| {
            bson::Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes,
            })
        };
        let reply = self
            .command(bson::doc! {
                "saslStart": 1, "mechanism": &auth.mechanism, "payload": bin(first),
                "autoAuthorize": 1, "options": {"skipEmptyExchange": true}, "$db": &auth.db,
            })
            .await?
            .map_err(denied)?;
        let id = reply
            .get("conversationId")
            .cloned()
            .unwrap_or(bson::Bson::Int32(1));
        let server_first = payload_of(&reply);
        let last = client.finish(&server_first).map_err(denied)?;
        let mut reply = self
            .command(bson::doc! {"saslContinue": 1, "conversationId": id.clone(), "payload": bin(last), "$db": &auth.db})
            .await?
            .map_err(denied)?;
        client.verify(&payload_of(&reply)).map_err(denied)?;
        while !reply.get_bool("done").unwrap_or(true) {
            reply = self
                .command(bson::doc! {"saslContinue": 1, "conversationId": id.clone(), "payload": bin(Vec::new()), "$db": &auth.db})
                .await?
                .map_err(denied)?;
        }
        Ok(())
    }

    /// Runs a command; the inner error is the server's `errmsg`.
    async fn command(
        &mut self,
        body: bson::Document,
    ) -> std::io::Result<Result<bson::Document, String>> {
        let bytes = body.to_vec().map_err(std::io::Error::other)?;
        let reply = self.round_trip(&OpMsg::from_body(bytes)).await?;
        let doc = bson::Document::try_from(reply.body()).map_err(invalid)?;
        let ok = match doc.get("ok") {
            Some(bson::Bson::Double(v)) => *v == 1.0,
            Some(bson::Bson::Int32(v)) => *v == 1,
            _ => false,
        };
        Ok(if ok {
            Ok(doc)
        } else {
            Err(doc.get_str("errmsg").unwrap_or("refused").to_owned())
        })
    }

    /// Sends `msg` and, unless it has `moreToCome`, reads the reply.
    pub(crate) async fn round_trip(&mut self, msg: &OpMsg) -> std::io::Result<OpMsg> {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        let frame = msg.encode(id, 0);
        self.stream.write_all(&frame).await?;
        if msg.flags.more_to_come() {
            return Ok(OpMsg::from_body(
                bson::doc! {"ok": 1}.to_vec().unwrap_or_default(),
            ));
        }
        let frame = self.read_frame().await?;
        let header = MsgHeader::parse(&frame).map_err(invalid)?;
        if header.response_to != id {
            return Err(invalid(format!(
                "reply answers request {} but {} was sent",
                header.response_to, id
            )));
        }
        match Message::decode_reply(frame).map_err(invalid)?.message {
            Message::Msg(reply) => Ok(reply),
            other => Err(invalid(format!("unexpected reply {other:?}"))),
        }
    }

    async fn read_frame(&mut self) -> std::io::Result<Bytes> {
        loop {
            if let Some(len) = check_frame(&self.buf).map_err(invalid)? {
                return Ok(self.buf.split_to(len).freeze());
            }
            if self.buf.len() >= 4 {
                let want = i32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                self.buf
                    .reserve((want as usize).saturating_sub(self.buf.len()));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn payload_of(reply: &bson::Document) -> Vec<u8> {
    match reply.get("payload") {
        Some(bson::Bson::Binary(b)) => b.bytes.clone(),
        _ => Vec::new(),
    }
}

fn invalid(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
