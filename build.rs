//! Puts the git revision into the binary for `flagsync --version`. (The
//! phone tables are committed: `src/import/phone_tables_gen.rs` says why.)

fn main() {
    git_revision();
}

/// The git revision for `flagsync --version`.
fn git_revision() {
    println!("cargo:rerun-if-env-changed=FLAGSYNC_GIT_REV");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let rev = std::env::var("FLAGSYNC_GIT_REV").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !rev.is_empty()).then_some(rev)
    });
    println!(
        "cargo:rustc-env=FLAGSYNC_GIT_REV={}",
        rev.as_deref().unwrap_or("unknown")
    );
}
