//! The UDP probe datagram: self-describing, so the sink can tell a delivered datagram from a
//! corrupted, truncated or merged one without any state shared with the sender.
//!
//! Layout (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `NPBU` |
//! | 4..8 | run id (the sink counts only the current run) |
//! | 8..16 | sequence number, from 0 |
//! | 16..24 | send time, nanoseconds on the harness's clock ([`now_ns`]) |
//! | 24..28 | total datagram length |
//! | 28..32 | zero |
//! | 32..40 | checksum of bytes 0..32 and 40..len |
//! | 40..len | payload derived from the sequence number |

use std::sync::OnceLock;
use std::time::Instant;

/// The first bytes of every probe.
pub const MAGIC: [u8; 4] = *b"NPBU";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 40;

/// What the sink makes of one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A well-formed probe.
    Valid {
        /// Its run id.
        run: u32,
        /// Its sequence number.
        seq: u64,
        /// When it was sent, nanoseconds since the epoch.
        sent_ns: u64,
    },
    /// Longer than its header says: two or more datagrams merged into one.
    Merged,
    /// Shorter than its header says, or too short for a header.
    Truncated,
    /// Wrong magic or checksum.
    Corrupted,
}

/// Nanoseconds since the first call in this process: the clock sender and sink share, so the
/// transit time of a probe is `now_ns() - sent_ns`.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Fill `buf` (whose length is the datagram size, at least [`HEADER_LEN`]) with probe `seq`.
pub fn fill(buf: &mut [u8], run: u32, seq: u64, sent_ns: u64) {
    assert!(buf.len() >= HEADER_LEN, "probe shorter than its header");
    buf[0..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&run.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
    let len = buf.len() as u32;
    buf[24..28].copy_from_slice(&len.to_be_bytes());
    buf[28..32].fill(0);
    let mut word = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf[HEADER_LEN..].chunks_mut(8) {
        // xorshift64: cheap, and different for every sequence number.
        word ^= word << 13;
        word ^= word >> 7;
        word ^= word << 17;
        chunk.copy_from_slice(&word.to_be_bytes()[..chunk.len()]);
    }
    let sum = checksum(buf);
    buf[32..40].copy_from_slice(&sum.to_be_bytes());
}

/// Classify a received datagram.
pub fn check(buf: &[u8]) -> Probe {
    if buf.len() < HEADER_LEN {
        return Probe::Truncated;
    }
    if buf[0..4] != MAGIC {
        return Probe::Corrupted;
    }
    let declared = u32::from_be_bytes(buf[24..28].try_into().expect("4 bytes")) as usize;
    if declared < HEADER_LEN {
        return Probe::Corrupted;
    }
    if buf.len() < declared {
        return Probe::Truncated;
    }
    let own = &buf[..declared];
    if checksum(own) != u64::from_be_bytes(own[32..40].try_into().expect("8 bytes")) {
        return Probe::Corrupted;
    }
    if buf.len() > declared {
        return Probe::Merged;
    }
    Probe::Valid {
        run: u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")),
        seq: u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")),
        sent_ns: u64::from_be_bytes(buf[16..24].try_into().expect("8 bytes")),
    }
}

/// A word-at-a-time mixing checksum over the datagram, skipping the checksum field itself.
fn checksum(buf: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&buf[..32], &buf[HEADER_LEN..]] {
        for chunk in part.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^ (buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(len: usize, seq: u64) -> Vec<u8> {
        let mut b = vec![0; len];
        fill(&mut b, 7, seq, 123_456);
        b
    }

    #[test]
    fn round_trip() {
        for len in [HEADER_LEN, HEADER_LEN + 3, 1400, 9000] {
            assert_eq!(
                check(&probe(len, 42)),
                Probe::Valid {
                    run: 7,
                    seq: 42,
                    sent_ns: 123_456
                }
            );
        }
    }

    #[test]
    fn payload_differs_between_sequence_numbers() {
        assert_ne!(probe(1400, 1)[HEADER_LEN..], probe(1400, 2)[HEADER_LEN..]);
    }

    #[test]
    fn detects_every_single_bit_flip() {
        let good = probe(200, 9);
        for i in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(check(&bad), Probe::Valid { .. }),
                "bit {i} flip not detected"
            );
        }
    }

    #[test]
    fn merged_and_truncated() {
        let mut two = probe(1400, 1);
        two.extend_from_slice(&probe(1400, 2));
        assert_eq!(check(&two), Probe::Merged);
        assert_eq!(check(&probe(1400, 1)[..1000]), Probe::Truncated);
        assert_eq!(check(&[0u8; 10]), Probe::Truncated);
        assert_eq!(check(&[0u8; 100]), Probe::Corrupted);
    }
}
