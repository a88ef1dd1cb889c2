//! How the examples end: an error is printed as one line naming what went wrong, and the exit code is 1.

pub fn exit_on_error(result: Result<(), Box<dyn std::error::Error>>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
