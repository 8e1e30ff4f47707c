//! Large payloads: a seeded pseudo-random byte stream (reproducible from its seed, cheap enough
//! to generate hundreds of MiB in a debug build) and SHA-256 to compare what went in with what
//! came out.

use std::io;

use ring::digest::{Context, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::IO_TIMEOUT;

/// Chunk size of [`exchange`].
const CHUNK: usize = 64 << 10;

/// SplitMix64: a tiny, fast generator of pseudo-random bytes. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Prng::new(seed).fill(&mut v);
    v
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&SHA256, data);
    d.as_ref().try_into().expect("sha-256 is 32 bytes")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`exchange`] sent and received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// SHA-256 of the bytes written.
    pub sent_sha256: [u8; 32],
    /// Bytes read until EOF.
    pub received_len: u64,
    /// SHA-256 of the bytes read.
    pub received_sha256: [u8; 32],
}

/// Write `len` random bytes from `seed` to `stream` (then shut down writing) while reading it
/// to EOF at the same time, hashing both directions. Fails if the stream stays silent for
/// [`IO_TIMEOUT`].
/// Cancel safe.
pub async fn exchange<S>(stream: S, seed: u64, len: usize) -> io::Result<Exchange>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        let mut prng = Prng::new(seed);
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            prng.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            within(w.write_all(&buf[..n])).await?;
            left -= n;
        }
        within(w.shutdown()).await?;
        Ok::<_, io::Error>(digest(hash))
    };
    let receive = async {
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = within(r.read(&mut buf)).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
        }
        Ok::<_, io::Error>((total, digest(hash)))
    };
    let (sent, received) = tokio::try_join!(send, receive)?;
    Ok(Exchange {
        sent_sha256: sent,
        received_len: received.0,
        received_sha256: received.1,
    })
}

fn digest(ctx: Context) -> [u8; 32] {
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("sha-256 is 32 bytes")
}

async fn within<T>(fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no progress for IO_TIMEOUT"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_reproducible_and_fills_any_length() {
        assert_eq!(random_bytes(7, 13), random_bytes(7, 13));
        assert_ne!(random_bytes(7, 13), random_bytes(8, 13));
        assert_eq!(&random_bytes(7, 16)[..13], &random_bytes(7, 13)[..]);
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn exchange_through_a_duplex_echo() {
        let (a, mut b) = tokio::io::duplex(1024);
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut b);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let x = exchange(a, 1, 100_000).await.unwrap();
        echo.await.unwrap();
        assert_eq!(x.received_len, 100_000);
        assert_eq!(x.sent_sha256, x.received_sha256);
        assert_eq!(x.sent_sha256, sha256(&random_bytes(1, 100_000)));
    }
}
