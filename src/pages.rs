//! Memory the process already holds, moved into the weight store rather
//! than faulted in afresh.
//!
//! Packing writes every conv's weights into a store of fresh pages while
//! it frees the unpacked tensors (ResNet-152 at batch 1: a 300 MiB store,
//! 230 MB of tensors). On a VM whose host backs fresh memory slowly,
//! faulting the store in is most of the compile time (`perf`:
//! `clear_page_erms`): 47-1,014 ms for 340 MB of fresh pages, against
//! 13-16 ms to rewrite memory the process holds. So while convs are packed ([`Recycling`]),
//! the blocks of 1 MiB and up that are freed are kept, and the store's
//! pages are made of them as they are needed ([`fill`]: `mremap` moves
//! page-table entries, nothing is copied), as whole 2 MB pages where a
//! freed block has one.
//!
//! That needs the blocks to be mappings of our own: [`Pages`] is the
//! allocator that makes them, which the binary installs. Without it (the
//! library's own tests) nothing is kept and the store faults in its pages.
//!
//! While weights are read ([`Carving`]), those blocks are carved one after
//! the next from slabs of 2 MB pages: a 1 MiB tensor (ResNet-152's layer3
//! 1x1s) then shares 2 MB pages with its neighbours rather than lying on
//! 4 KB ones of its own, and a page whose tensors are all freed goes to
//! the store whole, so that the store keeps its 2 MB pages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::{Mutex, MutexGuard};

/// A 2 MB page, the store's unit.
pub const HUGE: usize = 2 << 20;
const PAGE: usize = 4096;
/// Blocks from this size up are mappings of their own.
pub const BIG: usize = 1 << 20;
/// Freed blocks kept at most (more go back to the system).
const SLOTS: usize = 4096;

/// The global allocator: blocks of [`BIG`] bytes and up are anonymous
/// mappings (from 2 MB up, 2 MB-aligned and advised onto 2 MB pages), or
/// carved from slabs while weights are read; the rest is the system's. A
/// block freed while convs are packed is kept for [`fill`]. (On Linux on
/// x86-64 and AArch64, whose `mmap` constants `sys` spells out; elsewhere
/// everything is the system's.)
pub struct Pages;

fn ours(l: &Layout) -> bool {
    cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) && l.size() >= BIG
        && l.align() <= PAGE
}

fn round(bytes: usize) -> usize {
    bytes.div_ceil(PAGE) * PAGE
}

