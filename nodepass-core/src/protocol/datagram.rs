//! UDP datagram framing inside a pool connection: `len: u16 big-endian` then `len` bytes.
//!
//! After an `Open { kind: Udp }`, both directions of the pool connection carry only such
//! frames, so datagram boundaries survive the byte stream exactly. A zero-length datagram is
//! legal. The receiver refuses a frame longer than its configured maximum instead of
//! truncating it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Largest UDP payload over IPv4, the default maximum datagram size.
pub const MAX_DATAGRAM_LEN: usize = 65507;
/// Bytes of datagram frame header.
pub const DATAGRAM_HEADER_LEN: usize = 2;

/// Append one datagram frame. `payload` must be at most `u16::MAX` bytes.
pub fn encode(payload: &[u8], dst: &mut BytesMut) {
    debug_assert!(payload.len() <= u16::MAX as usize);
    dst.reserve(DATAGRAM_HEADER_LEN + payload.len());
    dst.put_u16(payload.len() as u16);
    dst.put_slice(payload);
}

/// Take one datagram off the front of `src`; `Ok(None)` when more bytes are needed.
///
/// A frame announcing more than `max` bytes is an error (the stream cannot be resynchronised
/// without trusting the length, so the session ends).
pub fn decode(src: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    if src.len() < DATAGRAM_HEADER_LEN {
        return Ok(None);
    }
    let len = u16::from_be_bytes([src[0], src[1]]) as usize;
    if len > max {
        return Err(ProtocolError::FrameTooLong { len, max });
    }
    if src.len() < DATAGRAM_HEADER_LEN + len {
        src.reserve(DATAGRAM_HEADER_LEN + len - src.len());
        return Ok(None);
    }
    src.advance(DATAGRAM_HEADER_LEN);
    Ok(Some(src.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_survive_any_split() {
        let datagrams: Vec<Vec<u8>> = vec![vec![], vec![7], vec![1; 1400], vec![9; 8192]];
        let mut wire = BytesMut::new();
        for d in &datagrams {
            encode(d, &mut wire);
        }
        // Feed the wire one byte at a time: every datagram comes out whole and in order.
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            rx.put_u8(*b);
            while let Some(d) = decode(&mut rx, MAX_DATAGRAM_LEN).unwrap() {
                out.push(d.to_vec());
            }
        }
        assert_eq!(out, datagrams);
        assert!(rx.is_empty());
    }

    #[test]
    fn header_is_big_endian_length() {
        let mut wire = BytesMut::new();
        encode(b"abc", &mut wire);
        assert_eq!(&wire[..], &[0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn oversize_is_refused_not_truncated() {
        let mut wire = BytesMut::new();
        encode(&[0u8; 2000], &mut wire);
        let err = decode(&mut wire, 1500).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::FrameTooLong {
                len: 2000,
                max: 1500
            }
        );
    }
}
