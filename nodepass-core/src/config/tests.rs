//! Table-driven tests of the URL language and the parse/print round-trip property.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SERVER_TAIL: &str = "log=info&tls=0&dns=5m&max=1024&mode=0&type=0&dial=auto&read=0&rate=0\
                           &slot=65536&proxy=0&block=0&notcp=0&noudp=0";
const CLIENT_TAIL: &str = "log=info&dns=5m&min=64&mode=0&dial=auto&read=0&rate=0&slot=65536\
                           &proxy=0&block=0&notcp=0&noudp=0";

/// Valid URLs and their canonical (masked) form. `{S}` / `{C}` stand for the default tails.
const VALID: &[(&str, &str)] = &[
    (
        "server://:10101/127.0.0.1:8080",
        "server://:10101/127.0.0.1:8080?{S}",
    ),
    ("server://k@:10101/:8080", "server://****@:10101/:8080?{S}"),
    (
        "SERVER://[::1]:0/[::1]:22,Example.com:80",
        "server://[::1]:0/[::1]:22,example.com:80?{S}&lbs=0&probe=0",
    ),
    ("server://:1/a:1?", "server://:1/a:1?{S}"),
    (
        "server://:1/a:1?tls=1&type=1",
        "server://:1/a:1?log=info&tls=1&dns=5m&max=1024&mode=0&type=1&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?tls=2&crt=/etc/np/c.pem&key=/etc/np/k.pem",
        "server://:1/a:1?log=info&tls=2&crt=/etc/np/c.pem&key=/etc/np/k.pem&dns=5m&max=1024&mode=0&type=0&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?max=1&mode=1",
        "server://:1/a:1?log=info&tls=0&dns=5m&max=1&mode=1&type=0&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?max=65536&mode=2&type=2",
        "server://:1/a:1?log=info&tls=0&dns=5m&max=65536&mode=2&type=2&wspath=/&wsping=20s&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?type=2&wspath=/np/ws_x.y-z~&wsping=90s",
        "server://:1/a:1?log=info&tls=0&dns=5m&max=1024&mode=0&type=2&wspath=/np/ws_x.y-z~&wsping=1m30s&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://:1/a:1?type=2&wshost=cdn.example.com:443&wspath=/t",
        "client://:1/a:1?log=info&dns=5m&min=64&mode=0&type=2&wspath=/t&wshost=cdn.example.com:443&wsping=20s&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?tls=1&type=2&wsbind=0",
        "server://:1/a:1?log=info&tls=1&dns=5m&max=1024&mode=0&type=2&wspath=/&wsping=20s&wsbind=0&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://:1/a:1?type=2&wsbind=0",
        "client://:1/a:1?log=info&dns=5m&min=64&mode=0&type=2&wspath=/&wsping=20s&wsbind=0&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://:1/a:1?type=2&wsbind=1",
        "client://:1/a:1?log=info&dns=5m&min=64&mode=0&type=2&wspath=/&wsping=20s&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://:1/a:1?type=1",
        "client://:1/a:1?log=info&dns=5m&min=64&mode=0&type=1&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://:1/a:1?wsping=5s",
        "client://:1/a:1?log=info&dns=5m&min=64&mode=0&wspath=/&wsping=5s&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?tls=1&type=3",
        "server://:1/a:1?log=info&tls=1&dns=5m&max=1024&mode=0&type=3&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?dns=90s&read=0.5s&rate=100&slot=0",
        "server://:1/a:1?log=info&tls=0&dns=1m30s&max=1024&mode=0&type=0&dial=auto&read=500ms&rate=100&slot=0&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "server://:1/a:1?proxy=2&block=31&notcp=1",
        "server://:1/a:1?log=info&tls=0&dns=5m&max=1024&mode=0&type=0&dial=auto&read=0&rate=0&slot=65536&proxy=2&block=13&notcp=1&noudp=0",
    ),
    (
        "server://:1/a:1?dial=10.0.0.1&noudp=1&log=none",
        "server://:1/a:1?log=none&tls=0&dns=5m&max=1024&mode=0&type=0&dial=10.0.0.1&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=1",
    ),
    (
        "server://:1/a:1?dial=[::1]&log=event",
        "server://:1/a:1?log=event&tls=0&dns=5m&max=1024&mode=0&type=0&dial=::1&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://127.0.0.1:10101/127.0.0.1:8080?mode=1",
        "client://127.0.0.1:10101/127.0.0.1:8080?log=info&dns=5m&min=64&mode=1&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://p%40ss@srv.example:10101/:22",
        "client://****@srv.example:10101/:22?{C}",
    ),
    (
        "client://h:1/a:1?min=1&mode=2&sni=Example.org&ca=/ca.pem",
        "client://h:1/a:1?log=info&sni=example.org&ca=/ca.pem&dns=5m&min=1&mode=2&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "client://h:1/a:1?sni=::1&log=debug&dns=0",
        "client://h:1/a:1?log=debug&sni=::1&dns=0&min=64&mode=0&dial=auto&read=0&rate=0&slot=65536&proxy=0&block=0&notcp=0&noudp=0",
    ),
    (
        "master://:9090",
        "master://:9090/api?log=info&tls=0&api=nodepass",
    ),
    (
        "master://:9090/",
        "master://:9090/api?log=info&tls=0&api=nodepass",
    ),
    (
        "master://127.0.0.1:9090/v1/np/?tls=1&log=warn",
        "master://127.0.0.1:9090/v1/np?log=warn&tls=1&api=nodepass",
    ),
    (
        "master://:0/api?state=/var/lib/np/state.db",
        "master://:0/api?log=info&tls=0&state=/var/lib/np/state.db&api=nodepass",
    ),
    (
        "master://:0/api?api=envelope",
        "master://:0/api?log=info&tls=0&api=envelope",
    ),
    (
        "master://:0?store=postgres://np@db.example:6432/fleet&node=edge-1",
        "master://:0/api?log=info&tls=0&api=nodepass&store=postgres://np%40db.example:6432/fleet&node=edge-1",
    ),
    (
        "master://:0?node=a&store=postgresql://np@[::1]/fleet&store_password_file=/run/pw",
        "master://:0/api?log=info&tls=0&api=nodepass&store=postgres://np%40%5B::1%5D:5432/fleet&node=a&store_password_file=/run/pw",
    ),
];

