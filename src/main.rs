/// Blocks of 1 MiB and up are mappings of resnetc's own: each goes back to
/// the system when freed (glibc would keep some in its heap), and packing
/// moves the pages of freed tensors into the weight store (`resnetc::pages`).
#[global_allocator]
static PAGES: resnetc::pages::Pages = resnetc::pages::Pages;

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
    resnetc::cli::main()
}