// SAFETY: blocks of ours are whole mappings made by `sys::map` for the
// layout's (page-rounded) size, handed to one caller each, and given back
// only through `dealloc` or `realloc` with that layout (the contract of
// GlobalAlloc); the rest is the system allocator's, called as it expects.
unsafe impl GlobalAlloc for Pages {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ours(&l) {
            let len = round(l.size());
            let carved = slabs().carve(len, &POOL);
            carved.unwrap_or_else(|| sys::map(len))
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(l) }
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if ours(&l) {
            // Fresh memory, a slab's or a mapping's, reads as zeros.
            // SAFETY: the caller's contract, passed on.
            unsafe { self.alloc(l) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(l) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ours(&l) {
            let len = round(l.size());
            let carved = slabs().free(p as usize, len, &POOL);
            if !carved {
                release(p as usize, len);
            }
        } else {
            // SAFETY: the caller's contract: `p` came from `alloc(l)`,
            // which for this layout was the system's.
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `size` rounded up to the
        // alignment does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(size, l.align()) };
        match (ours(&l), ours(&new)) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => unsafe { System.realloc(p, l, size) },
            (true, true) if !slabs_hold(p as usize) => sys::remap(p, round(l.size()), round(size)),
            _ => {
                // SAFETY: `new` has a non-zero size (the caller's contract).
                let q = unsafe { self.alloc(new) };
                if !q.is_null() {
                    // SAFETY: both blocks hold the smaller size, and are
                    // distinct allocations; `p` is then freed once.
                    unsafe {
                        std::ptr::copy_nonoverlapping(p, q, l.size().min(size));
                        self.dealloc(p, l);
                    }
                }
                q
            }
        }
    }
}

/// Slabs are 64 MiB: ResNet-152's 230 MB of weights take four.
const SLAB: usize = 64 << 20;
const SLAB_PAGES: usize = SLAB / HUGE;
/// Slabs at most at once (4 GiB of tensors); past that, mappings.
const SLABS: usize = 64;

/// A slab: its first byte (0: none), the bytes carved so far, and for
/// each 2 MB page the blocks alive in it and whether the pool has it.
#[derive(Clone, Copy)]
struct Slab {
    lo: usize,
    top: usize,
    open: bool,
    blocks: usize,
    live: [u16; SLAB_PAGES],
    pooled: [bool; SLAB_PAGES],
}

const NO_SLAB: Slab = Slab {
    lo: 0,
    top: 0,
    open: false,
    blocks: 0,
    live: [0; SLAB_PAGES],
    pooled: [false; SLAB_PAGES],
};

struct Slabs {
    carving: usize,
    slabs: [Slab; SLABS],
}

static SLAB_TABLE: Mutex<Slabs> = Mutex::new(Slabs {
    carving: 0,
    slabs: [NO_SLAB; SLABS],
});

fn slabs() -> MutexGuard<'static, Slabs> {
    // As for the pool: nothing panics while it is held.
    SLAB_TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

fn slabs_hold(at: usize) -> bool {
    slabs().of(at).is_some()
}

/// The 2 MB pages of a slab that bytes `at..at + len` of it fall in.
fn pages_of(at: usize, len: usize) -> std::ops::Range<usize> {
    at / HUGE..(at + len).div_ceil(HUGE)
}

impl Slabs {
    /// `len` bytes from the open slab (a new one if it has no room), while
    /// weights are read; never used before, so zeros.
    fn carve(&mut self, len: usize, pool: &Mutex<Pool>) -> Option<*mut u8> {
        if self.carving == 0 || len > SLAB / 2 {
            return None;
        }
        let open = self.slabs.iter().position(|s| s.open);
        let i = match open {
            Some(i) if self.slabs[i].top + len <= SLAB => i,
            _ => {
                if let Some(i) = open {
                    self.close(i, pool);
                }
                let i = self.slabs.iter().position(|s| s.lo == 0)?;
                let lo = sys::map(SLAB) as usize;
                if lo == 0 {
                    return None;
                }
                self.slabs[i] = Slab {
                    lo,
                    open: true,
                    ..NO_SLAB
                };
                i
            }
        };
        let s = &mut self.slabs[i];
        let at = s.top;
        s.top += len;
        s.blocks += 1;
        for p in pages_of(at, len) {
            s.live[p] += 1;
        }
        Some((s.lo + at) as *mut u8)
    }

    /// The slab a carved block at `at` is in. A pooled page's range is
    /// not the slab's any more (its memory was moved or unmapped, and the
    /// system may map another block there): no live block starts in one.
    fn of(&self, at: usize) -> Option<usize> {
        self.slabs.iter().position(|s| {
            s.lo != 0 && (s.lo..s.lo + SLAB).contains(&at) && !s.pooled[(at - s.lo) / HUGE]
        })
    }

    /// Frees a carved block (false if `at` is not one): each of its pages
    /// that no block is left in, and none will be carved from, is let go.
    fn free(&mut self, at: usize, len: usize, pool: &Mutex<Pool>) -> bool {
        let Some(i) = self.of(at) else {
            return false;
        };
        let s = &mut self.slabs[i];
        s.blocks -= 1;
        for p in pages_of(at - s.lo, len) {
            // A live block's pages are the slab's (`of`): none is pooled.
            debug_assert!(!s.pooled[p] && s.live[p] > 0);
            s.live[p] -= 1;
            if s.live[p] == 0 && (!s.open || (p + 1) * HUGE <= s.top) {
                s.let_go(p, pool);
            }
        }
        if !s.open && s.blocks == 0 {
            s.unmap();
        }
        true
    }

