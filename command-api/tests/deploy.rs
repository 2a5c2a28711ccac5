//! The deployment files against the code, without a Docker engine: the `Dockerfile` brings in
//! every workspace member, and every `compose.yaml` service of the image runs a role with flags
//! and environment variables the `payledger` command line accepts.
//!
//! The compose test sets process environment variables (clap reads `env = …` from the process);
//! it is the only test in this binary that reads or writes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use payledger_command_api::cli::{Cli, Command};
use payledger_command_api::roles::Role;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn workspace_members() -> Vec<String> {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dockerfile_copies_every_workspace_member() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // The builder stage: everything before the second FROM.
    let builder: String = dockerfile.split("\nFROM ").take(2).collect::<Vec<_>>().join("\nFROM ");
    let copies: Vec<Vec<&str>> = builder
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .map(|l| l.split_whitespace().filter(|w| !w.starts_with("--")).collect())
        .collect();
    let whole_tree = copies.iter().any(|c| c.first() == Some(&"."));
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut needed = workspace_members();
    needed.extend(["Cargo.toml", "Cargo.lock", "schemas"].map(String::from));
    for path in needed {
        if whole_tree {
            assert!(
                !ignored.iter().any(|i| i == &path || path.starts_with(&format!("{i}/"))),
                ".dockerignore leaves out {path}, which the build needs"
            );
        } else {
            assert!(
                copies.iter().any(|c| c.first() == Some(&path.as_str())),
                "the Dockerfile's builder stage copies no {path}: cargo build would fail"
            );
        }
    }
}

/// `mapping[key]`, following YAML merge keys (`<<: *anchor`) the way Compose does.
fn get<'a>(mapping: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    let hash = mapping.as_hash()?;
    hash.get(&Yaml::String(key.into()))
        .or_else(|| get(hash.get(&Yaml::String("<<".into()))?, key))
}

/// A mapping's keys and values, merge keys flattened (the mapping's own entries win).
fn entries(mapping: &Yaml) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let Some(hash) = mapping.as_hash() else { return out };
    for (k, v) in hash {
        let key = k.as_str().unwrap().to_string();
        if key == "<<" {
            for (k, v) in entries(v) {
                if !hash.contains_key(&Yaml::String(k.clone())) {
                    out.push((k, v));
                }
            }
        } else {
            let value = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("environment {key}: {other:?} is not a scalar"),
            };
            out.push((key, value));
        }
    }
    out
}

#[test]
fn every_compose_service_of_the_image_runs_roles_and_flags_the_cli_accepts() {
    let text = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let services = get(doc, "services").unwrap().as_hash().unwrap();

    // Every environment variable the command line reads, and the few read elsewhere.
    let cli = <Cli as clap::CommandFactory>::command();
    let mut known: BTreeSet<String> = ["RUST_LOG".to_string()].into();
    let mut stack = vec![&cli];
    while let Some(c) = stack.pop() {
        known.extend(
            c.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        stack.extend(c.get_subcommands());
    }

    let mut roles_run: BTreeSet<&str> = BTreeSet::new();
    let mut ours = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if get(service, "build").is_none() {
            continue; // postgres, nats: someone else's image
        }
        ours += 1;
        let env = get(service, "environment").map(entries).unwrap_or_default();
        for (key, _) in &env {
            assert!(
                known.contains(key),
                "{name}: environment {key} is read by nothing in payledger"
            );
        }
        let command: Vec<&str> = get(service, "command")
            .and_then(Yaml::as_vec)
            .map(|c| c.iter().map(|w| w.as_str().unwrap()).collect())
            .unwrap_or_default();
        for key in &known {
            std::env::remove_var(key);
        }
        for (key, value) in &env {
            std::env::set_var(key, value);
        }
        let parsed = Cli::try_parse_from(std::iter::once("payledger").chain(command.iter().copied()))
            .unwrap_or_else(|e| panic!("{name}: payledger {command:?} is refused:\n{e}"));
        let Command::Serve(args) = parsed.command else {
            panic!("{name}: runs {command:?}, not serve");
        };
        let roles: Vec<Role> = Role::ALL.into_iter().filter(|r| args.roles.has(*r)).collect();
        assert!(!roles.is_empty(), "{name}: runs no role");
        roles_run.extend(roles.iter().map(|r| r.name()));
    }
    for key in &known {
        std::env::remove_var(key);
    }
    assert!(ours >= 1, "compose.yaml runs no payledger service");
    let all: BTreeSet<&str> = Role::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(roles_run, all, "compose.yaml runs every role somewhere");
}
