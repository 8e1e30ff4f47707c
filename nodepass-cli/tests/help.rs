//! `--help`, the subcommands (`keygen`, `completions`, `man`) and argument errors, run as a
//! user would run them.

use std::process::{Command, Output};

use nodepass_core::config::{PARAMS, Role};

const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass");
const SERVER: &str = env!("CARGO_BIN_EXE_nodepass-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_nodepass-client");
const MASTER: &str = env!("CARGO_BIN_EXE_nodepass-master");

/// Every executable with the role it runs (`None`: any).
const EXES: &[(&str, Option<Role>)] = &[
    (NODEPASS, None),
    (SERVER, Some(Role::Server)),
    (CLIENT, Some(Role::Client)),
    (MASTER, Some(Role::Master)),
];

fn run(exe: &str, args: &[&str], env_url: Option<&str>) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_remove("NODEPASS_URL")
        .env_remove("NODEPASS_LOG_FORMAT");
    if let Some(url) = env_url {
        cmd.env("NODEPASS_URL", url);
    }
    cmd.output().expect("run the executable")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keygen() -> String {
    let out = run(NODEPASS, &["keygen"], None);
    assert_eq!(out.status.code(), Some(0));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn help_names_every_parameter_variable_and_exit_status_of_the_role() {
    for &(exe, role) in EXES {
        for flag in ["--help", "-h"] {
            let out = run(exe, &[flag], None);
            assert_eq!(out.status.code(), Some(0));
            let help = text(&out.stdout);
            for (name, roles) in PARAMS {
                let applies = role.is_none_or(|r| roles.contains(&r));
                // A table row: two spaces, the names (`crt, key`) in a 12-wide column and a
                // space, or names wider than the column alone on their line.
                let listed = help.lines().any(|l| {
                    l.strip_prefix("  ").is_some_and(|rest| {
                        let col = match rest.as_bytes().get(12) {
                            Some(b' ') => &rest[..12],
                            _ => rest,
                        };
                        col.trim_end().split(", ").any(|n| n == *name)
                    })
                });
                assert_eq!(listed, applies, "{exe} {flag}: parameter {name}\n{help}");
            }
            let mut needed = vec![
                "NODEPASS_URL",
                "NODEPASS_LOG_FORMAT",
                "--url-file",
                "--check",
            ];
            needed.extend([
                "Exit status",
                " 64 ",
                " 130 ",
                "keygen",
                "completions",
                "man",
            ]);
            if role.is_none_or(|r| r == Role::Master) {
                needed.extend(["NODEPASS_API_KEY", "NODEPASS_CORS_ORIGINS", "PREFIX"]);
            }
            if role != Some(Role::Master) {
                needed.extend(["mode=0 auto", "TARGET", "KEY"]);
            } else {
                assert!(
                    !help.contains("TARGET") && !help.contains("mode="),
                    "{help}"
                );
            }
            for scheme in ["server://", "client://", "master://"] {
                if role.is_none_or(|r| scheme.starts_with(r.scheme())) {
                    needed.push(scheme);
                } else {
                    assert!(!help.contains(scheme), "{exe} shows {scheme}\n{help}");
                }
            }
            for word in needed {
                assert!(help.contains(word), "{exe} {flag} lacks {word:?}\n{help}");
            }
        }
    }
}

#[test]
fn every_help_example_is_accepted_by_its_executable() {
    let key = keygen();
    for &(exe, _) in EXES {
        let help = text(&run(exe, &["--help"], None).stdout);
        let urls: Vec<String> = help
            .lines()
            .filter_map(|l| l.trim().strip_prefix("NODEPASS_URL=\""))
            .map(|l| l.split('"').next().unwrap().replace("$KEY", &key))
            .collect();
        assert!(!urls.is_empty(), "{exe}: no example\n{help}");
        for url in urls {
            let out = run(exe, &["--check"], Some(&url));
            assert_eq!(
                out.status.code(),
                Some(0),
                "{exe} {url}: {}",
                text(&out.stderr)
            );
            // No derived-key warning or anything else: the examples are clean.
            assert_eq!(text(&out.stderr), "", "{exe} {url}");
            assert!(!text(&out.stdout).contains(&key));
        }
    }
}

#[test]
fn keygen_prints_a_strong_random_key() {
    let a = keygen();
    let b = keygen();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32, "{a}");
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    assert!(a.chars().all(alphabet), "{a}");
    // 32 characters of a 64-letter alphabet: at least a dozen distinct ones in practice.
    let mut distinct: Vec<char> = a.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 12, "{a}");
    let url = format!("server://{a}@127.0.0.1:10101/127.0.0.1:8080");
    let out = run(SERVER, &["--check", &url], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn argument_errors_never_echo_the_url_or_key() {
    const KEY: &str = "Zq8secretKEY77";
    let url = format!("server://{KEY}@127.0.0.1:10101/127.0.0.1:8080");
    let dashed = format!("--{url}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (NODEPASS, vec!["--check", &dashed]),
        (NODEPASS, vec![&dashed]),
        (NODEPASS, vec!["--bogus", &url]),
        (NODEPASS, vec![&url, "--url-file", "/x"]),
        (NODEPASS, vec!["keygen", &url]),
        (NODEPASS, vec!["completions", &url]),
        (NODEPASS, vec![&url, &url]),
        (NODEPASS, vec!["--check=yes", &url]),
        (SERVER, vec!["-x", &url[9..]]),
        (CLIENT, vec!["--check", KEY, "extra"]),
    ];
    for (exe, args) in cases {
        let out = run(exe, &args, None);
        assert_eq!(out.status.code(), Some(64), "{exe} {args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("error"), "{err}");
        assert!(
            !err.contains(KEY) && !text(&out.stdout).contains(KEY),
            "{err}"
        );
    }
}

#[test]
fn completions_and_man_page_come_from_the_same_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(NODEPASS, &["completions", shell], None);
        assert_eq!(out.status.code(), Some(0));
        let script = text(&out.stdout);
        assert!(
            script.contains("url-file") && script.contains("keygen"),
            "{shell}"
        );
    }
    let out = run(SERVER, &["completions", "bash"], None);
    assert!(text(&out.stdout).contains("nodepass-server"));
    let out = run(MASTER, &["man"], None);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH nodepass-master"),
        "{page}"
    );
    for word in ["NODEPASS_API_KEY", "state", "Exit status", "master://"] {
        assert!(page.contains(word), "man page lacks {word}");
    }
}

/// What a person reads in a terminal: no line of any executable's `--help` (and of the
/// subcommands') is wider than 100 columns when the width is unknown (a pipe, a pager).
#[test]
fn help_lines_fit_in_100_columns() {
    let mut pages: Vec<(&str, Vec<&str>)> =
        EXES.iter().map(|(exe, _)| (*exe, vec!["--help"])).collect();
    for sub in ["keygen", "completions", "man", "import"] {
        pages.push((NODEPASS, vec![sub, "--help"]));
    }
    for (exe, args) in pages {
        let out = Command::new(exe)
            .args(&args)
            .env_remove("COLUMNS")
            .output()
            .expect("run the executable");
        assert_eq!(out.status.code(), Some(0), "{exe} {args:?}");
        let page = text(&out.stdout);
        assert!(page.lines().count() > 5, "{exe} {args:?}: {page}");
        for line in page.lines() {
            assert!(
                line.chars().count() <= 100,
                "{exe} {args:?}: a line of {} columns:\n{line}",
                line.chars().count()
            );
        }
    }
}