    /// No more is carved from slab `i`: its pages with no block left go.
    fn close(&mut self, i: usize, pool: &Mutex<Pool>) {
        let s = &mut self.slabs[i];
        s.open = false;
        for p in pages_of(0, s.top) {
            if s.live[p] == 0 && !s.pooled[p] {
                s.let_go(p, pool);
            }
        }
        if s.blocks == 0 {
            s.unmap();
        }
    }
}

impl Slab {
    /// Page `p`, which no block is in: to the pool while convs are
    /// packed, else its memory back to the system (the range stays the
    /// slab's until it is unmapped).
    fn let_go(&mut self, p: usize, pool: &Mutex<Pool>) {
        let at = self.lo + p * HUGE;
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.packing > 0 && pool.n < SLOTS {
            pool.keep((at, at + HUGE));
            self.pooled[p] = true;
        } else {
            drop(pool);
            sys::discard(at, HUGE);
        }
    }

    /// Unmaps what is left of the slab (not the pages the pool has).
    fn unmap(&mut self) {
        for p in 0..SLAB_PAGES {
            if !self.pooled[p] {
                sys::unmap(self.lo + p * HUGE, HUGE);
            }
        }
        *self = NO_SLAB;
    }
}

/// Blocks of 1 MiB and up are carved from slabs while this lives (weights
/// are being read); the last slab is closed when the last one is dropped.
pub struct Carving(());

impl Carving {
    pub fn begin() -> Carving {
        slabs().carving += 1;
        Carving(())
    }
}

impl Drop for Carving {
    fn drop(&mut self) {
        let mut s = slabs();
        s.carving -= 1;
        if s.carving == 0 {
            if let Some(i) = s.slabs.iter().position(|s| s.open) {
                s.close(i, &POOL);
            }
        }
    }
}

/// Freed blocks (address ranges, each a mapping or part of one, ours to
/// move or unmap), and how many compiles are packing.
struct Pool {
    packing: usize,
    pieces: [(usize, usize); SLOTS],
    n: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn pool() -> MutexGuard<'static, Pool> {
    // Nothing panics while the lock is held; if it did, the pool's ranges
    // are still whole.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn release(at: usize, len: usize) {
    let mut p = pool();
    if p.packing > 0 {
        p.keep((at, at + len));
    } else {
        drop(p);
        sys::unmap(at, len);
    }
}

/// Freed blocks are kept while this lives (convs are being packed), and
/// given back to the system when the last one is dropped.
pub struct Recycling(());

impl Recycling {
    pub fn begin() -> Recycling {
        pool().packing += 1;
        Recycling(())
    }
}

impl Drop for Recycling {
    fn drop(&mut self) {
        let mut p = pool();
        p.packing -= 1;
        if p.packing == 0 {
            for i in 0..p.n {
                let (lo, hi) = p.pieces[i];
                sys::unmap(lo, hi - lo);
            }
            p.n = 0;
        }
    }
}

/// Backs the 2 MB page at `dst` (2 MB-aligned, in a mapping of
/// [`Mapping`]'s, never touched yet) with freed blocks: one whole 2 MB
/// page of one if any has one, else pieces of several; what they do not
/// cover is faulted in as usual when written. Returns the bytes moved.
pub fn fill(dst: usize) -> usize {
    pool().fill(dst)
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            packing: 0,
            pieces: [(0, 0); SLOTS],
            n: 0,
        }
    }

    fn fill(&mut self, dst: usize) -> usize {
        // A whole 2 MB page, kept whole.
        for i in 0..self.n {
            let (lo, hi) = self.pieces[i];
            let a = lo.next_multiple_of(HUGE);
            if a + HUGE > hi {
                continue;
            }
            self.pieces[i] = (lo, a);
            self.keep((a + HUGE, hi));
            self.tidy(i);
            sys::replace(a, HUGE, dst);
            return HUGE;
        }
        // Pieces, from the top of the last block down.
        let mut off = 0;
        while off < HUGE && self.n > 0 {
            let i = self.n - 1;
            let (lo, hi) = self.pieces[i];
            let k = (hi - lo).min(HUGE - off);
            self.pieces[i] = (lo, hi - k);
            self.tidy(i);
            sys::replace(hi - k, k, dst + off);
            off += k;
        }
        off
    }

    /// Keeps `piece` (unless empty), or unmaps it if no slot is free.
    fn keep(&mut self, (lo, hi): (usize, usize)) {
        if lo == hi {
            return;
        }
        if self.n < SLOTS {
            self.pieces[self.n] = (lo, hi);
            self.n += 1;
        } else {
            sys::unmap(lo, hi - lo);
        }
    }

    /// Drops piece `i` if it is empty.
    fn tidy(&mut self, i: usize) {
        let (lo, hi) = self.pieces[i];
        if lo == hi {
            self.n -= 1;
            self.pieces[i] = self.pieces[self.n];
        }
    }
}

