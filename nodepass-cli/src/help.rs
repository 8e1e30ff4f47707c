//! The reference text of `--help` (and so of the man page): URL grammar, parameters, modes,
//! environment, exit status and examples, for one role or for all.
//!
//! [`PARAMS`] is the one description of the URL parameters. `--help` renders it as a plain
//! table; [`markdown_table`] renders the README's table, and tests check that the README holds
//! exactly that text and that every parameter the URL parser accepts
//! ([`nodepass_core::config::PARAMS`]) is described here for the same roles.

use nodepass_core::config::Role;

const ALL: &[Role] = &[Role::Server, Role::Client, Role::Master];
const TUNNEL: &[Role] = &[Role::Server, Role::Client];
const SERVER: &[Role] = &[Role::Server];
const CLIENT: &[Role] = &[Role::Client];
const MASTER: &[Role] = &[Role::Master];
const SERVER_MASTER: &[Role] = &[Role::Server, Role::Master];

/// One row of the parameter table (markdown: text in backticks is code).
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    /// The parameter names this row describes (`crt` and `key` share one).
    pub names: &'static [&'static str],
    /// The roles that accept them.
    pub roles: &'static [Role],
    /// The values and what they mean.
    pub values: &'static str,
    /// The default.
    pub default: &'static str,
}

const fn row(
    names: &'static [&'static str],
    roles: &'static [Role],
    values: &'static str,
    default: &'static str,
) -> ParamDoc {
    ParamDoc {
        names,
        roles,
        values,
        default,
    }
}

/// Every URL parameter, in canonical order.
pub const PARAMS: &[ParamDoc] = &[
    row(
        &["log"],
        ALL,
        "`none`, `debug`, `info`, `warn`, `error`, `event`",
        "`info`",
    ),
    row(
        &["tls"],
        SERVER_MASTER,
        "`0` plain, `1` self-signed, `2` certificate files",
        "`0`",
    ),
    row(
        &["crt", "key"],
        SERVER_MASTER,
        "PEM file paths; required with `tls=2`, refused otherwise",
        "-",
    ),
    row(
        &["sni"],
        CLIENT,
        "host name to verify the server certificate against (set it when the certificate does not name the tunnel host)",
        "the tunnel host",
    ),
    row(
        &["ca"],
        CLIENT,
        "PEM file of a CA to trust for a `tls=2` server (needed when its certificate comes from a private CA)",
        "none",
    ),
    row(
        &["dns"],
        TUNNEL,
        "DNS cache TTL, a duration (`0` = no cache)",
        "`5m`",
    ),
    row(&["min"], CLIENT, "minimum pool size, `1..=65536`", "`64`"),
    row(&["max"], SERVER, "maximum pool size, `1..=65536`", "`1024`"),
    row(
        &["mode"],
        SERVER,
        "`0` auto, `1` reverse, `2` forward",
        "`0`",
    ),
    row(
        &["mode"],
        CLIENT,
        "`0` auto, `1` single-end, `2` dual-end",
        "`0`",
    ),
    row(
        &["type"],
        SERVER,
        "pool transport: `0` TCP, `1` QUIC over UDP on the tunnel port number (needs `tls` 1 or 2; README section: QUIC transport), `2` WebSocket (README section: WebSocket transport), `3` HTTP/2 (needs `tls` 1 or 2; README section: HTTP/2 transport)",
        "`0`",
    ),
    row(
        &["type"],
        CLIENT,
        "`0` learn the transport from the server (HTTP/2 included), `1` QUIC from the first connection (certificate verified as for `tls=2` with `ca` or `sni`, else as for `tls=1`), `2` WebSocket from the first connection (for a server behind an HTTP proxy or CDN)",
        "`0`",
    ),
    row(
        &["wspath"],
        TUNNEL,
        "WebSocket request path (`/...`, visible ASCII without `?` or `#`); the server answers 404 to any other",
        "`/`",
    ),
    row(
        &["wshost"],
        CLIENT,
        "`Host` header of the WebSocket request (host name or address, optionally `:port`)",
        "the tunnel address",
    ),
    row(
        &["wsping"],
        TUNNEL,
        "WebSocket ping interval, a duration `1s..=10m`; keep it below the proxy's read timeout",
        "`20s`",
    ),
    row(
        &["wsbind"],
        TUNNEL,
        "`1` bind the handshake to the TLS session under the WebSocket, `0` do not (only with `type=2`, on each end whose TLS a trusted proxy terminates; on a client it also means TLS to the proxy from the first connection, its certificate verified; on a server it needs `tls` 1 or 2; README section: WebSocket transport)",
        "`1`",
    ),
    row(
        &["dial"],
        TUNNEL,
        "source IP for connections to targets, or `auto`",
        "`auto`",
    ),
    row(
        &["read"],
        TUNNEL,
        "idle read timeout, a duration (`0` = none)",
        "`0`",
    ),
    row(
        &["rate"],
        TUNNEL,
        "bandwidth limit in Mbit/s, a whole number (`0` = none)",
        "`0`",
    ),
    row(
        &["slot"],
        TUNNEL,
        "maximum concurrent TCP+UDP sessions (`0` = unlimited)",
        "`65536`",
    ),
    row(
        &["proxy"],
        TUNNEL,
        "PROXY protocol header to the target: `0` off, `1` v1, `2` v2",
        "`0`",
    ),
    row(
        &["block"],
        TUNNEL,
        "refuse protocols: any of the digits `1` SOCKS, `2` HTTP, `3` TLS (e.g. `13`); `0` none",
        "`0`",
    ),
    row(
        &["notcp", "noudp"],
        TUNNEL,
        "`1` disables TCP / UDP (not both)",
        "`0`",
    ),
    row(
        &["lbs"],
        TUNNEL,
        "how sessions choose among several targets: `0` round-robin, `1` optimal latency, `2` primary-backup (README section: Several targets)",
        "`0`",
    ),
    row(
        &["fallback"],
        TUNNEL,
        "with `lbs=2` only: how long a backup stays in use before the next session tries the primary again, a duration > 0",
        "`5m`",
    ),
    row(
        &["probe"],
        TUNNEL,
        "interval of the TCP-connect health probes to every target, a duration of at least `100ms`; `0` = none (not allowed with `lbs=1`)",
        "`10s` with `lbs=1`, else `0`",
    ),
    row(
        &["state"],
        MASTER,
        "path of the state store file (SQLite)",
        "`$XDG_STATE_HOME/nodepass/nodepass.db`, else `~/.local/state/nodepass/nodepass.db`",
    ),
    row(
        &["api"],
        MASTER,
        "REST dialect: `nodepass` (the Go NodePass v1.14 master's contract) or `envelope` (`{success, data}` envelopes of the API reference)",
        "`nodepass`",
    ),
    row(
        &["store"],
        MASTER,
        "fleet mode: keep the state in PostgreSQL, `postgres://USER@HOST:PORT/DB`, shared by every master of the fleet (no password here: see `store_password_file`); excludes `state`",
        "none (SQLite)",
    ),
    row(
        &["node"],
        MASTER,
        "with `store`: this master's node name (1 to 64 of `A-Z a-z 0-9 _ - .`)",
        "required with `store`",
    ),
    row(
        &["store_password_file"],
        MASTER,
        "with `store`: a file holding the database password; otherwise `NODEPASS_STORE_PASSWORD`, then `PGPASSWORD`",
        "none",
    ),
];

