//! The house rule of `src/`: its top-level modules (the rooms: `app`, `engine`, `handlers`, …)
//! import one another without a circle, so each can be read knowing only the rooms below it.
//! `make lint` runs this file; it reads the sources, it needs no cluster.
//!
//! An import is any `crate::<room>` path in code (comments do not count; test code does), in a
//! file of another room. A circle is reported with one file and line for each of its arrows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `room → (imported room → where the first such path is)`.
type Imports = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn the_top_level_modules_of_src_import_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let imports = imports_between_rooms(&src);
    assert!(
        imports.len() > 5,
        "expected the rooms of {}, found {imports:?}",
        src.display()
    );
    if let Some(circle) = find_circle(&imports) {
        panic!(
            "the rooms of src/ import in a circle:\n{}",
            describe(&circle, &imports)
        );
    }
}

#[test]
fn a_circle_between_rooms_is_found_and_named() {
    let dir = std::env::temp_dir().join(format!("layout-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (file, text) in [
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        (
            "a.rs",
            "use crate::b::Thing;\n// crate::c in a comment is no import\n",
        ),
        ("b/mod.rs", "mod inner;\n"),
        ("b/inner.rs", "fn f() { crate::c::g() }\n"),
        ("c.rs", "pub fn g() { let _ = crate::a::X; }\n"),
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let imports = imports_between_rooms(&dir);
    assert_eq!(imports["a"].keys().collect::<Vec<_>>(), ["b"]);
    let circle = find_circle(&imports).expect("a → b → c → a");
    assert_eq!(circle, ["a", "b", "c", "a"]);
    let text = describe(&circle, &imports);
    assert!(
        text.contains("b -> c") && text.contains("inner.rs:1"),
        "{text}"
    );

    // Without the arrow back, no circle.
    std::fs::write(dir.join("c.rs"), "pub fn g() {}\n").unwrap();
    assert_eq!(find_circle(&imports_between_rooms(&dir)), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The imports between the rooms under `src` (`lib.rs` and `main.rs` are the house, no room).
fn imports_between_rooms(src: &Path) -> Imports {
    let mut imports = Imports::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let room = relative
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if room == "lib" || room == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let arrows = imports.entry(room.clone()).or_default();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for target in paths_into_crate(code) {
                if target != room {
                    arrows
                        .entry(target)
                        .or_insert_with(|| format!("{}:{}", file.display(), number + 1));
                }
            }
        }
    }
    imports
}

/// The first segment of every `crate::<segment>` in `code`.
fn paths_into_crate(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // Not the tail of another identifier (`agentic_crate::`).
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .filter_map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let segment: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!segment.is_empty()).then_some(segment)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A circle of rooms, first room repeated at the end, or `None` when the imports form a DAG.
fn find_circle(imports: &Imports) -> Option<Vec<String>> {
    fn visit(
        room: &str,
        imports: &Imports,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|r| r == room) {
            let mut circle = path[at..].to_vec();
            circle.push(room.to_string());
            return Some(circle);
        }
        if done.contains(room) {
            return None;
        }
        path.push(room.to_string());
        for next in imports
            .get(room)
            .into_iter()
            .flat_map(|arrows| arrows.keys())
        {
            if let Some(circle) = visit(next, imports, done, path) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(room.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|room| visit(room, imports, &mut done, &mut Vec::new()))
}

fn describe(circle: &[String], imports: &Imports) -> String {
    circle
        .windows(2)
        .map(|pair| {
            format!(
                "  {} -> {}  ({})\n",
                pair[0], pair[1], imports[&pair[0]][&pair[1]]
            )
        })
        .collect()
}
