//! The unsafe fence of the whole workspace, checked on the source: `unsafe`
//! blocks and `unsafe impl`s appear only in the files listed here, and
//! every one of them is argued by a `SAFETY` comment right above it (or on
//! its line). Declaring a contract (`unsafe fn`, `unsafe trait`) is allowed
//! anywhere the crate's lint allows it; meeting one is not.
//!
//! The compiler holds the same line: every crate root denies or forbids
//! `unsafe_code`, and only the modules below allow it. This test adds the
//! SAFETY rule and catches a new `#[allow(unsafe_code)]` that would widen
//! the fence unnoticed.

use std::fs;
use std::path::{Path, PathBuf};

/// Files that may hold `unsafe` blocks or impls, relative to the workspace
/// root, each with what it fences.
const FENCE: &[(&str, &str)] = &[
    (
        "engine/src/sys.rs",
        "VFIO ioctls, device mappings and BAR accesses, DMA regions a mapping vouches for, the TSC",
    ),
    (
        "engine/src/dma/view.rs",
        "bounds-checked volatile and atomic accesses to DMA memory; the bounds-checked slices of a command's host buffer that NVMe/TCP reads sockets into",
    ),
    (
        "emu/src/guest_memory.rs",
        "the emulated IOMMU: regions at its IOVAs, views of registered memory",
    ),
    (
        "engine/src/uring/ring.rs",
        "io_uring rings (buffer registration, SQE pushes, io_uring_enter), the NVMe admin and NSID ioctls, pools the kernel maps by virtual address",
    ),
    ("fio/src/hooks.rs", "the C boundary with fio"),
];

/// Workspace members and the fuzz crate.
const CRATES: &[&str] = &[
    "engine", "emu", "reactor", "trid", "perf", "examples", "fio", "fuzz",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if name != "target" && name != "corpus" && name != "findings" {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line: string literals and a trailing `//` comment removed.
fn code(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '"' => in_str = !in_str,
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ if !in_str => out.push(c),
            _ => {}
        }
    }
    out
}

/// 1-based lines with an `unsafe` block or impl.
fn unsafe_sites(text: &str) -> Vec<usize> {
    let mut sites = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let c = code(line);
        let t = c.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let mut rest = c.as_str();
        while let Some(at) = rest.find("unsafe") {
            let before = rest[..at].chars().last();
            let after = rest[at + 6..].trim_start();
            let word = !before.is_some_and(|b| b.is_alphanumeric() || b == '_');
            if word && (after.starts_with('{') || after.starts_with("impl")) {
                sites.push(i + 1);
                break;
            }
            rest = &rest[at + 6..];
        }
    }
    sites
}

/// Whether the `unsafe` on line `n` (1-based) is argued: a comment with
/// `SAFETY` on its line, or in the comment block above the statement it
/// belongs to (code lines that continue the statement may sit between).
fn argued(lines: &[&str], n: usize) -> bool {
    if lines[n - 1].contains("SAFETY") {
        return true;
    }
    let mut i = n - 1;
    let mut continued = 0;
    while i > 0 {
        i -= 1;
        let t = lines[i].trim();
        if t.starts_with("//") {
            if t.contains("SAFETY") {
                return true;
            }
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        // A line of the same statement (an open call or match arm) may sit
        // between the comment and the `unsafe`; a finished one may not.
        if t.is_empty() || t.ends_with(';') || t.ends_with('}') || continued > 4 {
            return false;
        }
        continued += 1;
    }
    false
}

#[test]
fn unsafe_lives_only_in_the_fenced_files_and_every_use_is_argued() {
    let root = root();
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c), &mut files);
    }
    assert!(files.len() > 100, "found only {} source files", files.len());
    let mut outside = Vec::new();
    let mut unargued = Vec::new();
    let mut used = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "engine/tests/unsafe_fence.rs" {
            continue; // its examples are in string literals
        }
        let text = fs::read_to_string(f).unwrap();
        let sites = unsafe_sites(&text);
        if sites.is_empty() {
            continue;
        }
        if !FENCE.iter().any(|(p, _)| *p == rel) {
            outside.push(format!("{rel}:{}", sites[0]));
            continue;
        }
        used.push(rel.clone());
        let lines: Vec<&str> = text.lines().collect();
        for n in sites {
            if !argued(&lines, n) {
                unargued.push(format!("{rel}:{n}"));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "unsafe outside the fence (move it behind a safe API in a fenced file): {outside:?}"
    );
    assert!(
        unargued.is_empty(),
        "unsafe without a SAFETY comment above it: {unargued:?}"
    );
    let idle: Vec<&str> = FENCE
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !used.iter().any(|u| u == p))
        .collect();
    assert!(
        idle.is_empty(),
        "fenced files without unsafe (drop them from FENCE): {idle:?}"
    );
    eprintln!("unsafe lives in {} files: {used:?}", used.len());
}

#[test]
fn unsafe_is_fenced_into_at_most_five_files() {
    assert!(
        FENCE.len() <= 5,
        "{} files may hold unsafe; fold new unsafe into a safe API of one of them: {:?}",
        FENCE.len(),
        FENCE.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
}

#[test]
fn the_fence_check_finds_blocks_and_impls_and_their_arguments() {
    let text = "\
fn a() {
    // SAFETY: argued.
    let x = check(unsafe {
        f()
    });
    let y = g();
    let z = unsafe { h() };
}
// SAFETY: argued too.
unsafe impl Send for T {}
unsafe fn contract() {}
let s = \"unsafe { in a string }\";
// unsafe { in a comment }
fn not_unsafe_code() {}
";
    let sites = unsafe_sites(text);
    assert_eq!(sites, vec![3, 7, 10]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(argued(&lines, 3));
    assert!(
        !argued(&lines, 7),
        "the comment above belongs to another statement"
    );
    assert!(argued(&lines, 10));
}
