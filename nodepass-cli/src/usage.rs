//! Argument errors without the arguments: clap quotes an unexpected argument in its message,
//! and that argument may be a URL with its key (`nodepass --check '--server://KEY@...'`, whose
//! leading `-` makes it look like an option). Every argument that is not a plain option name is
//! replaced before the message is shown.

use std::ffi::OsString;

/// What replaces a hidden argument in an error message.
pub const HIDDEN: &str = "<argument hidden>";

/// True for text that can be shown: something shaped like an option name (`--url-file`, `-h`,
/// `--chek`) or one of the `known` words (subcommands, shell names). Anything else (a URL, a
/// key, a path) might be secret.
fn is_shown(arg: &str, known: &[String]) -> bool {
    let word = arg.trim_start_matches('-');
    if word.len() == arg.len() {
        return known.iter().any(|k| k == arg);
    }
    arg.len() - word.len() <= 2
        && !word.is_empty()
        && word.len() <= 32
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && word.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

/// The words of `cmd` that may be shown: subcommand names and possible values, recursively.
pub fn known_words(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        for v in arg.get_possible_values() {
            out.extend(v.get_name_and_aliases().map(str::to_owned));
        }
    }
    for sub in cmd.get_subcommands() {
        out.push(sub.get_name().to_owned());
        out.extend(known_words(sub));
    }
    out
}

/// `message` with every argument of `args` (without the program name) that is not
/// [shown](is_shown) replaced by [`HIDDEN`]; for `--name=value`, the value.
pub fn redact(message: &str, args: &[OsString], known: &[String]) -> String {
    let mut secrets: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.to_string_lossy();
        if is_shown(&arg, known) {
            continue;
        }
        if let Some((name, value)) = arg.split_once('=')
            && name.starts_with('-')
            && is_shown(name, known)
        {
            if !value.is_empty() {
                secrets.push(value.to_owned());
            }
            continue;
        }
        secrets.push(arg.into_owned());
    }
    // Longest first, so that a secret inside another is not left half replaced.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_owned();
    for s in secrets {
        out = out.replace(&s, HIDDEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn urls_and_values_are_hidden_option_names_are_not() {
        let args = os(&[
            "--check",
            "--server://K3y@h:1/a:2",
            "--url-file=/etc/np",
            "bash",
        ]);
        let msg = "unexpected argument '--server://K3y@h:1/a:2' for --check; \
                   --url-file=/etc/np; bash";
        let out = redact(msg, &args, &["bash".to_owned()]);
        assert!(!out.contains("K3y"), "{out}");
        assert!(!out.contains("/etc/np"), "{out}");
        assert!(out.contains("--check") && out.contains("--url-file") && out.contains("bash"));
        assert!(out.contains(HIDDEN));
    }

    #[test]
    fn shown_is_strict() {
        let known = ["keygen".to_owned(), "bash".to_owned()];
        for ok in ["--check", "-h", "keygen", "bash", "--url-file", "--chek"] {
            assert!(is_shown(ok, &known), "{ok}");
        }
        for hidden in [
            "---x",
            "--a@b",
            "s3cr3t:pw",
            "--",
            "-",
            "x://y",
            "--9",
            "s3cretword",
        ] {
            assert!(!is_shown(hidden, &known), "{hidden}");
        }
    }
}
