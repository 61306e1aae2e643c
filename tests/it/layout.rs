//! The source's layout keeps its shape: no module imports a module that imports it back
//! (each `crate::x` path in `src/x/…` or `src/x.rs` is an edge of the module graph), so a
//! reader can follow a byte down the stages without meeting the same module twice. The
//! same holds inside each folder, between its files (`super::x`, `crate::folder::x`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's text without its comment lines: a doc link to a module is no import of it.
fn code_of(f: &Path) -> String {
    std::fs::read_to_string(f)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = code_of(&f);
        let deps = g.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    g
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 15, "the modules were found: {:?}", g.keys());
    no_circle(&g);
}

/// The files of each folder under `src/` (`mod.rs` aside: it is the folder itself) → the
/// sibling files each names, as `super::x` or `crate::<folder path>::x`.
fn folder_graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(dir) = rel.parent().filter(|d| !d.as_os_str().is_empty()) else {
            continue;
        };
        let name = rel.file_stem().unwrap().to_string_lossy().to_string();
        if name == "mod" {
            continue;
        }
        let folder = dir.to_string_lossy().replace('/', "::");
        let siblings: BTreeSet<String> = std::fs::read_dir(src.join(dir))
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let stem = p.file_stem()?.to_string_lossy().to_string();
                (stem != "mod" && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")))
                    .then_some(stem)
            })
            .collect();
        let text = code_of(f);
        let deps = out
            .entry(folder.clone())
            .or_default()
            .entry(name.clone())
            .or_default();
        for prefix in ["super::".to_string(), format!("crate::{folder}::")] {
            for (i, _) in text.match_indices(&prefix) {
                // `super::super::` climbs out of the folder: not a sibling.
                let used: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if siblings.contains(&used) && used != name {
                    deps.insert(used);
                }
            }
        }
    }
    out
}

#[test]
fn no_file_imports_a_sibling_that_imports_it_back() {
    let folders = folder_graphs();
    assert!(
        folders.contains_key("server") && folders.contains_key("gate"),
        "the folders were found: {:?}",
        folders.keys()
    );
    assert!(
        folders["server"]["connection"].contains("conn"),
        "sibling imports are read: {:?}",
        folders["server"]
    );
    for g in folders.values() {
        no_circle(g);
    }
}

/// Depth-first search for a back edge; the path in hand names the circle.
fn no_circle(g: &BTreeMap<String, BTreeSet<String>>) {
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| *p == n) {
            panic!("import circle: {} → {n}", path[i..].join(" → "));
        }
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if g.contains_key(d) {
                visit(d, g, path, done);
            }
        }
        path.pop();
        done.insert(n);
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(n, g, &mut Vec::new(), &mut done);
    }
}
