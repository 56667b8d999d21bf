//! Zeroed memory for the node store's big per-chunk arrays (vectors, layer-0 links),
//! committed page by page as it is written, on transparent huge pages where the
//! kernel offers them.
//!
//! A graph search reads a few thousand vectors and link lists at random addresses;
//! with 4 KiB pages nearly every one of those reads also misses the TLB, and under
//! virtualisation a page walk costs several memory accesses of its own. A
//! [`Region`] asked for with `huge` is an anonymous mapping aligned to 2 MiB and
//! marked `MADV_HUGEPAGE`, so the kernel backs it with 2 MiB pages on first touch
//! (when `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`;
//! with `never` it silently stays on small pages). Without `huge`, a region of
//! [`MAP_AT_LEAST`] bytes or more is an anonymous mapping too, marked
//! `MADV_NOHUGEPAGE`, so it costs 4 KiB pages as they are written even where huge
//! pages are `always` on.
//!
//! On Linux, then, the memory is zero and pages never written are never allocated:
//! a chunk of a 65,536-d collection is 64 MiB of address space, but one point
//! commits only the pages of its own vector and list. (The global allocator's
//! `alloc_zeroed` cannot give that: with an alignment above 16 bytes it allocates
//! and then `memset`s, touching every page; with the store's earlier 16,384-slot
//! chunks that took a node from 54 MB to 4.15 GB for one point. Small regions still
//! come from it, and every region on other platforms.) A huge page is allocated
//! whole on first touch, which is why the store asks for huge regions only once a
//! shard has filled its first chunk. It must never do IO and never fail silently:
//! an allocation failure aborts like any other.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// Huge-page size on x86-64 and most arm64 kernels.
#[cfg(target_os = "linux")]
const HUGE: usize = 2 << 20;
/// Alignment of the allocator-backed regions: one cache line.
const ALIGN: usize = 64;
/// Smallest region that is mapped rather than allocated (see the module docs).
pub(super) const MAP_AT_LEAST: usize = 64 << 10;

/// `len` zeroed bytes at a fixed address until dropped.
pub(super) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    mapped: bool,
}

// SAFETY: a `Region` owns its memory and nothing else; moving it to another thread
// moves that ownership. It is not `Sync`: it hands out raw pointers, and whoever
// shares it (the store's `Chunk`) says why its reads and writes through them are sound.
unsafe impl Send for Region {}

impl Region {
    /// `len` zeroed bytes (at least one), 64-byte aligned; on huge pages if `huge`
    /// and the kernel allows.
    pub fn zeroed(len: usize, huge: bool) -> Region {
        let len = len.max(1);
        #[cfg(target_os = "linux")]
        if (huge || len >= MAP_AT_LEAST)
            && let Some(r) = Self::mapped(len, huge)
        {
            return r;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = huge;
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        Region {
            ptr,
            len,
            mapped: false,
        }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, ALIGN).expect("region layout fits")
    }

    /// An anonymous mapping of `len` bytes: if `huge`, starting on a 2 MiB boundary
    /// and advised for huge pages, else advised against them; `None` if the kernel
    /// refused the mapping.
    #[cfg(target_os = "linux")]
    fn mapped(len: usize, huge: bool) -> Option<Region> {
        let len = len.next_multiple_of(4096);
        let span = len.checked_add(if huge { HUGE } else { 0 })?;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = if huge {
            start.next_multiple_of(HUGE)
        } else {
            start
        };
        let (head, tail) = (aligned - start, span - (aligned - start) - len);
        // SAFETY: both ranges lie inside the mapping just made and outside the part
        // kept; unmapping them cannot fail in a way that matters (they are ours).
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            // Only advice: where transparent huge pages are off this does nothing.
            let advice = if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            };
            libc::madvise(aligned as *mut libc::c_void, len, advice);
        }
        Some(Region {
            ptr: NonNull::new(aligned as *mut u8)?,
            len,
            mapped: true,
        })
    }

    /// The first byte.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes of address space the region holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the region in memory now: its resident pages (`mincore`) if mapped,
    /// all of it if it came from the allocator.
    #[cfg(test)]
    pub fn resident_bytes(&self) -> usize {
        #[cfg(target_os = "linux")]
        if self.mapped {
            let page = 4096;
            let mut pages = vec![0u8; self.len.div_ceil(page)];
            // SAFETY: the range is exactly our mapping; `pages` holds one byte per
            // page of it.
            let rc =
                unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, pages.as_mut_ptr()) };
            assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
            return pages.iter().filter(|&&p| p & 1 == 1).count() * page;
        }
        self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: exactly the range `mapped` kept, unmapped once.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len)
            };
            return;
        }
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_zeroed_writable_and_aligned() {
        for (len, huge) in [(1, false), (100, true), (5 << 20, true), (3 << 20, false)] {
            let r = Region::zeroed(len, huge);
            assert_eq!(r.as_ptr() as usize % ALIGN, 0);
            // SAFETY: `len` bytes belong to the region.
            let bytes = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), len) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[0] = 1;
            bytes[len - 1] = 7;
            assert_eq!((bytes[0], bytes[len - 1]), (if len > 1 { 1 } else { 7 }, 7));
            #[cfg(target_os = "linux")]
            if huge {
                assert!(r.mapped);
                assert_eq!(r.as_ptr() as usize % HUGE, 0);
            }
        }
    }

    /// Only the pages written are committed, huge or not: a big region is address
    /// space, not memory.
    #[cfg(target_os = "linux")]
    #[test]
    fn big_regions_commit_only_the_pages_written() {
        for huge in [false, true] {
            let len = 1 << 30;
            let r = Region::zeroed(len, huge);
            assert!(r.mapped);
            assert_eq!(r.resident_bytes(), 0);
            // SAFETY: inside the region.
            unsafe {
                r.as_ptr().write(1);
                r.as_ptr().add(len / 2).write(2);
            }
            // Two pages (two huge pages at most where THP backs a huge region).
            let resident = r.resident_bytes();
            assert!(
                (2 * 4096..=2 * HUGE).contains(&resident),
                "huge {huge}: {resident}"
            );
        }
    }
}
