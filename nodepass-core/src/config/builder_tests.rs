//! The builders against the URL parser: equal values for equivalent input, equal errors for
//! equivalent mistakes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn url(s: &str) -> Config {
    Config::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The field an error names.
fn field(e: &ConfigError) -> &str {
    match e {
        ConfigError::Invalid { field, .. } | ConfigError::Missing { field, .. } => field,
        other => panic!("no field in {other:?}"),
    }
}

#[test]
fn defaults_equal_the_bare_url() {
    let server = ServerConfig::builder(Endpoint::any(10101), addr("127.0.0.1:8080"))
        .build()
        .unwrap();
    assert_eq!(
        Config::Server(server),
        url("server://:10101/127.0.0.1:8080")
    );
    let client = ClientConfig::builder(addr("127.0.0.1:10101"), addr("127.0.0.1:8080"))
        .build()
        .unwrap();
    assert_eq!(
        Config::Client(client),
        url("client://127.0.0.1:10101/127.0.0.1:8080")
    );
    let master = MasterConfig::builder(Endpoint::any(9090)).build().unwrap();
    assert_eq!(Config::Master(master), url("master://:9090"));
}

#[test]
fn every_server_setting_equals_its_url_parameter() {
    let built = ServerConfig::builder(
        Endpoint::new("::1", 10101).unwrap(),
        Endpoint::new("Backend.example", 80).unwrap(),
    )
    .target(addr("10.0.0.2:80"))
    .key("k:y@/ü")
    .log(LogLevel::Debug)
    .dns_ttl(Duration::from_secs(90))
    .dial(DialAddr::Ip(Ipv4Addr::new(127, 0, 0, 3).into()))
    .read_timeout(Duration::from_millis(1500))
    .rate_mbps(100)
    .slot(0)
    .proxy(ProxyProtocol::V2)
    .block(BlockSet {
        socks: true,
        http: false,
        tls: true,
    })
    .udp(false)
    .load_balance(LoadBalance::PrimaryBackup)
    .fallback(Duration::from_secs(30))
    .probe(Duration::from_secs(2))
    .tls(TlsMode::Files {
        cert: "/etc/np/c.pem".into(),
        key: "/etc/np/k.pem".into(),
    })
    .max(2048)
    .mode(ServerMode::Forward)
    .pool_type(PoolType::WebSocket)
    .ws_path("/np/ws")
    .ws_ping(Duration::from_secs(45))
    .build()
    .unwrap();
    let parsed = url(
        "server://k%3Ay%40%2F%C3%BC@[::1]:10101/backend.example:80,10.0.0.2:80?log=debug&dns=90s\
         &dial=127.0.0.3&read=1.5s&rate=100&slot=0&proxy=2&block=31&noudp=1&lbs=2&fallback=30s\
         &probe=2s&tls=2&crt=/etc/np/c.pem&key=/etc/np/k.pem&max=2048&mode=2&type=2\
         &wspath=/np/ws&wsping=45s",
    );
    assert_eq!(Config::Server(built.clone()), parsed);
    // The URL stays the canonical form: the built value prints as the URL and parses back.
    let built = Config::Server(built);
    assert_eq!(built.to_string(), parsed.to_string());
    assert_eq!(Config::parse(&built.to_url_with_secret()), Ok(built));
}

#[test]
fn every_client_setting_equals_its_url_parameter() {
    let built = ClientConfig::builder(
        Endpoint::new("tunnel.example", 443).unwrap(),
        addr("127.0.0.1:0"),
    )
    .key("secret")
    .tcp(true)
    .udp(false)
    .load_balance(LoadBalance::Latency)
    .sni("Name.example")
    .ca("/etc/np/ca.pem")
    .min(8)
    .mode(ClientMode::DualEnd)
    .pool_type(PoolType::WebSocket)
    .ws_host("cdn.example:443")
    .ws_path("/t")
    .build()
    .unwrap();
    let parsed = url(
        "client://secret@tunnel.example:443/127.0.0.1:0?notcp=0&noudp=1&lbs=1&sni=name.example\
         &ca=/etc/np/ca.pem&min=8&mode=2&type=2&wshost=cdn.example:443&wspath=/t",
    );
    assert_eq!(Config::Client(built), parsed);
}

#[test]
fn every_master_setting_equals_its_url_parameter() {
    let built = MasterConfig::builder(addr("127.0.0.1:9090"))
        .prefix("np/v1/")
        .log(LogLevel::Warn)
        .tls(TlsMode::SelfSigned)
        .state("/var/lib/np/state.db")
        .api(ApiDialect::Envelope)
        .build()
        .unwrap();
    let parsed =
        url("master://127.0.0.1:9090/np/v1?log=warn&tls=1&state=/var/lib/np/state.db&api=envelope");
    assert_eq!(Config::Master(built), parsed);

    let store = PostgresUrl::parse("store", "postgres://np@db.example:5433/fleet").unwrap();
    let built = MasterConfig::builder(Endpoint::any(9090))
        .store(&store)
        .node("node-1")
        .store_password_file("/run/secrets/pg")
        .build()
        .unwrap();
    let parsed = url(
        "master://:9090?store=postgres://np@db.example:5433/fleet&node=node-1\
         &store_password_file=/run/secrets/pg",
    );
    assert_eq!(Config::Master(built), parsed);
}