/// An anonymous mapping of whole 2 MB pages, 2 MB-aligned and advised
/// onto 2 MB pages, untouched until written (or filled by [`fill`]).
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a mapping is plain memory; who writes it when is its owner's
// business (the store's, which says why its accesses hold).
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn new(bytes: usize) -> Option<Mapping> {
        let len = bytes.div_ceil(HUGE).max(1) * HUGE;
        let ptr = sys::map(len);
        (!ptr.is_null()).then_some(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        sys::unmap(self.ptr as usize, self.len);
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod sys {
    use super::HUGE;
    use std::ffi::c_void;

    unsafe extern "C" {
        fn mmap(
            addr: *mut c_void,
            len: usize,
            prot: i32,
            flags: i32,
            fd: i32,
            off: i64,
        ) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> i32;
        fn mremap(old: *mut c_void, old_len: usize, new_len: usize, flags: i32, ...)
            -> *mut c_void;
        fn madvise(addr: *mut c_void, len: usize, advice: i32) -> i32;
        fn write(fd: i32, buf: *const c_void, len: usize) -> isize;
    }
    const PROT_RW: i32 = 0x1 | 0x2;
    const MAP_PRIVATE_ANON: i32 = 0x02 | 0x20;
    const MREMAP_MAYMOVE: i32 = 1;
    const MREMAP_FIXED: i32 = 2;
    const MADV_HUGEPAGE: i32 = 14;
    const FAILED: *mut c_void = !0usize as *mut c_void;

    /// A fresh mapping of `len` bytes (a multiple of 4 KB), 2 MB-aligned
    /// where it is 2 MB or more; null if the system refuses.
    pub fn map(len: usize) -> *mut u8 {
        let extra = if len >= HUGE { HUGE } else { 0 };
        // SAFETY: a new private anonymous mapping at an address of the
        // system's choosing; it touches no memory of anyone's.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                len + extra,
                PROT_RW,
                MAP_PRIVATE_ANON,
                -1,
                0,
            )
        };
        if p == FAILED {
            return std::ptr::null_mut();
        }
        let at = p as usize;
        let start = if extra == 0 {
            at
        } else {
            at.next_multiple_of(HUGE)
        };
        // SAFETY: the head and tail trimmed are parts of the mapping just
        // made, outside the block handed out. The advice only asks for
        // 2 MB pages: a refusal leaves 4 KB ones.
        unsafe {
            if start > at {
                munmap(p, start - at);
            }
            let end = at + len + extra;
            if end > start + len {
                munmap((start + len) as *mut c_void, end - start - len);
            }
            if extra > 0 {
                madvise(start as *mut c_void, len, MADV_HUGEPAGE);
            }
        }
        start as *mut u8
    }

    pub fn unmap(at: usize, len: usize) {
        // SAFETY: callers pass ranges of mappings of ours that nothing
        // refers to any more (freed blocks, dropped mappings).
        unsafe { munmap(at as *mut c_void, len) };
    }

    /// Gives a range's memory back; it reads as zeros if touched again.
    pub fn discard(at: usize, len: usize) {
        const MADV_DONTNEED: i32 = 4;
        // SAFETY: a range of a slab of ours that no block is in.
        unsafe { madvise(at as *mut c_void, len, MADV_DONTNEED) };
    }

    /// Grows or shrinks a block of ours, moving it if need be (no copy:
    /// its page-table entries move).
    pub fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: `p..p + old` is one block of ours, which the caller gives
        // up for the result; on failure it is left as it was.
        let q = unsafe { mremap(p as *mut c_void, old, new, MREMAP_MAYMOVE) };
        if q == FAILED {
            std::ptr::null_mut()
        } else {
            q as *mut u8
        }
    }

    /// Moves the pages of `src..src + len` (freed, ours) to `dst`, in
    /// place of what was mapped there (untouched, ours).
    pub fn replace(src: usize, len: usize, dst: usize) {
        let (s, d) = (src as *mut c_void, dst as *mut c_void);
        // SAFETY: both ranges are ours and nothing else refers to either
        // (see `fill`): the source is a freed block, the destination store
        // pages no one has written or handed out yet.
        let q = unsafe { mremap(s, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, d) };
        if q == d {
            return;
        }
        // The move failed (the system is out of memory or of mappings),
        // and may have unmapped `dst` first. Map it afresh, but not over
        // a mapping another thread may have made there meanwhile. (If
        // `dst` is still ours, as when the mapping limit is hit first, the
        // mapping is refused too and we abort below: which of the two it
        // is cannot be told without a race.)
        const MAP_FIXED_NOREPLACE: i32 = 0x10_0000;
        // SAFETY: a new mapping at our own range, refused if taken.
        let fresh = unsafe {
            mmap(
                d,
                len,
                PROT_RW,
                MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        unmap(src, len);
        if fresh == d {
            return;
        }
        // The store has a hole that may be someone else's memory now: no
        // write to it is safe, and the conv packed next would make one.
        // Like an allocation that fails, this is not recoverable.
        // (A fixed message with write(2): printing may allocate or panic,
        // and the pool's lock is held.)
        const MSG: &[u8] = b"error: cannot map part of the weight store again (out of memory)\n";
        // SAFETY: writes a static buffer to stderr; a failure is ignored.
        unsafe { write(2, MSG.as_ptr() as *const c_void, MSG.len()) };
        std::process::abort();
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod sys {
    use super::HUGE;
    use std::alloc::Layout;

    pub fn map(len: usize) -> *mut u8 {
        // Only mappings go here elsewhere (`ours` is false): 2 MB-aligned.
        match Layout::from_size_align(len, HUGE) {
            // SAFETY: a non-zero size.
            Ok(l) => unsafe { std::alloc::alloc_zeroed(l) },
            Err(_) => std::ptr::null_mut(),
        }
    }
    pub fn unmap(at: usize, len: usize) {
        if let Ok(l) = Layout::from_size_align(len, HUGE) {
            // SAFETY: made by `map` with this layout.
            unsafe { std::alloc::dealloc(at as *mut u8, l) }
        }
    }
    pub fn discard(_: usize, _: usize) {}
    pub fn remap(_: *mut u8, _: usize, _: usize) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub fn replace(_: usize, _: usize, _: usize) {
        // The pool is empty here: nothing is ever ours to move.
        unreachable!("no page moves here")
    }
}

#[cfg(all(
    test,
    all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )
))]
mod tests {
    use super::*;

