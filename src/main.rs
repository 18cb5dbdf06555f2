//! The omniroute binary: a thin shell that parses the command line and calls the engine.

fn main() -> std::process::ExitCode {
    // A damaged log can make redb panic; those panics become errors naming the file, and this
    // hook keeps them from also printing a backtrace (every other panic prints as before).
    omniroute_core::log::install_panic_hook();
    omniroute::cli::run()
}
