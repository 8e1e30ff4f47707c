//! Framed message I/O on a tunnel connection, keeping read-ahead bytes for the relay.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{self, Message, ProtocolError};

/// Read chunk reserved before each read.
const READ_CHUNK: usize = 4096;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("connection closed by peer")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A stream plus the bytes read from it but not yet decoded.
#[derive(Debug)]
pub(crate) struct Wire<S> {
    pub(crate) stream: S,
    pub(crate) buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub(crate) fn new(stream: S) -> Self {
        Wire {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Read one message. Cancel safe: partial frames stay in the buffer.
    pub(crate) async fn recv(&mut self) -> Result<Message, WireError> {
        loop {
            if let Some(msg) = protocol::decode(&mut self.buf)? {
                return Ok(msg);
            }
            self.buf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Write one message and flush it.
    pub(crate) async fn send(&mut self, msg: &Message) -> io::Result<()> {
        let mut out = BytesMut::with_capacity(64);
        protocol::encode(msg, &mut out);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// The stream and any bytes already read past the last message.
    pub(crate) fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.buf)
    }
}
