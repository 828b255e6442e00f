fn main() -> std::process::ExitCode {
    resnetc::cli::main()
}