    /// A freed block's pages land in a store page with their contents:
    /// moved, not copied nor faulted in afresh; a whole 2 MB page where the
    /// block has one, else pieces. (A pool of the test's own: the
    /// process's is shared with other tests' compiles.)
    #[test]
    fn freed_blocks_back_store_pages() {
        let mut pool = Box::new(Pool::new());
        let len = 3 * HUGE + 5 * PAGE;
        // (A mapping as `Pages` makes one, not through it: a compile in
        // another test could be carving.)
        let p = sys::map(len) as *mut u32;
        assert!(!p.is_null());
        assert_eq!(p as usize % HUGE, 0, "a big block is 2 MB-aligned");
        for i in 0..len / 4 {
            // SAFETY: within the block.
            unsafe { *p.add(i) = i as u32 ^ 0x5eed };
        }
        // Freed, as `dealloc` would: the block is not used again.
        pool.keep((p as usize, p as usize + len));
        let word = |m: &Mapping, i: usize| {
            // SAFETY: within the mapping, which is backed (filled or fresh).
            unsafe { *(m.ptr as *const u32).add(i) ^ 0x5eed }
        };
        // Three whole pages, then the 20 KB tail as a piece.
        for k in 0..4 {
            let m = Mapping::new(HUGE).unwrap();
            let got = pool.fill(m.ptr as usize);
            if k < 3 {
                assert_eq!(got, HUGE, "page {k}");
                let first = word(&m, 0) as usize;
                assert_eq!(first % (HUGE / 4), 0, "a whole page of the block");
                assert!((0..HUGE / 4).all(|i| word(&m, i) as usize == first + i));
            } else {
                assert_eq!(got, 5 * PAGE, "the tail");
                assert!((0..5 * PAGE / 4).all(|i| word(&m, i) as usize == 3 * HUGE / 4 + i));
                // Past the piece: a fresh page, zeros.
                assert_eq!(word(&m, 5 * PAGE / 4), 0x5eed);
            }
        }
        assert_eq!(pool.n, 0, "the block is used up");
        let m = Mapping::new(HUGE).unwrap();
        assert_eq!(pool.fill(m.ptr as usize), 0, "an empty pool");
    }

