//! The workspace's shape, checked: no module imports another that imports
//! it back, in any crate (issue "A house a newcomer can live in": a
//! state struct whose services take it back, with seven files importing each
//! other in a circle, is what this guards against).
//!
//! Each source file is a module; an edge `a → b` is any `use` of, or path
//! through, module `b` in file `a` (`crate::b::…`, `super::…`, `self::…` or a
//! child module's name). Re-exports (`pub use`, `pub(crate) use`) are a
//! module's facade, not a dependency of its code, and are not edges. Any
//! strongly connected set of two or more modules is a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose sources are checked (folder → source root).
const CRATES: [&str; 8] = [
    "storage", "security", "cluster", "broker", "client", "cli", "checker", "proto",
];

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file relative to its crate's `src/`.
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// Removes comments and string literals, so paths in docs do not count.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

fn ident_path(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for seg in s.split("::") {
        let id: String = seg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if id.is_empty() || id.len() != seg.len() {
            if !id.is_empty() {
                parts.push(id);
            }
            break;
        }
        parts.push(id);
    }
    parts
}

/// Paths used by `code` (each as written, e.g. `crate::admin::Admin`),
/// skipping re-export lines.
fn used_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut statement = String::new();
    for line in code.lines() {
        let t = line.trim_start();
        if statement.is_empty() && (t.starts_with("pub use") || t.starts_with("pub(crate) use")) {
            if !t.contains(';') {
                statement.push_str("#reexport ");
            }
            continue;
        }
        if statement.starts_with("#reexport") {
            if t.contains(';') {
                statement.clear();
            }
            continue;
        }
        if statement.is_empty() && !t.starts_with("use ") {
            // A path in code: `crate::x::y`, `super::x`.
            for start in ["crate::", "super::", "self::"] {
                let mut rest = line;
                while let Some(i) = rest.find(start) {
                    let before = rest[..i].chars().last();
                    if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                        out.push(ident_path(&rest[i..]));
                    }
                    rest = &rest[i + start.len()..];
                }
            }
            continue;
        }
        statement.push_str(t);
        statement.push(' ');
        if t.contains(';') {
            expand_use(
                statement.trim_start_matches("use ").trim_end_matches([';', ' ']),
                &mut Vec::new(),
                &mut out,
            );
            statement.clear();
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into the paths it names.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::").trim();
        let depth = prefix.len();
        prefix.extend(head.split("::").filter(|s| !s.is_empty()).map(|s| s.trim().to_string()));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut level = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand_use(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[start..], prefix, out);
        prefix.truncate(depth);
    } else if !tree.is_empty() {
        let mut p = prefix.clone();
        p.extend(
            tree.split(" as ")
                .next()
                .unwrap_or(tree)
                .split("::")
                .map(|s| s.trim().to_string()),
        );
        out.push(p);
    }
}

/// The module a path used in `from` goes through, if it is one of `modules`.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>, children: &BTreeSet<String>) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut b = from.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                b.pop();
                rest = &rest[1..];
            }
            (b, rest)
        }
        Some(first) if children.contains(first) => (from.clone(), path),
        _ => return None,
    };
    let mut found = Some(base.clone()).filter(|b| modules.contains(b));
    for seg in rest {
        base.push(seg.clone());
        if modules.contains(&base) {
            found = Some(base.clone());
        } else {
            break;
        }
    }
    found
}

/// Strongly connected components of two or more modules (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == *v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn import_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let sources: Vec<(Module, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(src).expect("under src");
            (module_of(rel), std::fs::read_to_string(f).expect("read source"))
        })
        .collect();
    let modules: BTreeSet<Module> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, text) in &sources {
        // Unit tests sit at the end of a file (`#[cfg(test)] mod tests`);
        // their `super::` is the file's own module.
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => text.as_str(),
        };
        let code = code_only(text);
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let t = l.trim();
                let t = t.strip_prefix("pub ").or(t.strip_prefix("pub(crate) ")).unwrap_or(t);
                t.strip_prefix("mod ")
                    .map(|r| r.trim_end_matches(';').trim().to_string())
            })
            .collect();
        let targets = edges.entry(m.clone()).or_default();
        for path in used_paths(&code) {
            if let Some(t) = resolve(m, &path, &modules, &children)
                && t != *m
            {
                targets.insert(t);
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut found = Vec::new();
    for krate in CRATES {
        let src = workspace().join(krate).join("src");
        let edges = import_graph(&src);
        assert!(
            edges.len() > 1 || krate == "proto",
            "{krate}: no modules found under {src:?}"
        );
        for c in circles(&edges) {
            let names: Vec<String> = c.iter().map(|m| format!("{krate}::{}", m.join("::"))).collect();
            found.push(names.join(" ↔ "));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_a_circle_and_ignores_reexports() {
    let edges: BTreeMap<Module, BTreeSet<Module>> = [
        (vec!["a".to_string()], [vec!["b".to_string()]].into()),
        (vec!["b".to_string()], [vec!["a".to_string()]].into()),
        (vec!["c".to_string()], [vec!["a".to_string()]].into()),
    ]
    .into();
    assert_eq!(circles(&edges).len(), 1);
    let code = code_only("pub use x::Y;\nuse crate::{a::B, c::{d, e::F}};\nfn f() { super::g::h(); }\n");
    let paths = used_paths(&code);
    assert_eq!(
        paths,
        vec![
            vec!["crate", "a", "B"],
            vec!["crate", "c", "d"],
            vec!["crate", "c", "e", "F"],
            vec!["super", "g", "h"]
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
}
