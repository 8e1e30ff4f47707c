//! Write gathering for the message transports (WebSocket, HTTP/2): written bytes are copied
//! into chunks that go to the transport as one message or DATA frame each, and the chunks'
//! memory is reused.
//!
//! Why reuse: a chunk is handed over as [`Bytes`] and freed only once the transport wrote it
//! out, on another task. A fresh buffer per chunk made glibc's allocator map and trim memory
//! over and over (about a tenth of the CPU of an HTTP/2 bulk transfer went to page faults in
//! the profile of issue 15). [`Gather`] cycles through [`RING`] areas of [`AREA`] bytes each;
//! the transports keep less than `RING - 1` areas in flight, so the area a writer comes back
//! to has been written out and is reused in place. Should one still be in flight, a new one is
//! allocated: slower, never wrong. Nothing is allocated before the first write (idle pooled
//! connections hold no buffer).

use bytes::{Bytes, BytesMut};

/// Size of one area, and the largest chunk.
pub(crate) const AREA: usize = 256 << 10;
/// Areas a writer cycles through.
pub(crate) const RING: usize = 4;

/// Written bytes not yet handed to the transport (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Gather {
    ring: Vec<BytesMut>,
    cur: usize,
}

impl Gather {
    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.ring.get(self.cur).map_or(0, BytesMut::len)
    }

    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy as much of `buf` as fits in the current chunk (at most `limit` bytes held in all,
    /// at most [`AREA`]); returns how many were taken (0 only for an empty `buf` or a full
    /// chunk: [`Gather::take`] it first).
    pub(crate) fn push(&mut self, buf: &[u8], limit: usize) -> usize {
        let limit = limit.min(AREA);
        let area = self.area();
        let n = buf.len().min(limit.saturating_sub(area.len()));
        area.extend_from_slice(&buf[..n]);
        n
    }

    /// The held bytes, as one chunk; nothing is held afterwards.
    pub(crate) fn take(&mut self) -> Bytes {
        match self.ring.get_mut(self.cur) {
            Some(area) => area.split().freeze(),
            None => Bytes::new(),
        }
    }

    /// The area to write into: the current one while it has room (or holds bytes), else the
    /// next of the ring, reused when its chunks are gone.
    fn area(&mut self) -> &mut BytesMut {
        if self.ring.is_empty() {
            self.ring.push(BytesMut::with_capacity(AREA));
        }
        let cur = &self.ring[self.cur];
        if cur.is_empty() && cur.capacity() == 0 {
            self.cur = (self.cur + 1) % RING;
            if self.cur == self.ring.len() {
                self.ring.push(BytesMut::with_capacity(AREA));
            } else {
                // Reuses the area's memory in place when its chunks were dropped.
                self.ring[self.cur].reserve(AREA);
            }
        }
        &mut self.ring[self.cur]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_the_bytes_in_order() {
        let mut g = Gather::default();
        assert!(g.is_empty());
        assert!(g.ring.is_empty(), "nothing allocated before a write");
        let data: Vec<u8> = (0..(3 * AREA + 1000) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut chunks = Vec::new();
        let mut at = 0;
        // Bounded: each pass takes bytes or a chunk.
        while at < data.len() {
            let n = g.push(&data[at..(at + 50_000).min(data.len())], AREA);
            at += n;
            if n == 0 {
                chunks.push(g.take());
            }
        }
        chunks.push(g.take());
        assert!(g.is_empty());
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(joined == data, "bytes differ");
        assert_eq!(chunks[0].len(), AREA);
        // A limit holds smaller chunks.
        assert_eq!(g.push(b"abcdef", 4), 4);
        assert_eq!(g.push(b"ef", 4), 0);
        assert_eq!(&g.take()[..], b"abcd");
    }

    #[test]
    fn an_area_is_reused_once_its_chunks_are_gone_and_never_while_one_lives() {
        let full = vec![7u8; AREA];
        let mut g = Gather::default();
        let mut first = Vec::new();
        for _ in 0..RING {
            assert_eq!(g.push(&full, AREA), AREA);
            first.push(g.take().as_ptr());
        }
        assert_eq!(g.ring.len(), RING);
        // Every chunk dropped: the ring comes round to the first area's memory.
        assert_eq!(g.push(&full, AREA), AREA);
        let kept = g.take();
        assert_eq!(kept.as_ptr(), first[0]);
        for p in &first[1..] {
            assert_eq!(g.push(&full, AREA), AREA);
            assert_eq!(g.take().as_ptr(), *p);
        }
        // The first area's chunk is still alive: that area is not written over.
        assert_eq!(g.push(&full[..10], AREA), 10);
        let fresh = g.take();
        assert_ne!(fresh.as_ptr(), first[0]);
        assert!(kept.iter().all(|&b| b == 7));
        assert_eq!(g.ring.len(), RING);
    }
}
