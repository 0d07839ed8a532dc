//! The meshctl binary: parse arguments, run, map the outcome to an exit code. Nothing else.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = meshctl::cli::Cli::parse();
    let filter = match cli.global.verbose {
        // meshctl's own warnings; the libraries' (credential-chain retries) only with -v.
        0 => "error,meshctl=warn",
        1 => "meshctl=info",
        _ => "meshctl=debug,info",
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshctl: cannot start the async runtime: {e}");
            return ExitCode::from(meshctl::commands::exit::FAILED);
        }
    };
    match runtime.block_on(meshctl::commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
