//! `baton`, the command line of a Baton node: see `baton --help`.

fn main() {
    std::process::exit(baton_node::cli::run(std::env::args_os()));
}
