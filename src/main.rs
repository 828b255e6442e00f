fn main() -> std::process::ExitCode {
    // `resnetc compile ... -o - | head`: the reader went away, which is not
    // resnetc's failure. println! panics on a closed pipe; end quietly, as
    // `cat` does, instead of printing a panic and exiting 101.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
    large_frees_go_back();
    resnetc::cli::main()
}

/// glibc serves a block from its heap once a freed block of that size
/// raised its mmap threshold, and a freed heap block stays resident. Weights
/// are freed one by one as they are packed: with a fixed threshold each
/// tensor (1 MiB and up) is its own mapping and goes back to the system
/// when freed, so unpacked and packed weights are never resident together.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn large_frees_go_back() {
    const M_MMAP_THRESHOLD: i32 = -3;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread starts.
    unsafe { mallopt(M_MMAP_THRESHOLD, 1 << 20) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn large_frees_go_back() {}
