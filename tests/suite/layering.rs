//! The layering of the source tree, checked on every test run (DESIGN §1):
//!
//! - only `server/api/` and `server/server/` (and `lib.rs`, which includes
//!   the generated code) use tonic, prost or the generated `pb` types; the
//!   engines know nothing of gRPC;
//! - an engine (`embed`, `memory`, `query`, `agents`) or the `store` is
//!   reached from outside only through what its root (`mod.rs`) exports,
//!   never through one of its modules (`crate::memory::points::…`);
//! - the engines, the store, `common` and the built-in `tools` never reach
//!   up into `api`, `server` or `config`.
//!
//! `common` is the shared toolbox: its modules are its interface.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules whose insides are private to them.
const SEALED: [&str; 5] = ["embed", "memory", "query", "agents", "store"];
/// Modules that must not depend on the layers above them.
const LOWER: [&str; 7] = [
    "embed", "memory", "query", "agents", "store", "common", "tools",
];
/// What only the gRPC layer may use.
const GRPC: [&str; 6] = [
    "tonic::",
    "tonic_",
    "prost::",
    "prost_types::",
    "crate::pb",
    "#[tonic",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc comments included), line
/// by line.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let code = match line.find("//") {
                Some(at) => &line[..at],
                None => line,
            };
            (i + 1, code.to_owned())
        })
        .collect()
}

/// The top-level module a file of `server/` belongs to: `memory` for
/// `server/memory/points/mod.rs`, `config` for `server/config.rs`.
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    let first = first.to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

/// The names a sealed module's `mod.rs` declares as submodules.
fn submodules(root: &Path, module: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root.join(module).join("mod.rs")).unwrap();
    code_lines(&text)
        .into_iter()
        .filter_map(|(_, line)| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub(crate) mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

/// The first segments used after `crate::<module>::` on a line, including
/// each name of a `crate::<module>::{a, b::c}` group.
fn segments_after(line: &str, module: &str) -> Vec<String> {
    let prefix = format!("crate::{module}::");
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(&prefix) {
        let after = &rest[at + prefix.len()..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    found.push(name.to_owned());
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
        rest = &rest[at + prefix.len()..];
    }
    found
}

/// Every breach of the rules in the files under `root` (the `server/`
/// directory), as "file:line: what".
fn breaches(root: &Path) -> Vec<String> {
    let sealed: Vec<(&str, BTreeSet<String>)> =
        SEALED.iter().map(|m| (*m, submodules(root, m))).collect();
    let mut files = Vec::new();
    source_files(root, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let owner = top_module(relative);
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in code_lines(&text) {
            let at = format!("server/{}:{n}", relative.display());
            if !["api", "server", "lib"].contains(&owner.as_str()) {
                for grpc in GRPC {
                    if line.contains(grpc) {
                        found.push(format!("{at}: uses {grpc} outside the gRPC layer"));
                    }
                }
            }
            for (module, inner) in &sealed {
                if *module == owner {
                    continue;
                }
                for name in segments_after(&line, module) {
                    if inner.contains(&name) {
                        found.push(format!(
                            "{at}: reaches into crate::{module}::{name} (use what {module}/mod.rs exports)"
                        ));
                    }
                }
            }
            if LOWER.contains(&owner.as_str()) {
                for upper in ["api", "server", "config"] {
                    if line.contains(&format!("crate::{upper}")) {
                        found.push(format!("{at}: {owner} depends on crate::{upper}"));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_source_tree_keeps_its_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("server");
    let found = breaches(&root);
    assert!(found.is_empty(), "layering breached:\n{}", found.join("\n"));
}

#[test]
fn the_layering_check_catches_each_kind_of_breach() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for module in SEALED {
        std::fs::create_dir_all(root.join(module)).unwrap();
        std::fs::write(
            root.join(module).join("mod.rs"),
            "pub(crate) mod inner;\nmod other;\npub use inner::Thing;\n",
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(
        root.join("api/fine.rs"),
        "use tonic::Status;\nuse crate::memory::Thing;\n// crate::memory::inner::X in a comment\n",
    )
    .unwrap();
    assert!(breaches(root).is_empty(), "{:?}", breaches(root));
    std::fs::write(
        root.join("query/bad.rs"),
        "use tonic::Status;\nuse crate::memory::{Thing, inner::Secret};\nuse crate::config::Config;\n",
    )
    .unwrap();
    let found = breaches(root);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].contains("query/bad.rs:1: uses tonic::"),
        "{}",
        found[0]
    );
    assert!(found[1].contains("crate::memory::inner"), "{}", found[1]);
    assert!(
        found[2].contains("depends on crate::config"),
        "{}",
        found[2]
    );
}
