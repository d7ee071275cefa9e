//! The `raft-kv` command: see `raft-kv --help`.

fn main() -> std::process::ExitCode {
    raft_kv::cli::main()
}
