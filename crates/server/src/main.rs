//! `hendelse`: the event platform's one binary; everything it does is in the library.

fn main() -> std::process::ExitCode {
    hendelse::main()
}
