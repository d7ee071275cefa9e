//! `docs/paper-map.md` names functions, fields, types and tests; this test fails when one of
//! them no longer exists, so the map cannot rot. Rules (the map's "Checking this map"):
//!
//! * every file a backticked name ends in `.rs` (or a folder, in `/`) must exist, relative to
//!   one of the workspace's source roots;
//! * in a table's last (Tests) column, each name after a file must be a function in that file;
//! * every other backticked code name (`Type::name`, `Type.name`, `name`) must be defined
//!   somewhere in the workspace: its last segment as a function, type, trait, constant, field
//!   or enum variant.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where a short file name in the map may be found, in order.
const ROOTS: &[&str] = &[
    "raft-core/src",
    "raft-core/src/raft",
    "raft-core/src/tests",
    "",
    "tests",
    "tests/tests",
    "raft-storage/tests",
    "raft-storage/src",
    "raft-net/src",
    "raft-net/tests",
    "raft-sim/tests",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The identifiers a Rust source defines: functions, types, traits, constants, fields and
/// variants (a deliberately loose scan: a name that appears in a definition position).
fn definitions(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let words: Vec<&str> = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if matches!(
            pair[0],
            "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "mod"
        ) {
            names.insert(pair[1].to_string());
        }
    }
    for line in source.lines() {
        let line = line.trim_start().trim_start_matches("pub(crate) ");
        let line = line
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ");
        let ident: String = line
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            continue;
        }
        let rest = line[ident.len()..].trim_start();
        // A field (`name: Type`) or a variant (`Name,`, `Name {`, `Name(`).
        if rest.starts_with(':') && !rest.starts_with("::")
            || rest.starts_with(',')
            || rest.starts_with('{')
            || rest.starts_with('(')
            || rest.is_empty()
        {
            names.insert(ident);
        }
    }
    names
}

fn is_code_name(token: &str) -> bool {
    let mut chars = token.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && token
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.')
        && !token.ends_with('.')
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn resolve(root: &Path, file: &str) -> Option<PathBuf> {
    ROOTS
        .iter()
        .map(|r| root.join(r).join(file.trim_end_matches('/')))
        .find(|p| p.exists())
}

#[test]
fn every_name_in_the_paper_map_exists() {
    let root = workspace();
    let map = std::fs::read_to_string(root.join("docs/paper-map.md")).expect("the map");
    let mut files = Vec::new();
    for dir in [
        "raft-core",
        "raft-storage",
        "raft-net",
        "raft-sim",
        "tests",
        "bench",
        "examples",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut defined = BTreeSet::new();
    for file in &files {
        defined.extend(definitions(
            &std::fs::read_to_string(file).unwrap_or_default(),
        ));
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in map.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        let tests_cell = if line.starts_with('|') && cells.len() > 3 {
            cells[cells.len() - 2]
        } else {
            ""
        };
        // Names in the Tests column must be functions of the file named before them.
        let mut file: Option<PathBuf> = None;
        for token in backticked(tests_cell) {
            if token.ends_with(".rs") {
                file = resolve(&root, token);
                continue;
            }
            // (Types in the column name the subject of a test, not a test.)
            if let Some(path) = &file
                && is_code_name(token)
                && token.starts_with(|c: char| c.is_lowercase())
                && !token.contains("::")
                && !token.contains('.')
            {
                let source = std::fs::read_to_string(path).unwrap_or_default();
                checked += 1;
                let defines = |open: char| source.contains(&format!("fn {token}{open}"));
                if !defines('(') && !defines('<') {
                    missing.push(format!(
                        "test `{token}` is not a function in {}",
                        path.display()
                    ));
                }
            }
        }
        for token in backticked(line) {
            if token.ends_with(".rs") || token.ends_with('/') {
                if !token.contains('<') && resolve(&root, token).is_none() {
                    missing.push(format!("file `{token}` does not exist"));
                }
                checked += 1;
                continue;
            }
            // Environment variables (`RAFT_SIM_SEEDS`) are not code.
            if !is_code_name(token) || token.chars().all(|c| c.is_uppercase() || c == '_') {
                continue;
            }
            let last = token.rsplit([':', '.']).next().unwrap_or(token);
            checked += 1;
            if !defined.contains(last) {
                missing.push(format!("`{token}` is not defined anywhere"));
            }
        }
    }
    assert!(
        checked > 300,
        "the map names only {checked} things: was it parsed?"
    );
    assert!(
        missing.is_empty(),
        "docs/paper-map.md names what does not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_check_catches_a_renamed_function() {
    let source = "pub fn present() {}\nstruct S {\n    field: u8,\n}\nenum E {\n    Variant,\n    Other(u8),\n}\n";
    let defined = definitions(source);
    for name in ["present", "S", "field", "E", "Variant", "Other"] {
        assert!(defined.contains(name), "{name}");
    }
    assert!(!defined.contains("absent"));
}
