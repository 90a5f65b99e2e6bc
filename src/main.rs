fn main() -> std::process::ExitCode {
    netstrap::cli::main()
}
