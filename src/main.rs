fn main() -> std::process::ExitCode {
    gatewarden::cli::main()
}
