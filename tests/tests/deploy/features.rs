//! What the function binaries link: never the embedded engine nor `StoreSupport` (the
//! `embedded` and `test-support` features are for tests and the sandbox only).

use std::path::Path;

const TEST_ONLY: [&str; 2] = ["embedded", "test-support"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

#[test]
fn function_binaries_enable_no_test_only_feature_of_shared() {
    let functions = std::fs::read_dir(root().join("functions")).unwrap();
    let mut checked = 0;
    for dir in functions {
        let manifest = dir.unwrap().path().join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let shared: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("shared"))
            .collect();
        assert_eq!(
            shared.len(),
            1,
            "{}: one shared dependency",
            manifest.display()
        );
        for feature in TEST_ONLY {
            assert!(
                !shared[0].contains(feature),
                "{} enables shared's {feature}",
                manifest.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "found {checked} functions");

    let shared = std::fs::read_to_string(root().join("shared/Cargo.toml")).unwrap();
    for feature in TEST_ONLY {
        assert!(
            shared.contains(&format!("\n{feature} = ")),
            "shared declares {feature}"
        );
    }
    let default = shared
        .lines()
        .find(|l| l.trim_start().starts_with("default"));
    assert!(
        default.is_none_or(|d| TEST_ONLY.iter().all(|f| !d.contains(f))),
        "shared's default features: {default:?}"
    );
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = workspace
        .lines()
        .find(|l| l.trim_start().starts_with("shared"))
        .expect("workspace declares shared");
    assert!(TEST_ONLY.iter().all(|f| !line.contains(f)), "{line}");
}
