//! The README's recipes per tool are the code the tool tests run: each test program marks what
//! an app developer copies between `recipe: <tool>` and `end recipe` comments, and README.md
//! holds exactly those regions between `<!-- recipes:begin -->` and `<!-- recipes:end -->`.
//! `DL_TENANCY_WRITE_RECIPES=1 cargo test -p dl-tenancy --test recipes` rewrites that part of
//! the README from the tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BEGIN: &str = "<!-- recipes:begin (generated from crates/dl-tenancy/tests/tools_*: cargo test -p dl-tenancy --test recipes) -->";
const END: &str = "<!-- recipes:end -->";

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Every file below `dir` but installed dependencies and caches, in path order.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "node_modules" || name == "__pycache__" || name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn language(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "js" | "mjs" => "js",
        "py" => "python",
        "go" => "go",
        "rb" => "ruby",
        "php" => "php",
        "java" => "java",
        _ => return None,
    })
}

/// The marked regions of one file, dedented: (tool, code).
fn regions(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let bare = line
            .trim_start()
            .trim_start_matches("//")
            .trim_start_matches('#')
            .trim();
        if let Some(tool) = bare.strip_prefix("recipe: ") {
            current = Some((tool.trim().to_string(), vec![]));
        } else if bare == "end recipe" {
            if let Some((tool, lines)) = current.take() {
                let indent = lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let code: Vec<&str> = lines
                    .iter()
                    .map(|l| {
                        if l.len() >= indent {
                            &l[indent..]
                        } else {
                            l.trim_start()
                        }
                    })
                    .collect();
                out.push((tool, code.join("\n").trim_end().to_string()));
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    out
}

/// The README section, from the tool tests.
fn generated() -> String {
    let mut all = vec![];
    for entry in std::fs::read_dir(tests_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tools_"))
        {
            files(&p, &mut all);
        }
    }
    all.sort();
    // tool -> (language, file, code blocks), in the order tools first appear.
    let mut order = vec![];
    let mut by_tool: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for path in all {
        let Some(lang) = language(&path) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let rel = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .display()
            .to_string();
        for (tool, code) in regions(&text) {
            if !by_tool.contains_key(&tool) {
                order.push(tool.clone());
            }
            by_tool
                .entry(tool)
                .or_default()
                .push((lang.to_string(), rel.clone(), code));
        }
    }
    let mut s = String::new();
    for tool in order {
        s.push_str(&format!("\n#### {tool}\n"));
        for (lang, file, code) in &by_tool[&tool] {
            s.push_str(&format!(
                "\nFrom `crates/dl-tenancy/{file}`:\n\n```{lang}\n{code}\n```\n"
            ));
        }
    }
    s
}

#[test]
fn readme_recipes_are_the_code_the_tool_tests_run() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let section = generated();
    assert!(
        section.matches("#### ").count() >= 10,
        "fewer recipes than tools:\n{section}"
    );
    let start = readme.find(BEGIN).map(|i| i + BEGIN.len());
    let end = readme.find(END);
    if std::env::var("DL_TENANCY_WRITE_RECIPES").is_ok_and(|v| v == "1") {
        let (start, end) = (
            start.expect("the begin marker"),
            end.expect("the end marker"),
        );
        let written = format!("{}{section}\n{}", &readme[..start], &readme[end..]);
        std::fs::write(&readme_path, written).unwrap();
        return;
    }
    let (start, end) = (
        start.expect("README.md has the recipes' begin marker"),
        end.expect("README.md has the recipes' end marker"),
    );
    assert_eq!(
        readme[start..end].trim(),
        section.trim(),
        "README.md's recipes differ from the tool tests: run \
         DL_TENANCY_WRITE_RECIPES=1 cargo test -p dl-tenancy --test recipes"
    );
}
