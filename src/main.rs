//! The omniroute binary: a thin shell that parses the command line and calls the engine.

fn main() -> std::process::ExitCode {
    omniroute::cli::run()
}
