//! Append-only storage in fixed-size chunks: stable indices, no reallocation, no doubling slack.
//!
//! The queue's slots (and their metric timestamps) grow with the number of keys and never
//! shrink (freed slots are reused). A `Vec` doubles its buffer, so at 100k keys up to half of it
//! sits unused and every growth copies everything; chunks of [`CHUNK`] elements cost exactly
//! one chunk of slack and never copy.

use std::ops::{Index, IndexMut};

const SHIFT: u32 = 9;
/// Elements per chunk.
pub(crate) const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

/// An append-only sequence indexed by `usize`, stored in chunks of [`CHUNK`] elements.
///
/// Chunks are fixed-size arrays filled with `T::default()` up front, so indexing within a chunk
/// needs no bounds check (only the chunk number is checked); positions at or past
/// [`len`](Self::len) hold defaults and are never handed out by `get` or the iterators.
pub(crate) struct Slab<T> {
    chunks: Vec<Box<[T; CHUNK]>>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Default> Slab<T> {
    /// Appends `value`; returns its index.
    pub(crate) fn push(&mut self, value: T) -> usize {
        let i = self.len;
        if i & MASK == 0 {
            let chunk: Box<[T]> = (0..CHUNK).map(|_| T::default()).collect();
            match chunk.try_into() {
                Ok(chunk) => self.chunks.push(chunk),
                Err(_) => unreachable!("a chunk has CHUNK elements"),
            }
        }
        self[i] = value;
        self.len += 1;
        i
    }
}

impl<T> Slab<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        (i < self.len).then(|| &self[i])
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        let len = self.len;
        self.chunks.iter_mut().flat_map(|c| c.iter_mut()).take(len)
    }
}

impl<T> Index<usize> for Slab<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & MASK]
    }
}

impl<T> IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> SHIFT][i & MASK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_stay_valid_across_chunks_and_iteration_follows_them() {
        let mut slab = Slab::default();
        for i in 0..(3 * CHUNK + 5) {
            assert_eq!(slab.push(i), i);
        }
        assert_eq!(slab.len(), 3 * CHUNK + 5);
        assert_eq!(slab[CHUNK], CHUNK);
        slab[2 * CHUNK + 1] = 7;
        assert_eq!(slab.get(2 * CHUNK + 1), Some(&7));
        assert_eq!(slab.get(3 * CHUNK + 5), None);
        assert!(
            slab.iter()
                .enumerate()
                .all(|(i, &v)| v == i || i == 2 * CHUNK + 1)
        );
        assert_eq!(slab.iter_mut().count(), slab.len());
    }
}