fn roles_text(roles: &[Role]) -> String {
    if roles.len() == ALL.len() {
        return "all".into();
    }
    roles
        .iter()
        .map(|r| r.scheme())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The README's parameter table (markdown), generated from [`PARAMS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| param | roles | values | default |\n|---|---|---|---|\n");
    for p in PARAMS {
        let names: Vec<String> = p.names.iter().map(|n| format!("`{n}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            names.join(", "),
            roles_text(p.roles),
            p.values,
            p.default
        ));
    }
    out
}

/// The parameter table as plain text for a terminal: the rows `role` accepts (all rows, with
/// their roles, when `role` is `None`).
pub fn text_table(role: Option<Role>) -> String {
    let plain = |s: &str| s.replace('`', "");
    let mut out = String::new();
    for p in PARAMS
        .iter()
        .filter(|p| role.is_none_or(|r| p.roles.contains(&r)))
    {
        let name = p.names.join(", ");
        let roles = match role {
            None => format!("   ({})", roles_text(p.roles)),
            Some(_) => String::new(),
        };
        // A name wider than its column gets a line of its own, so the columns stay aligned.
        let lead = if name.len() > 12 {
            format!("  {name}\n  {:<12}", "")
        } else {
            format!("  {name:<12}")
        };
        let default = format!("default: {}{roles}", plain(p.default));
        out.push_str(&format!(
            "{lead} {}\n  {:<12} {}\n",
            wrap(&plain(p.values), 15),
            "",
            wrap(&default, 15)
        ));
    }
    out
}

/// Width of the hand-made parts of `--help` (clap wraps its own to the terminal, or to this
/// width when it cannot tell).
pub const HELP_WIDTH: usize = 100;

