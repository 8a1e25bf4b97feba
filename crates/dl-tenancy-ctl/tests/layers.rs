//! The import rule of the library (lib.rs): each layer imports only from the layers below it,
//! `control` and `server` never from each other, nothing from the crate root, and no source
//! file of any crate of the project is part of an import circle. Read from the `use crate::`
//! lines (and `crate::`/`super::` paths) of the source, so no server is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's layers, lowest first; a layer's rank is its position.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["plan"],
    &["base"],
    &["control", "server"],
    &["ops"],
];

/// The crates whose files must have no import circle (paths from the repository root).
const CRATES: &[&str] = &[
    "src",
    "crates/dl-tenancy-ctl/src",
    "crates/dl-tenancy-http/src",
    "crates/dl-tenancy/src",
    "crates/dl-bench/src",
    "crates/pg-harness/src",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, as (module path, file), e.g. ("ops::moves", ...).
fn modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                let root = parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main");
                let name = if root {
                    String::new()
                } else {
                    parts.join("::")
                };
                out.insert(name, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The paths a file names: each `use crate::...` tree expanded, and every other
/// `crate::a::b` or `super::a` path in its code (comments left out), as module paths from the
/// crate root.
fn referenced_paths(module: &str, text: &str) -> Vec<String> {
    // A file's own unit tests (`#[cfg(test)] mod tests` at its end) look at the file itself.
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    // `use` statements, whole (they may span lines and nest braces).
    let mut rest = code.as_str();
    while let Some(i) = rest.find("use ") {
        let stmt_start = &rest[i + 4..];
        let Some(end) = stmt_start.find(';') else {
            break;
        };
        let stmt: String = stmt_start[..end].split_whitespace().collect();
        let word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if word_start && (stmt.starts_with("crate::") || stmt.starts_with("super::")) {
            expand("", &stmt, &mut out);
        }
        rest = &stmt_start[end..];
    }
    // Other paths in the code.
    for key in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(key) {
            let at = from + i;
            let tail: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(tail.trim_end_matches(':').to_string());
            from = at + key.len();
        }
    }
    out.into_iter()
        .filter_map(|p| resolve(module, &p))
        .collect()
}

/// Expand a `use` tree (`a::{b, c::{d}}`) under `prefix` into full paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        let joined = join(prefix, head);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&joined, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&joined, &inner[start..], out);
    } else if !tree.is_empty() {
        let name = tree.split(" as ").next().unwrap();
        let path = join(prefix, name);
        out.push(path.trim_end_matches("::self").to_string());
    }
}

fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{name}"),
    }
}

/// A path as seen from `module`, made absolute (without `crate::`); `None` for other crates.
fn resolve(module: &str, path: &str) -> Option<String> {
    if let Some(p) = path.strip_prefix("crate::") {
        return Some(p.to_string());
    }
    if path == "crate" {
        return Some(String::new());
    }
    if let Some(p) = path.strip_prefix("super::") {
        if p == "*" || p.is_empty() {
            return None; // a `mod tests` inside the file looking at the file itself
        }
        let mut parts: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        parts.pop();
        parts.push(p);
        return Some(parts.join("::"));
    }
    None
}

/// The file a path lands in: the longest prefix of it that is a module of the crate.
fn target<'a>(mods: &'a BTreeMap<String, PathBuf>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (0..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|p| mods.get_key_value(&p).map(|(k, _)| k.as_str()))
}

/// Module → the other modules of the same crate it imports from.
fn graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(dir);
    let mut g = BTreeMap::new();
    for (module, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        let edges: BTreeSet<String> = referenced_paths(module, &text)
            .iter()
            .filter_map(|p| target(&mods, p))
            .filter(|t| t != module)
            .map(str::to_string)
            .collect();
        g.insert(module.clone(), edges);
    }
    g
}

/// A circle of modules, if there is one.
fn find_circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut circle = stack[from..].to_vec();
                    circle.push(m.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let top = module.split("::").next()?;
    LAYERS
        .iter()
        .enumerate()
        .find_map(|(rank, names)| names.iter().find(|n| **n == top).map(|n| (rank, *n)))
}

#[test]
fn every_library_module_sits_in_a_layer() {
    let mods = modules(&repo_root().join("crates/dl-tenancy-ctl/src"));
    for module in mods.keys().filter(|m| !m.is_empty()) {
        assert!(layer_of(module).is_some(), "{module} is in no layer");
    }
}

#[test]
fn layers_import_only_downwards() {
    let g = graph(&repo_root().join("crates/dl-tenancy-ctl/src"));
    let mut wrong = Vec::new();
    for (from, tos) in &g {
        let Some((rank, layer)) = layer_of(from) else {
            continue;
        };
        for to in tos {
            match layer_of(to) {
                None => wrong.push(format!("{from} -> the crate root ({to:?})")),
                Some((r, l)) if r > rank || (r == rank && l != layer) => {
                    wrong.push(format!("{from} ({layer}) -> {to} ({l})"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_crate_has_an_import_circle() {
    for dir in CRATES {
        let g = graph(&repo_root().join(dir));
        assert!(
            g.len() > 1 || *dir == "crates/dl-tenancy-http/src",
            "{dir}: no modules read"
        );
        if let Some(circle) = find_circle(&g) {
            panic!("{dir}: import circle {}", circle.join(" -> "));
        }
    }
}

/// The reader itself: a circle is found, `use` trees are expanded, `super::` resolves.
#[test]
fn the_reader_sees_imports() {
    let mut out = Vec::new();
    expand("", "crate::domain::{error::{Error,Result},names}", &mut out);
    assert_eq!(
        out,
        [
            "crate::domain::error::Error",
            "crate::domain::error::Result",
            "crate::domain::names"
        ]
    );
    assert_eq!(
        resolve("ops::moves", "super::pooling::x").as_deref(),
        Some("ops::pooling::x")
    );
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert!(find_circle(&g).is_some());
    let refs: BTreeSet<String> = referenced_paths(
        "ops",
        "use crate::plan::quote::quote_ident; // crate::x\nfn f() { crate::domain::names::EXTENSION; }",
    )
    .into_iter()
    .collect();
    assert_eq!(
        refs,
        BTreeSet::from([
            "plan::quote::quote_ident".into(),
            "domain::names::EXTENSION".into()
        ])
    );
}

/// README.md's Layout section lists every file of the library under its layer, and nothing
/// that is not there.
#[test]
fn the_readme_layout_matches_the_tree() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("## Layout\n").expect("a Layout section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut listed = BTreeSet::new();
    let mut layer = None;
    for line in section.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [rank, dir, ..] = words[..] {
            if rank.parse::<usize>().is_ok() && dir.ends_with('/') {
                layer = Some(dir.trim_end_matches('/').to_string());
                continue;
            }
        }
        if line.starts_with("```") {
            layer = None;
        }
        let Some(layer) = &layer else { continue };
        for word in words {
            let file = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '.');
            if file.ends_with(".rs") {
                listed.insert(format!("{layer}/{file}"));
            }
        }
    }
    let src = repo_root().join("crates/dl-tenancy-ctl/src");
    let files: BTreeSet<String> = modules(&src)
        .values()
        .map(|p| p.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
        .filter(|p| p.contains('/'))
        .collect();
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| !f.ends_with("/mod.rs") && !listed.contains(*f))
        .collect();
    let stale: Vec<&String> = listed.iter().filter(|f| !files.contains(*f)).collect();
    assert!(missing.is_empty(), "README Layout misses {missing:?}");
    assert!(
        stale.is_empty(),
        "README Layout names files that are gone: {stale:?}"
    );
}
