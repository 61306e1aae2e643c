#![allow(unsafe_code)] // the global allocator: SAFETY notes on its impl
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc instead of glibc's malloc: a proxied handshake makes ~100 small allocations
/// (hyper's request, header maps, the tasks), and glibc's free/consolidate paths showed in
/// every handshake (bench/RESULTS.md); mimalloc's thread-local free lists cost far less.
///
/// Not the `mimalloc` crate's allocator: it asks for every block through
/// `mi_malloc_aligned`, whose fast path ends at 1 KiB, so each larger block (boxed
/// connection futures, header maps, read buffers: 8 per handshake) took the generic
/// aligned path. Every mimalloc block is word-aligned, so only stricter alignments need it.
struct MiMalloc;

/// The alignment every mimalloc block has (its size classes are whole words).
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: mimalloc's functions satisfy GlobalAlloc's contract; blocks from `mi_malloc`,
// `mi_zalloc` and `mi_realloc` are word-aligned, so they are used only for alignments up to
// a word, and `mi_free` frees blocks from either family.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[global_allocator]
static ALLOC: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    gatewarden::main()
}