/// `text` wrapped at word boundaries to lines that fit [`HELP_WIDTH`] when they start at column
/// `indent`; continuation lines are indented to that column. A word longer than a line stays
/// whole.
fn wrap(text: &str, indent: usize) -> String {
    let room = HELP_WIDTH.saturating_sub(indent).max(20);
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if line > 0 && line + 1 + word.len() > room {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// One example per role: what it does and the URL (`$KEY` stands for a key from `keygen`).
pub const EXAMPLES: &[(Role, &str, &str)] = &[
    (
        Role::Server,
        "a server: clients connect to port 10101, users to 127.0.0.1:8081 (reverse flow)",
        "server://$KEY@:10101/127.0.0.1:8081?mode=1",
    ),
    (
        Role::Client,
        "its client: delivers the users to the service on 127.0.0.1:8080",
        "client://$KEY@127.0.0.1:10101/127.0.0.1:8080?mode=2",
    ),
    (
        Role::Client,
        "a client alone (single-end): local port 10102 forwarded to 127.0.0.1:8080, no server",
        "client://127.0.0.1:10102/127.0.0.1:8080?mode=1",
    ),
    (Role::Master, "a master", MASTER_EXAMPLE),
];

const MASTER_EXAMPLE: &str = "master://127.0.0.1:9090/api";

fn grammar(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Server) => {
            "  server://[KEY@]TUNNEL_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?PARAMS]"
        }
        Some(Role::Client) => {
            "  client://[KEY@]SERVER_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?PARAMS]"
        }
        Some(Role::Master) => "  master://LISTEN_HOST:PORT[/PREFIX][?PARAMS]",
        None => {
            "  server://[KEY@]TUNNEL_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?PARAMS]\n  \
             client://[KEY@]SERVER_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?PARAMS]\n  \
             master://LISTEN_HOST:PORT[/PREFIX][?PARAMS]"
        }
    }
}

const HOSTS: &str = "  HOST    empty (all addresses), IPv4, [IPv6] or a DNS name; PORT 0..=65535, 0 = any free port";

const TUNNEL_PARTS: &str = "  TARGET  one or more HOST:PORT, comma separated
  KEY     the tunnel key, percent-encoded (p%40ss is p@ss); the same on server and client.
          Make one with `keygen`. Without KEY@ it is derived from the port, which anyone can
          compute: a warning is logged unless the tunnel address is loopback.";

const QUERY: &str =
    "  PARAMS  name=value pairs joined by &; unknown, misplaced or repeated names are errors.
          Durations: 500ms, 30s, 5m, 1h30m; 0 = off.";

const PREFIX: &str = "  PREFIX  the API path, /api by default";

const SERVER_MODES: &str =
    "  server mode=1 reverse: the server listens on TARGET for users and hands each connection to
                the client, which dials its own TARGET.
  server mode=2 forward: the client listens on its TARGET for users, the server dials its TARGET.
  server mode=0 auto: reverse if the server can bind TARGET here, else forward.";
const CLIENT_MODES: &str = "  client mode=2 dual-end: connect to the server at SERVER_HOST:PORT (the server picks the flow).
  client mode=1 single-end: no server; listen on SERVER_HOST:PORT, forward to TARGET directly.
  client mode=0 auto: single-end if SERVER_HOST:PORT can be bound here, else dual-end. A client
                started before a server on the same host would take the server's port: it
                warns when that happens; set mode=2 (or mode=1) to decide yourself.";
fn modes(role: Option<Role>) -> String {
    match role {
        Some(Role::Server) => SERVER_MODES.into(),
        Some(Role::Client) => CLIENT_MODES.into(),
        Some(Role::Master) => String::new(),
        None => format!("{SERVER_MODES}\n{CLIENT_MODES}"),
    }
}

fn environment(role: Option<Role>) -> String {
    let mut out = String::from(
        "  NODEPASS_URL               the URL, when none is given as an argument or --url-file\n  \
         NODEPASS_LOG_FORMAT        text (default) or json: one JSON object per line on stderr\n",
    );
    if role != Some(Role::Master) {
        out.push_str(
            "  NODEPASS_UDP_MAX_DATAGRAM  largest UDP datagram carried, 1..=65507 (default 65507)\n  \
             NODEPASS_ZERO_COPY         0 turns off splice(2) for plain TCP (default on)\n  \
             NODEPASS_LOW_PRIO_REFILL   0 refills the pool at normal priority (default: nice 19)\n",
        );
    }
    if role.is_none_or(|r| r == Role::Master) {
        out.push_str(
            "  NODEPASS_API_KEY           master: the API key (else one is generated on first start\n  \
             \x20                          and printed once to stderr)\n  \
             NODEPASS_CORS_ORIGINS      master: allowed browser origins, comma separated, or none\n  \
             \x20                          (default any)\n",
        );
    }
    out
}

