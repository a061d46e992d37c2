//! The emulator's modules form layers (declared in `src/lib.rs` by `// N:`
//! comments before their `mod` lines): a module may import only from lower
//! layers, and a folder module's `mod.rs` never imports its own children.
//! This test reads the sources and fails on any import that points upwards
//! or sideways, so an import cycle cannot come back unnoticed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Module name → layer, from the `// N:` comments and `mod` lines of lib.rs.
fn layers(src: &Path) -> HashMap<String, u32> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let mut layer = None;
    let mut map = HashMap::new();
    for line in lib.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("// ")
            && let Some((n, _)) = rest.split_once(':')
            && let Ok(n) = n.parse::<u32>()
        {
            layer = Some(n);
            continue;
        }
        let decl = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
            let n = layer.unwrap_or_else(|| panic!("mod {name} in lib.rs has no layer comment"));
            map.insert(name.to_string(), n);
        }
    }
    map
}

/// The source files of module `name`: `name.rs`, or `name/mod.rs` and the
/// children next to it.
fn files_of(src: &Path, name: &str) -> (Vec<PathBuf>, Vec<String>) {
    let flat = src.join(format!("{name}.rs"));
    if flat.exists() {
        return (vec![flat], Vec::new());
    }
    let dir = src.join(name);
    let mut files = Vec::new();
    let mut children = Vec::new();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("module {name}: {e}")) {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            if stem != "mod" {
                children.push(stem);
            }
            files.push(p);
        }
    }
    (files, children)
}

/// Code lines (comments dropped) of a file, with their line numbers.
fn code(path: &Path) -> Vec<(usize, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, l.to_string()))
        .collect()
}

/// Every `crate::name` in a line (lower-case names only: modules).
fn crate_paths(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .map(|(i, m)| {
            line[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn emulator_modules_import_only_from_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers(&src);
    assert!(layers.len() > 10, "lib.rs declares the modules: {layers:?}");
    let mut wrong = Vec::new();
    for (module, &own) in &layers {
        let (files, children) = files_of(&src, module);
        for file in files {
            let is_parent = file.file_name().is_some_and(|f| f == "mod.rs");
            let is_top = file.parent() == Some(src.as_path());
            for (n, line) in code(&file) {
                let at = format!("{}:{n}", file.display());
                for dep in crate_paths(&line) {
                    match layers.get(&dep) {
                        Some(&l) if dep == *module || l < own => {}
                        Some(&l) => wrong.push(format!(
                            "{at}: {module} (layer {own}) imports {dep} (layer {l})"
                        )),
                        None => wrong.push(format!("{at}: crate::{dep} is not a module")),
                    }
                }
                // A top-level module reaches the crate root through `super`
                // only from its test module (indented `use super::*`).
                if is_top && line.starts_with("use super::") {
                    wrong.push(format!("{at}: {module} imports through super"));
                }
                if is_parent {
                    for child in &children {
                        if line.contains(&format!("{child}::")) {
                            wrong.push(format!("{at}: {module} imports its child {child}"));
                        }
                    }
                }
            }
        }
    }
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}
