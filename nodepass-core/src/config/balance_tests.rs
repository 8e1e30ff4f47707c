//! Table tests of the balancing parameters (`lbs`, `fallback`, `probe`).

use std::time::Duration;

use super::*;

const MULTI: &str = "client://127.0.0.1:1/127.0.0.1:2,127.0.0.1:3";

fn balance(url: &str) -> Result<Balance, ConfigError> {
    Ok(Config::parse(url)?.tunnel_params().unwrap().balance)
}

#[test]
fn balancing_parameters_parse_and_print_back() {
    let s = Duration::from_secs;
    let cases: &[(&str, LoadBalance, Duration, Option<Duration>, &str)] = &[
        ("", LoadBalance::RoundRobin, s(300), None, "&lbs=0&probe=0"),
        (
            "?lbs=0&probe=2s",
            LoadBalance::RoundRobin,
            s(300),
            Some(s(2)),
            "&lbs=0&probe=2s",
        ),
        (
            "?lbs=1",
            LoadBalance::Latency,
            s(300),
            Some(s(10)),
            "&lbs=1&probe=10s",
        ),
        (
            "?lbs=1&probe=500ms",
            LoadBalance::Latency,
            s(300),
            Some(Duration::from_millis(500)),
            "&lbs=1&probe=500ms",
        ),
        (
            "?lbs=2",
            LoadBalance::PrimaryBackup,
            s(300),
            None,
            "&lbs=2&fallback=5m&probe=0",
        ),
        (
            "?lbs=2&fallback=90s&probe=0",
            LoadBalance::PrimaryBackup,
            s(90),
            None,
            "&lbs=2&fallback=1m30s&probe=0",
        ),
    ];
    for (query, strategy, fallback, probe, shown) in cases {
        for base in [MULTI, "server://127.0.0.1:1/127.0.0.1:2,127.0.0.1:3"] {
            let url = format!("{base}{query}");
            let config = Config::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let b = config.tunnel_params().unwrap().balance;
            assert_eq!(
                (b.strategy, b.fallback, b.probe),
                (*strategy, *fallback, *probe),
                "{url}"
            );
            let canonical = config.to_string();
            assert!(canonical.ends_with(shown), "{url}: {canonical}");
            assert_eq!(Config::parse(&canonical), Ok(config), "{url}");
        }
    }
}

#[test]
fn single_target_keeps_its_short_form_unless_set() {
    let url = "client://127.0.0.1:1/127.0.0.1:2";
    assert!(!Config::parse(url).unwrap().to_string().contains("lbs"));
    let set = Config::parse(&format!("{url}?lbs=2")).unwrap().to_string();
    assert!(set.ends_with("&lbs=2&fallback=5m&probe=0"), "{set}");
}

#[test]
fn invalid_balancing_parameters_name_the_field() {
    let cases = [
        ("?lbs=3", "lbs"),
        ("?lbs=", "lbs"),
        ("?lbs=01", "lbs"),
        ("?lbs=rr", "lbs"),
        ("?fallback=5m", "fallback"),
        ("?lbs=1&fallback=5m", "fallback"),
        ("?lbs=2&fallback=0", "fallback"),
        ("?lbs=2&fallback=300", "fallback"),
        ("?lbs=2&fallback=-5m", "fallback"),
        ("?probe=50ms", "probe"),
        ("?probe=10", "probe"),
        ("?probe=x", "probe"),
        ("?lbs=1&probe=0", "probe"),
    ];
    for (query, want) in cases {
        let url = format!("{MULTI}{query}");
        match balance(&url) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, want, "{url}"),
            other => panic!("{url}: want an error naming {want}, got {other:?}"),
        }
    }
    assert!(matches!(
        Config::parse(&format!("{MULTI}?lbs=1&lbs=1")),
        Err(ConfigError::Duplicate(_))
    ));
    assert!(matches!(
        Config::parse("master://127.0.0.1:1?lbs=1"),
        Err(ConfigError::WrongRole { .. })
    ));
}