    /// Blocks carved side by side: a 2 MB page goes to the pool once every
    /// block in it is freed (and nothing more will be carved from it), and
    /// backs a store page whole. (A slab table and pool of the test's own.)
    #[test]
    fn a_slab_page_is_pooled_when_its_blocks_are_freed() {
        let pool = Mutex::new(Pool::new());
        pool.lock().unwrap().packing = 1;
        let mut slabs = Box::new(Slabs {
            carving: 1,
            slabs: [NO_SLAB; SLABS],
        });
        let mb = |x: f64| (x * (1 << 20) as f64) as usize;
        // a: [0, 1.5) MB, b: [1.5, 3), c: [3, 6): pages 0 (a, b), 1 (b, c), 2 (c).
        let blocks: Vec<(usize, usize)> = [mb(1.5), mb(1.5), mb(3.0)]
            .iter()
            .map(|&len| (slabs.carve(len, &pool).unwrap() as usize, len))
            .collect();
        let lo = blocks[0].0;
        assert_eq!(lo % HUGE, 0);
        assert_eq!(blocks[1].0, lo + mb(1.5), "side by side");
        assert_eq!(blocks[2].0, lo + mb(3.0));
        for w in 0..mb(6.0) / 4 {
            // SAFETY: within the three blocks, which are the slab's first 6 MB.
            unsafe { *((lo + 4 * w) as *mut u32) = w as u32 };
        }
        let pooled = |pool: &Mutex<Pool>| pool.lock().unwrap().n;
        assert!(slabs.free(blocks[0].0, blocks[0].1, &pool));
        assert_eq!(pooled(&pool), 0, "page 0 still holds b");
        assert!(slabs.free(blocks[1].0, blocks[1].1, &pool));
        assert_eq!(pooled(&pool), 1, "page 0 is free; page 1 holds c");
        assert!(slabs.free(blocks[2].0, blocks[2].1, &pool));
        assert_eq!(pooled(&pool), 3);
        assert!(!slabs.free(lo + SLAB, mb(1.0), &pool), "not a slab's");
        // Page 1's words, whole and in place, back a store page.
        let m = Mapping::new(2 * HUGE).unwrap();
        let got = pool.lock().unwrap().fill(m.ptr as usize + HUGE);
        assert_eq!(got, HUGE);
        // SAFETY: within the mapping, its second page just filled.
        let first = unsafe { *((m.ptr as usize + HUGE) as *const u32) } as usize;
        assert_eq!(first % (HUGE / 4), 0, "a whole page of the slab");
        // The page's range in the slab is a hole now, which the system may
        // map another block into: freeing that block is not the slab's.
        let hole = lo + first * 4;
        assert!(slabs.of(hole).is_none());
        assert!(!slabs.free(hole, mb(1.0), &pool), "a block in a hole");
        assert!((0..HUGE / 4).all(|i| {
            // SAFETY: as above.
            let v = unsafe { *((m.ptr as usize + HUGE + 4 * i) as *const u32) };
            v as usize == first + i
        }));
        // Closed and empty: the slab unmaps what the pool does not have.
        let i = slabs.slabs.iter().position(|s| s.open).unwrap();
        slabs.close(i, &pool);
        assert_eq!(slabs.slabs[i].lo, 0, "the slab is gone");
        let mut p = pool.lock().unwrap();
        assert_eq!(p.n, 2);
        for k in 0..p.n {
            let (a, b) = p.pieces[k];
            sys::unmap(a, b - a);
        }
        p.n = 0;
    }
}
