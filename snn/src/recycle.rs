//! Output buffers recycled from the tensors the engine frees.
//!
//! A convolution writes every element of its output, so zeroing a fresh buffer first
//! (`vec![0.0; n]`) is wasted work: `memset` took 7–9% of Lite0's ANN time on a Zen 3,
//! because the allocator hands back memory it already had, which `calloc` must clear. The
//! engine gives the buffers of the values it frees to a small pool ([`give`]), and the
//! convolutions take their outputs from it ([`overwritten`]).
//!
//! A recycled buffer holds old values until the kernel writes it. Debug builds (and so the
//! tests) fill it with NaN instead, so that an element a kernel leaves unwritten, or reads
//! before writing, shows up in the results rather than passing as a stale number.

use std::sync::Mutex;

/// Buffers shorter than this are not kept: cheap to zero, and many.
const MIN_LEN: usize = 16 << 10;

/// At most this many buffers are kept…
const MAX_BUFFERS: usize = 16;

/// …holding at most this many elements in all (64 MiB), so that the pool adds little to a
/// process's peak memory.
const MAX_ELEMENTS: usize = 16 << 20;

/// The process's pool, shared by every engine and thread.
static POOL: Pool = Pool::new();

/// Keeps `buffer` for a later [`overwritten`] if it is large (dropping the oldest kept if
/// the pool is full); drops it otherwise.
pub(crate) fn give(buffer: Vec<f32>) {
    POOL.give(buffer);
}

/// A buffer of `len` elements for a kernel that writes every one of them before any is
/// read: a recycled one of a close capacity if the pool has one (its old values left in
/// release builds, NaN in debug builds), zeros otherwise.
pub(crate) fn overwritten(len: usize) -> Vec<f32> {
    POOL.overwritten(len)
}

/// Buffers kept in the order given.
struct Pool {
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl Pool {
    const fn new() -> Self {
        Pool {
            buffers: Mutex::new(Vec::new()),
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        // A panic while the lock was held leaves only whole buffers behind: still usable.
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`give`].
    fn give(&self, buffer: Vec<f32>) {
        let capacity = buffer.capacity();
        if !(MIN_LEN..=MAX_ELEMENTS).contains(&capacity) {
            return;
        }
        let mut buffers = self.buffers();
        // The oldest make room: the shapes a network needs next are those it freed last (a
        // pool that refused buffers once full stayed full of shapes nobody asked for).
        let mut held: usize = buffers.iter().map(Vec::capacity).sum();
        while !buffers.is_empty()
            && (buffers.len() >= MAX_BUFFERS || held + capacity > MAX_ELEMENTS)
        {
            held -= buffers.remove(0).capacity();
        }
        buffers.push(buffer);
    }

    /// See [`overwritten`].
    fn overwritten(&self, len: usize) -> Vec<f32> {
        if len >= MIN_LEN {
            let mut buffers = self.buffers();
            // The closest fit, and of those the last given (the likeliest still in cache).
            let fit = (buffers.iter().enumerate().rev())
                .filter(|(_, b)| (len..=len + len / 4).contains(&b.capacity()))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = fit {
                let mut buffer = buffers.remove(i);
                drop(buffers);
                if cfg!(debug_assertions) {
                    buffer.clear();
                    buffer.resize(len, f32::NAN);
                } else {
                    // Shortens, or zeroes only what it adds.
                    buffer.resize(len, 0.0);
                }
                return buffer;
            }
        }
        vec![0.0; len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A given buffer comes back (the same allocation) for a length it fits, poisoned in
    /// debug builds; one much larger than asked for is not handed out, nor one already
    /// taken; small ones are not kept; a full pool drops its oldest.
    #[test]
    fn buffers_come_back_for_lengths_they_fit() {
        let pool = Pool::new();
        let len = 3 * MIN_LEN + 17;
        let given = vec![1.5f32; len];
        let address = given.as_ptr();
        pool.give(given);
        let taken = pool.overwritten(len - 5);
        assert_eq!(taken.len(), len - 5);
        assert_eq!(taken.as_ptr(), address, "the given buffer is reused");
        if cfg!(debug_assertions) {
            assert!(taken.iter().all(|v| v.is_nan()));
        }
        assert!(
            pool.overwritten(len).iter().all(|&v| v == 0.0),
            "taken already"
        );
        pool.give(taken);
        // Needs less than four fifths of what the buffer holds: a fresh, zeroed one.
        let small = pool.overwritten(len / 2);
        assert_ne!(small.as_ptr(), address);
        assert!(small.iter().all(|&v| v == 0.0));
        let again = pool.overwritten(len);
        assert_eq!(again.as_ptr(), address);
        pool.give(vec![1.0f32; 10]);
        assert!(pool.buffers().is_empty(), "small buffers are not kept");
        // MAX_BUFFERS + 1 buffers of distinct lengths: the first is dropped.
        let lengths: Vec<usize> = (0..=MAX_BUFFERS).map(|i| MIN_LEN + 8 * i).collect();
        for &n in &lengths {
            pool.give(vec![0.0; n]);
        }
        let kept: Vec<usize> = pool.buffers().iter().map(Vec::capacity).collect();
        assert_eq!(kept, lengths[1..]);
    }
}
