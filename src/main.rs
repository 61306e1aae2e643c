/// mimalloc instead of glibc's malloc: a proxied handshake makes ~100 small allocations
/// (hyper's request, header maps, the tasks), and glibc's free/consolidate paths were 13 % of
/// the user-space instructions per handshake (callgrind); mimalloc's thread-local free lists
/// are a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatewarden::cli::main()
}
