//! The crate's modules depend on each other in one direction only.
//!
//! The test reads the sources under `src/` (the library; the binaries are
//! its users), finds every path into the crate (`crate::…`, and `super::…`
//! resolved), and builds the graph of which top-level module uses which.
//! It fails on any cycle and on any edge that goes up the layers declared in
//! [`LAYERS`]; `--nocapture` prints the graph:
//!
//! ```sh
//! cargo test --test layering -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, bottom layer first. A module may use modules of
/// lower layers only: never one of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["clock", "ids", "keyring", "malloc", "storage", "logging"],
    &["timestamp", "model"],
    &["metrics", "command", "admin_key"],
    &["log"],
    &["wal", "catalog"],
    &["config", "shard"],
    &["snapshot"],
    &["store"],
    &["engine"],
    &["offline", "api", "cluster"],
    &["app", "fuzzing"],
];

/// Module path of a source file: `src/shard/actor.rs` → `shard::actor`,
/// `src/shard/mod.rs` → `shard`, `src/lib.rs` → `` (the crate root).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The source without comments and string literals, so that a path named
/// in a doc comment or a message is not taken for a use.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            i = end;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if text[i..].starts_with("r#\"") {
            let end = text[i + 3..]
                .find("\"#")
                .map_or(bytes.len(), |e| i + 3 + e + 2);
            i = end;
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths into the crate in `code`, as segments after `crate`, with
/// `super` resolved against `module` and `{…}` groups expanded one level.
fn crate_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':';
        let word: String = chars[i..].iter().take_while(|c| is_ident(**c)).collect();
        if !starts_word || (word != "crate" && word != "super") {
            i += word.len().max(1);
            continue;
        }
        // Walk `a::b::c`, or `a::{b, c::d}`.
        let mut base: Vec<String> = if word == "crate" {
            Vec::new()
        } else {
            module[..module.len().saturating_sub(1)].to_vec()
        };
        let mut j = i + word.len();
        loop {
            if chars[j..].starts_with(&[':', ':']) {
                j += 2;
            } else {
                break;
            }
            if chars.get(j) == Some(&'{') {
                let (items, close) = group_items(&chars, j);
                for item in items {
                    let mut path = base.clone();
                    path.extend(
                        item.split("::")
                            .map(|s| s.trim().to_owned())
                            .take_while(|s| !s.is_empty() && s.chars().all(is_ident)),
                    );
                    found.push(path);
                }
                base.clear();
                j = close;
                break;
            }
            let seg: String = chars[j..].iter().take_while(|c| is_ident(**c)).collect();
            if seg == "super" {
                base.pop();
            } else if !seg.is_empty() {
                base.push(seg.clone());
            }
            j += seg.len();
            if seg.is_empty() {
                break;
            }
        }
        if !base.is_empty() {
            found.push(base);
        }
        i = j.max(i + 1);
    }
    found
}

/// The items of the `{…}` group opening at `open`, split at its top-level
/// commas, and the position of its closing brace.
fn group_items(chars: &[char], open: usize) -> (Vec<String>, usize) {
    let mut items = vec![String::new()];
    let mut depth = 0;
    for (at, c) in chars.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return (items, at);
        }
        match (c, depth) {
            ('{', 1) => {}
            (',', 1) => items.push(String::new()),
            _ => items.last_mut().expect("an item").push(*c),
        }
    }
    (items, chars.len())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src reads") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "main.rs")
        {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_path(&src, file);
        let Some(from) = module.first().cloned() else {
            continue; // lib.rs declares the modules and uses none.
        };
        let text = std::fs::read_to_string(file).expect("a source file reads");
        let edges = graph.entry(from.clone()).or_default();
        for path in crate_paths(&code_only(&text), &module) {
            if let Some(to) = path.first().filter(|to| modules.contains(*to)) {
                if *to != from {
                    edges.insert(to.clone());
                }
            }
        }
    }
    graph
}

/// The cycles of `graph` (its strongly connected components of more than one
/// module), each sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(at) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for a in graph.keys() {
        let component: Vec<String> = graph
            .keys()
            .filter(|b| *b == a || (reaches(a, b) && reaches(b, a)))
            .cloned()
            .collect();
        if component.len() > 1 {
            found.insert(component);
        }
    }
    found.into_iter().collect()
}

#[test]
fn modules_depend_one_way_down_the_layers() {
    let graph = graph();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(at, layer)| layer.iter().map(move |m| (*m, at)))
        .collect();
    println!("module dependencies (each module: the modules it uses), top layer first:");
    let unlayered = graph.keys().filter(|m| !layer_of.contains_key(m.as_str()));
    let order: Vec<&str> = LAYERS
        .iter()
        .rev()
        .flat_map(|layer| layer.iter().copied())
        .chain(unlayered.map(String::as_str))
        .collect();
    for module in order {
        let uses: Vec<&str> = graph
            .get(module)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        println!("  {module:<10} -> {}", uses.join(", "));
    }
    for (a, uses) in &graph {
        for b in uses.iter().filter(|b| a < *b) {
            if graph.get(b).is_some_and(|back| back.contains(a)) {
                println!("  {a} and {b} use each other");
            }
        }
    }
    let mut problems = Vec::new();
    for module in graph.keys() {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!("module {module} is in no layer of LAYERS"));
        }
    }
    for cycle in cycles(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" <-> ")));
    }
    for (from, uses) in &graph {
        for to in uses {
            let (Some(f), Some(t)) = (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
            else {
                continue;
            };
            if t >= f {
                problems.push(format!("{from} (layer {f}) uses {to} (layer {t})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn paths_are_found_in_code_but_not_in_comments_or_strings() {
    let module = vec!["shard".to_owned(), "actor".to_owned()];
    let code = code_only(
        "use super::state::X; use crate::{log::Log, command::{A, B}};\n\
         // crate::engine::Engine\n let s = \"crate::api\"; crate::wal::Lsn::MAX;",
    );
    let paths = crate_paths(&code, &module);
    let firsts: BTreeSet<&str> = paths
        .iter()
        .filter_map(|p| p.first().map(String::as_str))
        .collect();
    assert_eq!(
        firsts,
        ["command", "log", "shard", "wal"].into_iter().collect()
    );
}
