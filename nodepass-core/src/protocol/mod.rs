//! The tunnel wire protocol: a pure codec over `BytesMut`, no sockets, no clocks.

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
}
