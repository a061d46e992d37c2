//! The module layering documented in the crate doc ("Layers") holds in the
//! source: each module of `reactor/src` uses only modules listed before it
//! in [`ORDER`], so the modules cannot import each other in a circle.
//!
//! Read from the source files (their `crate::module` paths outside
//! comments and unit tests), so a new upward import fails here with the
//! file and the module it reached for.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The modules of the crate, lowest layer first (the crate doc's table,
/// row by row).
const ORDER: &[&str] = &[
    // foundations
    "request",
    "stats",
    "cores",
    "placement",
    "poller",
    "timer",
    "error",
    "attach",
    "attach_tcp",
    // rings
    "producer",
    // dispatch
    "dispatch",
    // users of dispatch
    "context",
    "direct",
    // the loop
    "reactor",
    // the set
    "set",
    // the fuzzing harness (feature `fuzzing`)
    "fuzzing",
];

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("reactor/src is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`dispatch/slots.rs` →
/// `dispatch`), or `None` for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The leading identifier of `s`.
fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The crate modules a source text names as `crate::NAME` or in
/// `crate::{NAME, ...}` (also over several lines), outside comments and
/// `#[cfg(test)]` sections.
fn uses(text: &str) -> Vec<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            found.extend(group[..end].split(',').map(ident));
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|m| ORDER.contains(&m.as_str()));
    found
}

#[test]
fn every_module_uses_only_modules_of_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut upward = Vec::new();
    let mut seen = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&own) = rank.get(module.as_str()) else {
            panic!(
                "{} belongs to module `{module}`, which the layering does not list: add it to \
                 ORDER here and to the \"Layers\" table of the crate doc",
                file.display()
            );
        };
        seen += 1;
        let text = fs::read_to_string(file).expect("source is readable");
        for used in uses(&text) {
            if used != module && rank[used.as_str()] >= own {
                upward.push(format!("{} uses `{used}`", file.display()));
            }
        }
    }
    assert!(seen >= ORDER.len(), "only {seen} source files were read");
    assert!(
        upward.is_empty(),
        "imports against the documented layering (a module may use only modules of lower \
         layers):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scanner_finds_plain_and_grouped_crate_paths_but_not_comments() {
    let text = "use crate::producer::Link;\nuse crate::{dispatch::Queue, poller};\n\
                use crate::{\n    timer::Timers,\n    stats,\n};\n\
                let x = crate::cores::format_cores(&[]); // crate::set is only mentioned\n\
                #[cfg(test)]\nuse crate::reactor;\n";
    assert_eq!(
        uses(text),
        vec!["producer", "dispatch", "poller", "timer", "stats", "cores"]
    );
}
