//! The omniroute binary: a thin shell that parses the command line and calls the engine.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