#[test]
fn a_later_setting_replaces_an_earlier_one() {
    let built = ServerConfig::builder(Endpoint::any(1), addr("127.0.0.1:2"))
        .max(7)
        .max(9)
        .build()
        .unwrap();
    assert_eq!(built.max.get(), 9);
}

/// Bad builder input gives exactly the error of the equivalent URL.
#[test]
fn mistakes_are_the_urls_errors() {
    let target = addr("127.0.0.1:80");
    let server = || ServerConfig::builder(Endpoint::any(10101), target);
    let client = || ClientConfig::builder(addr("127.0.0.1:10101"), target);
    let cases: Vec<(Result<Config, ConfigError>, &str)> = vec![
        (
            server().max(0).build().map(Config::Server),
            "server://:10101/127.0.0.1:80?max=0",
        ),
        (
            server().max(65537).build().map(Config::Server),
            "server://:10101/127.0.0.1:80?max=65537",
        ),
        (
            server()
                .ws_ping(Duration::from_millis(500))
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:80?wsping=500ms",
        ),
        (
            server().tcp(false).udp(false).build().map(Config::Server),
            "server://:10101/127.0.0.1:80?notcp=1&noudp=1",
        ),
        (
            server()
                .fallback(Duration::from_secs(1))
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:80?fallback=1s",
        ),
        (
            server()
                .probe(Duration::from_millis(50))
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:80?probe=50ms",
        ),
        (
            server()
                .pool_type(PoolType::Quic)
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:80?type=1",
        ),
        (
            ServerConfig::builder(Endpoint::any(10101), addr("127.0.0.1:0"))
                .mode(ServerMode::Forward)
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:0?mode=2",
        ),
        (
            server()
                .ws_binding(WsBinding::Off)
                .build()
                .map(Config::Server),
            "server://:10101/127.0.0.1:80?wsbind=0",
        ),
        (
            server().ws_path("np").build().map(Config::Server),
            "server://:10101/127.0.0.1:80?wspath=np",
        ),
        (
            server().key("a\nb").build().map(Config::Server),
            "server://a%0Ab@:10101/127.0.0.1:80",
        ),
        (
            client()
                .pool_type(PoolType::Http2)
                .build()
                .map(Config::Client),
            "client://127.0.0.1:10101/127.0.0.1:80?type=3",
        ),
        (
            client().sni("bad_name").build().map(Config::Client),
            "client://127.0.0.1:10101/127.0.0.1:80?sni=bad_name",
        ),
        (
            client().min(0).build().map(Config::Client),
            "client://127.0.0.1:10101/127.0.0.1:80?min=0",
        ),
        (
            client().ws_host("a b").build().map(Config::Client),
            "client://127.0.0.1:10101/127.0.0.1:80?wshost=a%20b",
        ),
        (
            MasterConfig::builder(Endpoint::any(1))
                .prefix("/a/../b")
                .build()
                .map(Config::Master),
            "master://:1/a/../b",
        ),
        (
            MasterConfig::builder(Endpoint::any(1))
                .node("n1")
                .build()
                .map(Config::Master),
            "master://:1?node=n1",
        ),
        (
            MasterConfig::builder(Endpoint::any(1))
                .store(&PostgresUrl::parse("store", "postgres://u@h/d").unwrap())
                .build()
                .map(Config::Master),
            "master://:1?store=postgres://u@h/d",
        ),
    ];
    for (built, url) in cases {
        let parsed = Config::parse(url);
        assert!(parsed.is_err(), "{url} parses");
        assert_eq!(built, parsed, "{url}");
    }
}

#[test]
fn builder_only_mistakes_name_their_field() {
    let target = addr("127.0.0.1:80");
    let e = ServerConfig::builder(Endpoint::any(1), target)
        .key("")
        .build()
        .unwrap_err();
    assert_eq!(field(&e), "tunnel key");
    assert_eq!(field(&Endpoint::new("", 1).unwrap_err()), "host");
    assert_eq!(field(&Endpoint::new("a..b", 1).unwrap_err()), "host");
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff.pem"));
        let e = ServerConfig::builder(Endpoint::any(1), target)
            .tls(TlsMode::Files {
                cert: bad,
                key: "/k.pem".into(),
            })
            .build()
            .unwrap_err();
        assert_eq!(field(&e), "crt");
    }
}

#[test]
fn the_key_is_masked_in_a_builders_debug() {
    let b = ClientConfig::builder(addr("127.0.0.1:1"), addr("127.0.0.1:2")).key("hunter2-key");
    assert!(!format!("{b:?}").contains("hunter2"));
}
