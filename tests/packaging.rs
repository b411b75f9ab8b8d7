//! What ships beside the binary stays true to it: the license file is the
//! one Cargo.toml names, and the systemd unit starts the binary with flags
//! it has.

use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_license_file_is_the_license_cargo_toml_names() {
    let manifest = read("Cargo.toml");
    let license = manifest
        .lines()
        .find_map(|line| line.strip_prefix("license = "))
        .expect("Cargo.toml names a license")
        .trim_matches('"');
    assert_eq!(license, "MIT");
    let text = read("LICENSE");
    assert!(
        text.starts_with("MIT License\n"),
        "LICENSE is not the MIT text"
    );
    assert!(text.contains("Permission is hereby granted, free of charge"));
}

#[test]
fn the_systemd_unit_runs_tokend_serve_with_flags_it_has() {
    let unit = read("deploy/tokend.service");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/tokend"));
    assert_eq!(words.next(), Some("serve"));
    let help = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["serve", "--help"])
        .output()
        .expect("tokend runs");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = words.filter(|w| w.starts_with("--")).collect();
    assert!(
        !flags.is_empty(),
        "the unit sets its listen address and data dir"
    );
    for flag in flags {
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
            "`tokend serve --help` has no {name}"
        );
    }
    for setting in [
        "User=tokend",
        "UMask=0077",
        "StateDirectoryMode=0700",
        "EnvironmentFile=",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
}
