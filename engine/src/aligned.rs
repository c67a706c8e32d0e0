//! Block-aligned byte buffers for O_DIRECT I/O.
//!
//! O_DIRECT needs the buffer address, the file offset and the length all aligned to the
//! device's logical block size. We always align to [`BLOCK_BYTES`] (4 KiB), which is a multiple
//! of every logical block size in use (512 B and 4 KiB). This is one of the few modules allowed
//! to use `unsafe`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

/// The alignment and I/O granule of the store, in bytes.
pub const BLOCK_BYTES: usize = 4096;

/// A heap buffer whose address and capacity are multiples of [`BLOCK_BYTES`].
///
/// `len` may be any value up to the capacity: the buffer derefs to its first `len` bytes,
/// while I/O always moves whole blocks (see [`AlignedBuf::as_blocks`]).
pub struct AlignedBuf {
    // Invariant: `ptr` was returned by `alloc_zeroed` with `layout`, and is never null.
    ptr: NonNull<u8>,
    layout: Layout,
    // Invariant: len <= layout.size().
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the owned allocation, like a Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, with capacity rounded up to whole blocks (at least one).
    pub fn zeroed(len: usize) -> AlignedBuf {
        let capacity = round_up(len.max(1), BLOCK_BYTES);
        let layout = Layout::from_size_align(capacity, BLOCK_BYTES).expect("buffer size overflow");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, layout, len }
    }

    /// A buffer holding a copy of `bytes`; the tail of the last block is zero.
    pub fn copy_from(bytes: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }

    /// Capacity in bytes, always a non-zero multiple of [`BLOCK_BYTES`].
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Changes the visible length without touching the bytes.
    ///
    /// # Panics
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "len {len} > capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// The first `round_up(len, BLOCK_BYTES)` bytes: what an O_DIRECT transfer moves.
    pub fn as_blocks(&self) -> &[u8] {
        let n = round_up(self.len, BLOCK_BYTES);
        // SAFETY: n <= capacity (len <= capacity, capacity is block-aligned) and the
        // allocation is initialised (alloc_zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), n) }
    }

    /// Mutable view of the whole blocks covering `len`.
    pub fn as_blocks_mut(&mut self) -> &mut [u8] {
        let n = round_up(self.len, BLOCK_BYTES);
        // SAFETY: as in `as_blocks`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= capacity and the allocation is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: len <= capacity, initialised, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        let mut copy = AlignedBuf::zeroed(self.capacity());
        copy.copy_from_slice(self.as_ref_capacity());
        copy.len = self.len;
        copy
    }
}

impl AlignedBuf {
    fn as_ref_capacity(&self) -> &[u8] {
        // SAFETY: the whole allocation is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity()) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// I/O buffers kept for reuse. A store taking a steady stream of puts would otherwise fault
/// in and clear fresh pages for every fragment (in a node receiving 8 MiB fragments the
/// kernel's page clearing alone was a tenth of its CPU), and every range read would allocate,
/// zero and free its own small buffer.
#[derive(Debug)]
pub struct BufPool {
    inner: Mutex<PoolInner>,
    bytes_max: usize,
}

#[derive(Debug, Default)]
struct PoolInner {
    /// Idle buffers by capacity.
    free: HashMap<usize, Vec<AlignedBuf>>,
    held_bytes: usize,
}

impl BufPool {
    /// A pool keeping at most `bytes_max` bytes of idle buffers.
    pub fn new(bytes_max: usize) -> BufPool {
        BufPool {
            inner: Mutex::new(PoolInner::default()),
            bytes_max,
        }
    }

    /// A buffer of `len` bytes: a kept one of the same capacity when there is one, else a new
    /// zeroed one. A kept buffer's first `len` bytes hold what its last user left there (the
    /// caller is to overwrite them all); the rest of its last block is zero, as in a new one.
    pub fn take(&self, len: usize) -> AlignedBuf {
        let capacity = round_up(len.max(1), BLOCK_BYTES);
        let kept = {
            let mut inner = self.inner.lock().expect("buffer pool lock");
            let kept = inner.free.get_mut(&capacity).and_then(Vec::pop);
            if kept.is_some() {
                inner.held_bytes -= capacity;
            }
            kept
        };
        match kept {
            Some(mut buf) => {
                buf.set_len(len);
                buf.as_blocks_mut()[len..].fill(0);
                buf
            }
            None => AlignedBuf::zeroed(len),
        }
    }

    /// Keeps `buf` for a later [`BufPool::take`] when the pool has room; frees it otherwise.
    pub fn give(&self, buf: AlignedBuf) {
        let mut inner = self.inner.lock().expect("buffer pool lock");
        if inner.held_bytes + buf.capacity() <= self.bytes_max {
            inner.held_bytes += buf.capacity();
            inner.free.entry(buf.capacity()).or_default().push(buf);
        }
    }

    /// Bytes held by idle buffers.
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().expect("buffer pool lock").held_bytes
    }
}

/// `value` rounded up to a multiple of `granule` (a power of two or any positive integer).
pub const fn round_up(value: usize, granule: usize) -> usize {
    value.div_ceil(granule) * granule
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pooled_buffer_is_reused_with_a_zero_tail_and_the_pool_stays_bounded() {
        let pool = BufPool::new(2 * 8192);
        let mut a = pool.take(8000);
        a.fill(0xAA);
        a.set_len(8192);
        a.fill(0xAA);
        a.set_len(8000);
        let a_ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.held_bytes(), 8192);
        // Same capacity: the same allocation comes back, the tail past `len` zeroed.
        let b = pool.take(5000);
        assert_eq!(b.as_ptr(), a_ptr);
        assert_eq!(pool.held_bytes(), 0);
        assert!(b.as_blocks()[5000..].iter().all(|&x| x == 0));
        // Another capacity: a new, zeroed buffer.
        let c = pool.take(100);
        assert_eq!(c.capacity(), 4096);
        assert!(c.iter().all(|&x| x == 0));
        pool.give(b);
        pool.give(AlignedBuf::zeroed(8192));
        pool.give(AlignedBuf::zeroed(8192));
        assert_eq!(pool.held_bytes(), 2 * 8192, "the third is freed, not kept");
    }

    use super::*;

    #[test]
    fn alignment_and_lengths() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096] {
            let mut buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_ptr() as usize % BLOCK_BYTES, 0);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_blocks().len(), round_up(len, BLOCK_BYTES));
            assert!(buf.iter().all(|b| *b == 0));
            buf.fill(7);
            let copy = buf.clone();
            assert_eq!(&copy[..], &buf[..]);
        }
    }
}
