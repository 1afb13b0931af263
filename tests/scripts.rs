//! The shell scripts users run (`scripts/`, `bench/`) at least parse: most of them are too long
//! to run in CI (benchmarks, fuzzing, the production build), so a syntax error in one would
//! otherwise show first on a user's machine.

use std::path::{Path, PathBuf};
use std::process::Command;

fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    found.sort();
    found
}

#[test]
fn every_shell_script_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts: Vec<PathBuf> =
        ["scripts", "bench"].iter().flat_map(|d| shell_scripts(&root.join(d))).collect();
    assert!(
        scripts.iter().any(|p| p.ends_with("scripts/build-pgo.sh")),
        "scripts/build-pgo.sh is among them: {scripts:?}"
    );
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().expect("run bash -n");
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