fn examples(program: &str, role: Option<Role>) -> String {
    let mut out = String::new();
    if role != Some(Role::Master) {
        out.push_str(&format!(
            "  KEY=$({program} keygen)   # once; server and client need the same key\n"
        ));
    }
    for (_, what, url) in EXAMPLES
        .iter()
        .filter(|(r, _, _)| role.is_none_or(|x| x == *r))
    {
        if *url == MASTER_EXAMPLE {
            out.push_str(&format!(
                "  # a master: the REST API on http://127.0.0.1:9090/api, with a key of your choice\n  \
                 export NODEPASS_API_KEY=$({program} keygen)\n"
            ));
        } else {
            out.push_str(&format!("  # {what}\n"));
        }
        out.push_str(&format!("  NODEPASS_URL=\"{url}\" {program}\n"));
    }
    if role.is_none_or(|r| r == Role::Master) {
        out.push_str(
            "  curl -H \"X-API-Key: $NODEPASS_API_KEY\" http://127.0.0.1:9090/api/v1/instances\n",
        );
    }
    out.push_str(&format!(
        "  {program} --check URL   # validate, print the URL with every default and the key masked"
    ));
    out
}

/// The text after the options in `--help` (and the man page) for `program` running `role`
/// (`None`: any role).
pub fn after_help(program: &str, role: Option<Role>) -> String {
    let mut out = format!("URL:\n{}\n{HOSTS}\n", grammar(role));
    if role != Some(Role::Master) {
        out.push_str(TUNNEL_PARTS);
        out.push('\n');
    }
    out.push_str(QUERY);
    out.push('\n');
    if role.is_none_or(|r| r == Role::Master) {
        out.push_str(PREFIX);
        out.push('\n');
    }
    if role.is_some() {
        out.push_str(&format!(
            "  The {}:// scheme may be left out.\n",
            role.map(Role::scheme).unwrap_or_default()
        ));
    }
    out.push_str(&format!("\nParameters:\n{}", text_table(role)));
    let modes = modes(role);
    if !modes.is_empty() {
        out.push_str(&format!("\nModes:\n{modes}\n"));
    }
    out.push_str(&format!("\nEnvironment:\n{}", environment(role)));
    out.push_str(
        "\nExit status:\n  \
         0    after --check, a subcommand, or a clean shutdown (first SIGINT/SIGTERM)\n  \
         1    runtime failure (e.g. cannot bind, TLS files unreadable)\n  \
         64   usage error or invalid URL (the message names the parameter; never the key)\n  \
         130  a second SIGINT/SIGTERM during shutdown\n",
    );
    out.push_str(&format!("\nExamples:\n{}\n", examples(program, role)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parser_parameter_is_described_for_the_same_roles() {
        for (name, roles) in nodepass_core::config::PARAMS {
            for role in ALL {
                let described = PARAMS
                    .iter()
                    .any(|p| p.names.contains(name) && p.roles.contains(role));
                assert_eq!(
                    described,
                    roles.contains(role),
                    "parameter {name} for {role}: help and parser disagree"
                );
            }
        }
        for p in PARAMS {
            for name in p.names {
                assert!(
                    nodepass_core::config::PARAMS.iter().any(|(n, _)| n == name),
                    "{name} is described but the parser does not know it"
                );
            }
        }
    }

    #[test]
    fn the_readme_table_is_the_generated_one() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("read README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's parameter table differs from nodepass-cli/src/help.rs; replace it with:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn wrap_keeps_words_whole_and_lines_within_the_width() {
        let text = "word ".repeat(60);
        let wrapped = wrap(&text, 15);
        assert!(wrapped.lines().count() > 1);
        for (i, l) in wrapped.lines().enumerate() {
            let width = if i == 0 { 15 + l.len() } else { l.len() };
            assert!(width <= HELP_WIDTH, "{l:?}");
            if i > 0 {
                assert!(l.starts_with(&" ".repeat(15)) && !l.starts_with(&" ".repeat(16)));
            }
        }
        assert_eq!(wrapped.split_whitespace().count(), 60);
        assert_eq!(wrap("short text", 15), "short text");
    }

    #[test]
    fn role_help_lists_only_the_role_parameters() {
        let server = text_table(Some(Role::Server));
        assert!(server.contains("  max "));
        assert!(!server.contains("  min "));
        assert!(!server.contains("  state "));
        let all = text_table(None);
        assert!(all.contains("  state ") && all.contains("(master)"));
    }
}
