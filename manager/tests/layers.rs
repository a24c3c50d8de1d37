//! kilnd's layers, checked from the source: the `crate::` paths of every
//! file under `src/` (but `src/bin/`, whose binaries use the library from
//! outside) make a graph of kilnd's top-level modules (`src/x.rs` or
//! `src/x/`), and that graph must keep the shape `ARCHITECTURE.md` draws:
//!
//! - no cycle: arrows point down only;
//! - `http/` is the only module that uses axum (and hyper), `store/` the
//!   only one that uses rusqlite;
//! - the domain (`servers`, `networks`, `images`, `flavors`, `keypairs`)
//!   never imports
//!   `http`; `supervisor`, `store`, `net` and everything below them import
//!   neither `http` nor the domain;
//! - `net/` is Linux plumbing: it does not import the store;
//! - `agent/` (the guest agent client) imports nothing of kilnd but
//!   `util`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DOMAIN: &[&str] = &[
    "servers",
    "networks",
    "images",
    "flavors",
    "keypairs",
    "openstack",
];
/// Above the domain: they may import anything.
const TOP: &[&str] = &["http", "daemon"];

/// Every `.rs` file under `dir`, but `src/bin/`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                sources(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_owned()),
        None => Some(first),
    }
}

/// The file's code without comments (line comments and doc comments; a
/// `//` inside a string cuts the line short, which only loses words).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file's code names as `crate::m` (also in `use crate::{a, b}`).
fn imports(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `kiln_crate::`, not ours
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let m = ident(part.trim());
                if !m.is_empty() && m != "self" {
                    out.insert(m);
                }
            }
        } else {
            let m = ident(rest);
            if !m.is_empty() {
                out.insert(m);
            }
        }
    }
    out
}

/// Whether the code uses crate `name` (`name::` or `use name`).
fn uses_crate(code: &str, name: &str) -> bool {
    code.match_indices(&format!("{name}::")).any(|(i, _)| {
        !code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

struct House {
    /// module -> (imported module -> the files that import it)
    graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// (module, file) using each third-party crate we watch.
    crates: BTreeMap<&'static str, BTreeSet<(String, String)>>,
}

fn house() -> House {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut crates: BTreeMap<&'static str, BTreeSet<(String, String)>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(&src, &f) else {
            continue;
        };
        let name = f.strip_prefix(&src).unwrap().display().to_string();
        let code = code(&std::fs::read_to_string(&f).expect("read source"));
        let node = graph.entry(m.clone()).or_default();
        for to in imports(&code) {
            if to != m {
                node.entry(to).or_default().insert(name.clone());
            }
        }
        for c in ["axum", "hyper", "hyper_util", "http_body_util", "rusqlite"] {
            if uses_crate(&code, c) {
                crates
                    .entry(c)
                    .or_default()
                    .insert((m.clone(), name.clone()));
            }
        }
    }
    House { graph, crates }
}

/// A cycle of the graph, if there is one, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for to in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, to, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn module_graph_is_acyclic() {
    let h = house();
    if let Some(c) = cycle(&h.graph) {
        let steps: Vec<String> = c
            .windows(2)
            .map(|w| format!("{} -> {} ({:?})", w[0], w[1], h.graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "kilnd's modules import each other in a cycle:\n  {}",
            steps.join("\n  ")
        );
    }
}

#[test]
fn only_http_uses_axum_and_only_store_uses_rusqlite() {
    let h = house();
    for (krate, owner) in [
        ("axum", "http"),
        ("hyper", "http"),
        ("hyper_util", "http"),
        ("http_body_util", "http"),
        ("rusqlite", "store"),
    ] {
        let strays: Vec<&String> = h
            .crates
            .get(krate)
            .into_iter()
            .flatten()
            .filter(|(m, _)| m != owner)
            .map(|(_, f)| f)
            .collect();
        assert!(strays.is_empty(), "{krate} outside {owner}/: {strays:?}");
    }
}

#[test]
fn arrows_point_down() {
    let h = house();
    let mut wrong = Vec::new();
    for (from, edges) in &h.graph {
        for (to, files) in edges {
            let why = if TOP.contains(&from.as_str()) {
                None
            } else if to == "http" || to == "daemon" {
                Some("only the daemon wires the HTTP layer; nothing below it imports it")
            } else if !DOMAIN.contains(&from.as_str()) && DOMAIN.contains(&to.as_str()) {
                Some("the domain is used by http and the daemon only")
            } else if from == "net" && to == "store" {
                Some("net/ is Linux plumbing: its callers read the store")
            } else if from == "agent" && to != "util" {
                Some("agent/ speaks the guest agent's protocol on a socket it is given: its callers know servers")
            } else {
                None
            };
            if let Some(why) = why {
                wrong.push(format!("{from} -> {to} in {files:?}: {why}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that point up:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_check_sees_imports() {
    let c = code("use crate::store::Store; // crate::http\nuse crate::{config, util::x};\n/// [`crate::daemon`]\nlet a = crate::net::tap_name(); kiln_crate::x");
    let got: Vec<String> = imports(&c).into_iter().collect();
    assert_eq!(got, ["config", "net", "store", "util"]);
    assert!(uses_crate("use axum::Json;", "axum"));
    assert!(!uses_crate("use kiln_axum::Json; crate::axum::x", "axum"));
}
