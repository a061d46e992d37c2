//! Builds the C side of the ioengine (`src/shim.c`) against the headers of
//! the installed fio, which `scripts/fio-headers.sh` fetches and configures.
//!
//! Checks, each failing with one line that says what to do:
//! - fio is installed and its headers are provisioned (or `NVME_FIO_SRC`
//!   names a configured fio source tree);
//! - the headers are those of the installed release: fio loads an external
//!   engine only when the engine's `FIO_IOOPS_VERSION` equals its own, and
//!   that number only changes between releases, so equal releases mean an
//!   equal engine ABI. The headers' `FIO_IOOPS_VERSION` is printed into the
//!   build log and exported as `NVME_FIO_IOOPS_VERSION`.

use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = "scripts/fio-headers.sh";

fn fail(msg: String) -> ! {
    // One line, in the form cargo shows at the end of a failed build.
    eprintln!("error: {msg}");
    println!("cargo::error={msg}");
    std::process::exit(1);
}

/// `3.33` from `fio-3.33` (`fio --version`).
fn installed_fio() -> Option<String> {
    let fio = std::env::var("NVME_FIO_BIN").unwrap_or_else(|_| "fio".into());
    let out = Command::new(fio).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().strip_prefix("fio-")?;
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!v.is_empty()).then_some(v)
}

/// The installed Debian package's version (`3.33-3`), if dpkg knows fio.
fn installed_package() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "fio"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// The release a source tree is (`DEF_VER=fio-3.33` in FIO-VERSION-GEN).
fn source_release(dir: &Path) -> Option<String> {
    let script = std::fs::read_to_string(dir.join("FIO-VERSION-GEN")).ok()?;
    script
        .lines()
        .find_map(|l| l.strip_prefix("DEF_VER=fio-"))
        .map(|v| v.trim().to_string())
}

fn ioops_version(dir: &Path) -> Option<u32> {
    let h = std::fs::read_to_string(dir.join("ioengines.h")).ok()?;
    h.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("#define")?.trim();
        rest.strip_prefix("FIO_IOOPS_VERSION")?.trim().parse().ok()
    })
}

fn main() {
    println!("cargo::rerun-if-changed=src/shim.c");
    println!("cargo::rerun-if-env-changed=NVME_FIO_SRC");
    println!("cargo::rerun-if-env-changed=NVME_FIO_BIN");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest.parent().unwrap_or(&manifest).to_path_buf();

    let Some(release) = installed_fio() else {
        fail(format!(
            "nvme-fio: fio is not installed (no `fio --version`); run {SCRIPT} (as root) to install it and its headers"
        ));
    };
    let dir = match std::env::var_os("NVME_FIO_SRC") {
        Some(d) => PathBuf::from(d),
        None => repo.join(format!("scripts/.cache/fio-src/fio-{release}")),
    };
    println!(
        "cargo::rerun-if-changed={}",
        dir.join("config-host.h").display()
    );
    // A fio upgrade changes dpkg's database: check again.
    if Path::new("/var/lib/dpkg/status").exists() {
        println!("cargo::rerun-if-changed=/var/lib/dpkg/status");
    }
    if !dir.join("config-host.h").is_file() || !dir.join("ioengines.h").is_file() {
        fail(format!(
            "nvme-fio: no configured headers for the installed fio {release} in {}; run {SCRIPT} (as root) first",
            dir.display()
        ));
    }
    match source_release(&dir) {
        Some(r) if r == release => {}
        Some(r) => fail(format!(
            "nvme-fio: headers in {} are fio {r} but fio {release} is installed (fio refuses engines of another ioengine ABI); rerun {SCRIPT}",
            dir.display()
        )),
        None => fail(format!(
            "nvme-fio: cannot tell which fio release {} holds (no DEF_VER in FIO-VERSION-GEN); rerun {SCRIPT}",
            dir.display()
        )),
    }
    // The Debian revision too, when the headers came from scripts/fio-headers.sh.
    if let (Ok(fetched), Some(installed)) = (
        std::fs::read_to_string(dir.join(".nvme-fio-configured")),
        installed_package(),
    ) && fetched.trim() != installed
    {
        fail(format!(
            "nvme-fio: headers in {} are from fio package {} but {installed} is installed; rerun {SCRIPT}",
            dir.display(),
            fetched.trim()
        ));
    }
    let Some(abi) = ioops_version(&dir) else {
        fail(format!(
            "nvme-fio: {} has no FIO_IOOPS_VERSION; rerun {SCRIPT}",
            dir.join("ioengines.h").display()
        ));
    };
    println!("cargo::rustc-env=NVME_FIO_IOOPS_VERSION={abi}");
    println!("cargo::rustc-env=NVME_FIO_RELEASE={release}");

    cc::Build::new()
        .file("src/shim.c")
        .include(&dir)
        // fio builds every file with its configure result pre-included.
        .flag("-include")
        .flag(dir.join("config-host.h").to_string_lossy().as_ref())
        .define("_GNU_SOURCE", None)
        .define("_LARGEFILE_SOURCE", None)
        .define("_FILE_OFFSET_BITS", "64")
        .flag_if_supported("-std=gnu99")
        // fio's headers are not warning-clean under every compiler.
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-missing-field-initializers")
        .compile("nvme_fio_shim");
}
