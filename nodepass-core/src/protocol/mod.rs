//! The tunnel wire protocol: a pure codec over `BytesMut`, no sockets, no clocks.
//!
//! Every message is one frame: `type: u8`, `len: u16 big-endian`, then `len` bytes of payload.
//! [`encode`] appends a frame to a buffer; [`decode`] takes one complete frame off the front of a
//! buffer, returning `Ok(None)` when more bytes are needed. Frames are small (at most
//! [`MAX_FRAME_LEN`] bytes of payload); user data is never framed, except UDP datagrams inside a
//! UDP session (see [`datagram`]). The byte layout of each message is in `docs/protocol.md`.
//!
//! [`auth`] runs the password-authenticated key exchange (SPAKE2) of control connections and
//! computes the key-confirmation proofs (HMAC-SHA256) of control and pool connections.
//! [`proxy`] encodes the HAProxy PROXY protocol header (v1 or v2) the tunnel sends to a target
//! before the user's data when `proxy=1|2`.

pub mod auth;
pub mod datagram;
mod message;
pub mod proxy;

pub use message::{Chunks, ConnKind, Flow, Message, PakeMsg, RefuseCode, SessionId, StreamKind};

use bytes::{Buf, BufMut, BytesMut};

/// The protocol version spoken by this build. Sent in `Hello` and `Challenge`.
pub const PROTOCOL_VERSION: u8 = 2;
/// Eight bytes that open every `Hello`, so a stray client is recognised at once.
pub const MAGIC: [u8; 8] = *b"NODEPASS";
/// Largest payload of a control frame.
pub const MAX_FRAME_LEN: usize = 1024;
/// Bytes of frame header: type and length.
pub const FRAME_HEADER_LEN: usize = 3;
/// First byte of a plain (non-TLS) `Hello`. A TLS record starts with 0x16 instead.
pub const HELLO_TYPE: u8 = 0x01;
/// Length of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;
/// Length of a SPAKE2 message on Ed25519: a side byte and a 32-byte point.
pub const PAKE_MSG_LEN: usize = 33;

/// A violation of the wire protocol by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame longer than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLong {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame type this version does not know.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A frame whose payload does not match its type.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The first bytes are not a nodepass hello.
    #[error("not a nodepass peer (bad magic)")]
    BadMagic,
    /// The peer sent a message that is not allowed at this point.
    #[error("unexpected {got} (expected {expected})")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What the state machine waited for.
        expected: &'static str,
    },
}

/// Append `msg` as one frame to `dst`.
pub fn encode(msg: &Message, dst: &mut BytesMut) {
    let start = dst.len();
    dst.put_u8(msg.type_code());
    dst.put_u16(0); // patched below
    msg.encode_payload(dst);
    let len = dst.len() - start - FRAME_HEADER_LEN;
    debug_assert!(len <= MAX_FRAME_LEN, "encoder built an oversize frame");
    dst[start + 1..start + 3].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Take one complete frame off the front of `src`.
///
/// Returns `Ok(None)` (consuming nothing) when `src` does not yet hold a whole frame, and an
/// error as soon as the header announces an oversize frame or the payload is malformed.
pub fn decode(src: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
    if src.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let ty = src[0];
    let len = u16::from_be_bytes([src[1], src[2]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if src.len() < FRAME_HEADER_LEN + len {
        return Ok(None);
    }
    src.advance(FRAME_HEADER_LEN);
    let payload = src.split_to(len);
    Message::decode_payload(ty, &payload).map(Some)
}

#[cfg(test)]
mod tests;
