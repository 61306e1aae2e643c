//! The manual cannot drift from the program: every setting the config model has is in
//! docs/configuration.md, and every key the reference lists is one the model accepts.

use gatewarden::config::{load, to_toml, Config, FlagOverrides};

/// Leaf keys of a TOML table as dotted paths (`auth.reject`); an array of tables counts as
/// its own key.
fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn reference() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap()
}

#[test]
fn every_setting_is_in_the_configuration_reference() {
    let model: toml::Value = toml::from_str(&to_toml(&Config::default())).unwrap();
    let mut keys = Vec::new();
    leaves("", &model, &mut keys);
    assert!(keys.len() > 40, "the model has its settings: {keys:?}");
    let doc = reference();
    let missing: Vec<_> = keys
        .iter()
        // A credential entry's fields are documented together in one row.
        .filter(|k| !k.starts_with("credentials.sources"))
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_key_in_the_reference_is_a_setting() {
    let doc = reference();
    // The first cell of each table row: `key`, or several keys separated by commas.
    let mut checked = 0;
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        // A `[[credentials]]` entry's fields are keys of each entry, not of the config.
        if cell.contains("[[") {
            continue;
        }
        for key in cell.split('`').skip(1).step_by(2) {
            // Setting the key to a wrong type must fail on its type, not as an unknown key.
            let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            let text = if table.is_empty() {
                format!("{leaf} = {{ }}\n")
            } else {
                format!("[{table}]\n{leaf} = {{ }}\n")
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            let err = match load(Some(&path), &FlagOverrides::default()) {
                Ok(_) => panic!("`{key} = {{ }}` was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                !err.contains("unknown key"),
                "docs/configuration.md lists `{key}`, which is not a setting: {err}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 40,
        "the reference's table was read ({checked} keys)"
    );
}

/// The flags `gatewarden --help` lists and the flags the configuration reference gives for
/// each setting are the same set: a flag added to one is added to the other.
#[test]
fn the_reference_and_help_name_the_same_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = |text: &str, open: &str| -> std::collections::BTreeSet<String> {
        text.match_indices(open)
            .map(|(i, _)| {
                text[i + open.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect::<String>()
            })
            .filter(|f| !f.is_empty())
            .collect()
    };
    let mut in_help = flags(&help, " --");
    // Not settings: clap's own, and the config file itself.
    for own in ["help", "version", "config"] {
        in_help.remove(own);
    }
    let in_doc = flags(&reference(), "`--");
    assert_eq!(
        in_help, in_doc,
        "--help (left) and docs/configuration.md (right)"
    );
}