/// The expected error: its variant and the field (or parameter) it names.
#[derive(Debug)]
enum Want {
    Syntax,
    Invalid(&'static str),
    Unknown(&'static str),
    WrongRole(&'static str),
    Missing(&'static str),
    Duplicate(&'static str),
}

const INVALID: &[(&str, Want)] = &[
    ("", Want::Syntax),
    ("server://:1/a:1?type=2&wspath=np", Want::Invalid("wspath")),
    (
        "server://:1/a:1?type=2&wspath=/a?b",
        Want::Invalid("wspath"),
    ),
    (
        "server://:1/a:1?type=2&wspath=/a%20b",
        Want::Invalid("wspath"),
    ),
    (
        "server://:1/a:1?type=2&wsping=500ms",
        Want::Invalid("wsping"),
    ),
    ("server://:1/a:1?type=2&wsping=11m", Want::Invalid("wsping")),
    ("server://:1/a:1?type=2&wsping=20", Want::Invalid("wsping")),
    (
        "server://:1/a:1?type=2&wshost=a.b",
        Want::WrongRole("wshost"),
    ),
    ("client://:1/a:1?wshost=a%20b", Want::Invalid("wshost")),
    ("client://:1/a:1?wshost=", Want::Invalid("wshost")),
    ("server://:1/a:1?tls=1&wsbind=0", Want::Invalid("wsbind")),
    (
        "server://:1/a:1?tls=1&type=3&wsbind=0",
        Want::Invalid("wsbind"),
    ),
    ("server://:1/a:1?type=2&wsbind=0", Want::Invalid("wsbind")),
    (
        "server://:1/a:1?tls=1&type=2&wsbind=2",
        Want::Invalid("wsbind"),
    ),
    ("client://:1/a:1?wsbind=0", Want::Invalid("wsbind")),
    ("client://:1/a:1?type=2&wsbind=off", Want::Invalid("wsbind")),
    ("client://:1/a:1?type=3", Want::Invalid("type")),
    ("server:/:1/a:1", Want::Syntax),
    ("http://:1/a:1", Want::Invalid("scheme")),
    ("server://:1/a:1#frag", Want::Syntax),
    ("server://:1/a:1 ", Want::Syntax),
    ("server://host/a:1", Want::Missing("port")),
    ("server://host:/a:1", Want::Missing("port")),
    ("server://host:70000/a:1", Want::Invalid("port")),
    ("server://::1:80/a:1", Want::Invalid("host")),
    ("server://bad_host:1/a:1", Want::Invalid("host")),
    ("server://:1", Want::Missing("target")),
    ("server://:1/", Want::Missing("target")),
    ("server://:1/a", Want::Invalid("target")),
    ("server://:1/a:1,", Want::Invalid("target")),
    ("server://:1/a:x", Want::Invalid("target")),
    ("server://@:1/a:1", Want::Invalid("tunnel key")),
    ("server://key:pw@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%FF@:1/a:1", Want::Invalid("tunnel key")),
    ("server://ke/y@:1/a:1", Want::Syntax),
    ("server://k%zz@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%2@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%00@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%0A@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k%7F@:1/a:1", Want::Invalid("tunnel key")),
    ("server://k\u{1}@:1/a:1", Want::Syntax),
    ("server://a@@:1/a:1", Want::Invalid("tunnel key")),
    ("server://@@:1/a:1", Want::Invalid("tunnel key")),
    ("server://:1/a:0?mode=2", Want::Invalid("target")),
    ("server://:1/a:1,b:0", Want::Invalid("target")),
    ("client://:1/a:0?mode=1", Want::Invalid("target")),
    ("server://ke?y@:1/a:1", Want::Syntax),
    ("server://:1/a:1?bogus=1", Want::Unknown("bogus")),
    ("server://:1/a:1?TLS=1", Want::Unknown("TLS")),
    ("server://:1/a:1?min=8", Want::WrongRole("min")),
    ("server://:1/a:1?sni=x", Want::WrongRole("sni")),
    ("server://:1/a:1?state=/x", Want::WrongRole("state")),
    ("client://:1/a:1?max=8", Want::WrongRole("max")),
    ("client://:1/a:1?tls=1", Want::WrongRole("tls")),
    ("master://:1/api?type=0", Want::WrongRole("type")),
    ("master://:1?mode=1", Want::WrongRole("mode")),
    ("server://:1/a:1?log=info&log=debug", Want::Duplicate("log")),
    ("server://:1/a:1?log=verbose", Want::Invalid("log")),
    ("server://:1/a:1?tls=3", Want::Invalid("tls")),
    ("server://:1/a:1?tls=2", Want::Missing("crt")),
    ("server://:1/a:1?tls=2&crt=/c.pem", Want::Missing("key")),
    ("server://:1/a:1?tls=2&crt=&key=/k", Want::Invalid("crt")),
    ("server://:1/a:1?tls=1&crt=/c.pem", Want::Invalid("crt")),
    ("server://:1/a:1?key=/k.pem", Want::Invalid("key")),
    ("server://:1/a:1?type=1", Want::Invalid("type")),
    ("server://:1/a:1?type=3", Want::Invalid("type")),
    ("server://:1/a:1?type=4&tls=1", Want::Invalid("type")),
    ("server://:1/a:1?max=0", Want::Invalid("max")),
    ("server://:1/a:1?max=65537", Want::Invalid("max")),
    ("client://:1/a:1?min=-1", Want::Invalid("min")),
    ("client://:1/a:1?mode=3", Want::Invalid("mode")),
    ("server://:1/a:1?dns=5", Want::Invalid("dns")),
    ("server://:1/a:1?read=1d", Want::Invalid("read")),
    ("server://:1/a:1?rate=1.5", Want::Invalid("rate")),
    ("server://:1/a:1?slot=99999999999", Want::Invalid("slot")),
    ("server://:1/a:1?dial=eth0", Want::Invalid("dial")),
    ("server://:1/a:1?proxy=3", Want::Invalid("proxy")),
    ("server://:1/a:1?block=4", Want::Invalid("block")),
    ("server://:1/a:1?block=11", Want::Invalid("block")),
    ("server://:1/a:1?block=10", Want::Invalid("block")),
    ("server://:1/a:1?notcp=yes", Want::Invalid("notcp")),
    ("server://:1/a:1?notcp=1&noudp=1", Want::Invalid("noudp")),
    ("client://:1/a:1?sni=bad_name", Want::Invalid("sni")),
    ("client://:1/a:1?ca=", Want::Invalid("ca")),
    ("master://:1/127.0.0.1:80", Want::Invalid("prefix")),
    ("master://:1/a//b", Want::Invalid("prefix")),
    ("master://:1/../etc", Want::Invalid("prefix")),
    ("master://k@:1", Want::Invalid("tunnel key")),
    ("master://:1?state=", Want::Invalid("state")),
    (
        "master://:1?store=postgres://u:pw@h/db&node=a",
        Want::Invalid("store"),
    ),
    ("master://:1?store=postgres://u@h/db", Want::Missing("node")),
    (
        "master://:1?store=mysql://u@h/db&node=a",
        Want::Invalid("store"),
    ),
    (
        "master://:1?store=postgres://h/db&node=a",
        Want::Invalid("store"),
    ),
    (
        "master://:1?store=postgres://u@h:0/db&node=a",
        Want::Invalid("store"),
    ),
    (
        "master://:1?store=postgres://u@h/db?sslmode=x&node=a",
        Want::Invalid("store"),
    ),
    (
        "master://:1?store=postgres://u@h/db&node=a%20b",
        Want::Invalid("node"),
    ),
    (
        "master://:1?store=postgres://u@h/db&node=a&state=/x",
        Want::Invalid("state"),
    ),
    ("master://:1?node=a", Want::Invalid("node")),
    (
        "server://:1/a:1?store=postgres://u@h/db",
        Want::WrongRole("store"),
    ),
    ("master://:1?api=", Want::Invalid("api")),
    ("master://:1?api=Envelope", Want::Invalid("api")),
    ("master://:1?api=json", Want::Invalid("api")),
    ("server://:1/a:1?api=envelope", Want::WrongRole("api")),
    (
        "master://:1?api=nodepass&api=envelope",
        Want::Duplicate("api"),
    ),
];

fn expand(canonical: &str) -> String {
    canonical
        .replace("{S}", SERVER_TAIL)
        .replace("{C}", CLIENT_TAIL)
}

#[test]
fn valid_urls_parse_and_print_canonically() {
    for (input, want) in VALID {
        let config = Config::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(config.to_string(), expand(want), "{input}");
        assert_eq!(
            Config::parse(&config.to_url_with_secret()),
            Ok(config),
            "{input}"
        );
    }
}

#[test]
fn a_store_password_is_refused_without_echoing_it() {
    let err = Config::parse("master://:1?store=postgres://u:s3cret@h/db&node=a").unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("store") && text.contains("process list"),
        "{text}"
    );
}

#[test]
fn invalid_urls_name_the_field() {
    for (input, want) in INVALID {
        let err = Config::parse(input).expect_err(input);
        let ok = match (want, &err) {
            (Want::Syntax, ConfigError::Syntax(_)) => true,
            (Want::Invalid(f), ConfigError::Invalid { field, .. }) => field == f,
            (Want::Unknown(f), ConfigError::Unknown { name, .. }) => name == f,
            (Want::WrongRole(f), ConfigError::WrongRole { name, .. }) => name == f,
            (Want::Missing(f), ConfigError::Missing { field, .. }) => field == f,
            (Want::Duplicate(f), ConfigError::Duplicate(name)) => name == f,
            _ => false,
        };
        assert!(ok, "{input}: want {want:?}, got {err:?}");
    }
    assert!(VALID.len() + INVALID.len() >= 40);
}

#[test]
fn values_are_typed() {
    let Ok(Config::Server(s)) = Config::parse(
        "server://:1/a:1?tls=1&type=3&max=8&mode=1&dns=1h30m&read=90s&rate=10&slot=0\
         &proxy=1&block=13&notcp=1&dial=10.0.0.1",
    ) else {
        panic!("server url refused");
    };
    assert_eq!(s.tls, TlsMode::SelfSigned);
    assert_eq!(s.pool_type, PoolType::Http2);
    assert_eq!(s.max.get(), 8);
    assert_eq!(s.mode, ServerMode::Reverse);
    let p = &s.params;
    assert_eq!(p.dns_ttl, Duration::from_secs(5400));
    assert_eq!(p.read_timeout, Some(Duration::from_secs(90)));
    assert_eq!(p.rate_mbps, NonZeroU32::new(10));
    assert_eq!(p.slot, None);
    assert_eq!(p.proxy, ProxyProtocol::V1);
    assert_eq!(
        p.block,
        BlockSet {
            socks: true,
            http: false,
            tls: true
        }
    );
    assert!(!p.tcp && p.udp);
    assert_eq!(p.dial, DialAddr::Ip("10.0.0.1".parse().unwrap()));
    let shown = Config::Server(s).to_string();
    assert!(shown.contains("&dial=10.0.0.1&read=1m30s&rate=10&slot=0&proxy=1&block=13&notcp=1&"));
}

#[test]
fn derived_key_follows_the_port_and_is_flagged_when_exposed() {
    let params = |url: &str| Config::parse(url).unwrap().tunnel_params().unwrap().clone();
    let p = params("server://:10101/a:1");
    assert!(p.key_derived);
    assert_eq!(p.key, TunnelKey::derive(10101));
    assert!(p.is_derived_key_exposed());
    assert!(!params("server://127.0.0.1:10101/a:1").is_derived_key_exposed());
    assert!(!params("client://localhost:10101/a:1").is_derived_key_exposed());
    assert!(params("client://10.1.2.3:10101/a:1").is_derived_key_exposed());
    assert!(!params("server://secret@:10101/a:1").is_derived_key_exposed());
    assert_eq!(params("server://secret@:10101/a:1").key.expose(), "secret");
    let exposed = |url: &str| Config::parse(url).unwrap().is_derived_key_exposed();
    assert!(exposed("client://10.1.2.3:10101/a:1?mode=2"));
    assert!(!exposed("client://:10101/a:1?mode=1"));
    assert!(!exposed("master://:9090"));
}

#[test]
fn errors_never_show_the_key() {
    for url in [
        "server://hunter2:pw@:1/a:1",
        "server://hunter2@:1/a:1?tls=9",
        "server://hunter2@host/a:1",
        "server://hunt/er2@:1/a:1",
        "server://hunt?er2@:1/a:1",
        "server://hunt#er2@:1/a:1",
        "hunter2@server://:1/a:1",
        "master://hunter2@:1",
    ] {
        let err = Config::parse(url).expect_err(url);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("er2"),
                "{url}: {shown}"
            );
        }
    }
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        Just(Host::Any),
        any::<std::net::Ipv4Addr>().prop_map(|ip| Host::Ip(ip.into())),
        any::<std::net::Ipv6Addr>().prop_map(|ip| Host::Ip(ip.into())),
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,3}".prop_map(Host::Name),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (host(), any::<u16>()).prop_map(|(host, port)| Endpoint { host, port })
}

fn path() -> impl Strategy<Value = PathBuf> {
    "[a-zA-Z0-9 /._&=+%#?:@,~-]{1,24}".prop_map(PathBuf::from)
}

fn ws_options() -> impl Strategy<Value = WebSocketOptions> {
    (
        "(/[a-zA-Z0-9_~%.-]{0,8}){1,3}",
        proptest::option::of("[a-z][a-z0-9]{0,8}(\\.[a-z]{1,4}){0,2}(:[1-9][0-9]{0,3})?"),
        1..=600u64,
        proptest::bool::ANY,
    )
        .prop_map(|(path, host, secs, bind)| WebSocketOptions {
            path,
            host,
            ping: Duration::from_secs(secs),
            binding: if bind { WsBinding::Tls } else { WsBinding::Off },
        })
}

fn tls() -> impl Strategy<Value = TlsMode> {
    prop_oneof![
        Just(TlsMode::Off),
        Just(TlsMode::SelfSigned),
        (path(), path()).prop_map(|(cert, key)| TlsMode::Files { cert, key }),
    ]
}

fn pool_size() -> impl Strategy<Value = NonZeroU32> {
    (1..=POOL_LIMIT).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn tunnel_params() -> impl Strategy<Value = TunnelParams> {
    let key = prop_oneof![Just(None), "[^\\p{Cc}]{1,24}".prop_map(Some)];
    let limits = (
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(1..=u32::MAX),
        proptest::option::of((1..=u64::MAX).prop_map(Duration::from_nanos)),
        any::<u64>().prop_map(Duration::from_nanos),
    );
    let choices = (
        prop_oneof![Just(DialAddr::Auto), any::<IpAddr>().prop_map(DialAddr::Ip)],
        (0..6usize).prop_map(|i| {
            [
                LogLevel::None,
                LogLevel::Debug,
                LogLevel::Info,
                LogLevel::Warn,
                LogLevel::Error,
                LogLevel::Event,
            ][i]
        }),
        prop_oneof![
            Just(ProxyProtocol::Off),
            Just(ProxyProtocol::V1),
            Just(ProxyProtocol::V2)
        ],
        any::<(bool, bool, bool)>().prop_map(|(socks, http, tls)| BlockSet { socks, http, tls }),
        prop_oneof![Just((true, true)), Just((true, false)), Just((false, true))],
    );
    (
        key,
        endpoint(),
        proptest::collection::vec(endpoint(), 1..4),
        limits,
        choices,
    )
        .prop_map(
            |(
                key,
                tunnel,
                targets,
                (rate, slot, read, dns),
                (dial, log, proxy, block, (tcp, udp)),
            )| {
                TunnelParams {
                    key_derived: key.is_none(),
                    key: key.map_or_else(|| TunnelKey::derive(tunnel.port), TunnelKey::new),
                    tunnel,
                    targets,
                    balance: Default::default(),
                    log,
                    dns_ttl: dns,
                    dial,
                    read_timeout: read,
                    rate_mbps: rate.and_then(NonZeroU32::new),
                    slot: slot.and_then(NonZeroU32::new),
                    proxy,
                    block,
                    tcp,
                    udp,
                }
            },
        )
}

/// Targets that are dialed cannot have port 0 (the parser refuses it).
fn dialable(params: &mut TunnelParams) {
    for t in &mut params.targets {
        if t.port == 0 {
            t.port = 1;
        }
    }
}

fn config() -> impl Strategy<Value = Config> {
    let server = (
        tunnel_params(),
        tls(),
        pool_size(),
        0..3usize,
        0..4usize,
        ws_options(),
    )
        .prop_map(|(params, tls, max, mode, ty, mut ws)| {
            ws.host = None;
            let mut pool_type = [
                PoolType::Tcp,
                PoolType::Quic,
                PoolType::WebSocket,
                PoolType::Http2,
            ][ty];
            if tls == TlsMode::Off && matches!(pool_type, PoolType::Quic | PoolType::Http2) {
                pool_type = PoolType::WebSocket;
            }
            // `wsbind=0` only with type=2 and tls (checked by the parser).
            if pool_type != PoolType::WebSocket || tls == TlsMode::Off {
                ws.binding = WsBinding::Tls;
            }
            let mode = [ServerMode::Auto, ServerMode::Reverse, ServerMode::Forward][mode];
            let mut params = params;
            if mode == ServerMode::Forward || params.targets.len() > 1 {
                dialable(&mut params);
            }
            Config::Server(ServerConfig {
                params,
                tls,
                max,
                mode,
                pool_type,
                ws,
            })
        });
    let sni = prop_oneof![
        "[a-z][a-z0-9]{0,8}(\\.[a-z]{1,4}){0,2}",
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
    ];
    let client = (
        tunnel_params(),
        proptest::option::of(sni),
        proptest::option::of(path()),
        pool_size(),
        0..3usize,
        (0..3usize, ws_options()),
    )
        .prop_map(|(params, sni, ca, min, mode, (ty, mut ws))| {
            let pool_type = [PoolType::Tcp, PoolType::Quic, PoolType::WebSocket][ty];
            if pool_type != PoolType::WebSocket {
                ws.binding = WsBinding::Tls;
            }
            let mode = [ClientMode::Auto, ClientMode::SingleEnd, ClientMode::DualEnd][mode];
            let mut params = params;
            if mode == ClientMode::SingleEnd {
                dialable(&mut params);
            }
            Config::Client(ClientConfig {
                params,
                sni,
                ca,
                min,
                mode,
                pool_type,
                ws,
            })
        });
    let master = (
        endpoint(),
        "(/[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,6}){1,3}",
        tls(),
        proptest::option::of(path()),
        proptest::bool::ANY,
    )
        .prop_map(|(listen, prefix, tls, state, envelope)| {
            Config::Master(MasterConfig {
                listen,
                prefix,
                log: LogLevel::Info,
                tls,
                state,
                api: if envelope {
                    ApiDialect::Envelope
                } else {
                    ApiDialect::NodePass
                },
                store: None,
                node: None,
                store_password_file: None,
            })
        });
    prop_oneof![server, client, master]
}

proptest! {
    #[test]
    fn canonical_url_round_trips(config in config()) {
        let url = config.to_url_with_secret();
        prop_assert_eq!(Config::parse(&url), Ok(config.clone()), "{}", url);
        // The masked form parses too (with `****` as the key) and prints identically.
        let masked = config.to_string();
        let reparsed = Config::parse(&masked).map(|c| c.to_string());
        prop_assert_eq!(reparsed, Ok(masked.clone()));
        // The masked URL differs from the secret one exactly in the key: no other trace of it.
        if config.tunnel_params().is_some_and(|p| !p.key_derived) {
            let (_, after_key) = url.split_once('@').expect("explicit key");
            prop_assert_eq!(masked, format!("{}://****@{}", config.role(), after_key));
        } else {
            prop_assert_eq!(masked, url);
        }
    }
}

proptest! {
    /// Malformed input is an error, never a panic; and whatever parses prints and parses back.
    #[test]
    fn arbitrary_input_never_panics(
        s in prop_oneof![
            "(?s).{0,80}",
            "(server|client|master)://[a-zA-Z0-9@:\\[\\]/.,?=&%+#_-]{0,60}",
        ]
    ) {
        if let Ok(config) = Config::parse(&s) {
            prop_assert_eq!(Config::parse(&config.to_url_with_secret()), Ok(config));
        }
    }
}
