//! Writes the generated CRDs to `deploy/crds/` (or, with `--stdout`, prints them).

use std::path::PathBuf;
use std::process::ExitCode;

use agentic_crds::render::{CRD_DIR, render_crds};

fn main() -> ExitCode {
    let to_stdout = std::env::args().any(|a| a == "--stdout");
    let crds = match render_crds() {
        Ok(crds) => crds,
        Err(err) => {
            eprintln!("crdgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_DIR);
    for (name, yaml) in crds {
        if to_stdout {
            print!("---\n{yaml}");
            continue;
        }
        let path = dir.join(&name);
        if let Err(err) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("crdgen: writing {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
