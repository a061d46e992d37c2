//! The driver's modules form the layers `engine/src/driver/mod.rs` writes
//! down (leaves → `admin` → `shared/` → `qpair/` → `controller/`): a module
//! may import from lower layers and from its own folder, never upwards or
//! sideways. This test reads the sources and fails on any such import, so
//! an import cycle inside `driver/` cannot come back unnoticed.

use std::fs;
use std::path::{Path, PathBuf};

/// Layer of each module of `driver/`, lowest first: the leaves in the
/// order the floor plan names them (each imports only earlier ones), then
/// `admin`, `shared/`, `qpair/`, `controller/`.
fn layer(module: &str) -> Option<u32> {
    Some(match module {
        "health" | "options" | "prp" | "ring" | "tracker" | "stats" => 1,
        "error" => 2,
        "bounds" | "namespace" => 3,
        "transport" => 4,
        "admin" => 5,
        "shared" => 6,
        "qpair" => 7,
        "controller" => 8,
        _ => return None,
    })
}

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/driver")
}

/// Every lower-case path segment following `prefix` in `line`.
fn after(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .filter(|(i, _)| {
            // `super::x` inside `super::super::x` is the longer form's.
            !line[..*i].ends_with("super::")
        })
        .map(|(i, m)| {
            line[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The driver modules a code line of `file` (in module `own`) refers to.
fn deps(line: &str, nested: bool) -> Vec<String> {
    let mut out = after(line, "crate::driver::");
    if nested {
        out.extend(after(line, "super::super::"));
    } else {
        out.extend(after(line, "super::"));
    }
    out
}

#[test]
fn driver_modules_import_only_from_lower_layers() {
    let root = driver();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for e in fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let (own, files, nested) = if p.is_dir() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let files: Vec<PathBuf> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|f| f.extension().is_some_and(|x| x == "rs"))
                .collect();
            (name, files, true)
        } else {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            if stem == "mod" {
                continue; // the floor plan itself: declares and re-exports
            }
            (stem, vec![p], false)
        };
        let own_layer =
            layer(&own).unwrap_or_else(|| panic!("driver/{own} has no layer in this test"));
        for file in files {
            checked += 1;
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let t = line.trim_start();
                if t.starts_with("//") || t.starts_with("use super::*") {
                    continue;
                }
                for dep in deps(line, nested) {
                    match layer(&dep) {
                        Some(l) if dep == own || l < own_layer => {}
                        Some(l) => wrong.push(format!(
                            "{}:{}: {own} (layer {own_layer}) imports {dep} (layer {l})",
                            file.strip_prefix(&root).unwrap().display(),
                            n + 1
                        )),
                        None => {}
                    }
                }
            }
        }
    }
    assert!(checked > 20, "read only {checked} files of driver/");
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "imports against the driver's layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_check_reads_the_import_forms_the_driver_uses() {
    assert_eq!(
        deps("use crate::driver::qpair::QueuePair;", false),
        ["qpair"]
    );
    assert_eq!(
        deps("use super::namespace::LbaRange;", false),
        ["namespace"]
    );
    assert_eq!(deps("use super::super::admin::AdminData;", true), ["admin"]);
    assert!(deps("use super::recovery::live_word;", true).is_empty());
}
