//! The records a [`Store`](super::Store) keeps: instances, their traffic totals and samples.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::config::MASK;

/// The longest alias a record may carry, in characters.
pub const MAX_ALIAS_CHARS: usize = 256;

/// Whether `id` is a valid instance id: exactly 8 lower-case hex characters.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What the operator last asked an instance to be, so that a restart brings it back that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// The operator started it (or created it running): start it again after a restart.
    #[default]
    Running,
    /// The operator stopped it: keep it stopped after a restart.
    Stopped,
}

impl Desired {
    /// The text stored for this value: `running` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }

    /// The value stored as `text`, if it is one.
    pub fn from_text(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Desired::Running),
            "stopped" => Some(Desired::Stopped),
            _ => None,
        }
    }
}

/// The other end of a tunnel, as an embedder describes it (opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Peer {
    /// The peer's service id.
    pub sid: String,
    /// The peer's type (serialized as `type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The peer's alias.
    pub alias: String,
}

/// Free-form metadata of an instance, stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// The peer this instance talks to.
    pub peer: Peer,
    /// Operator tags, sorted by key.
    pub tags: BTreeMap<String, String>,
}

/// Cumulative byte counters of an instance. `+` saturates at `u64::MAX` rather than wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TrafficTotals {
    /// Bytes received over TCP.
    pub tcp_in: u64,
    /// Bytes sent over TCP.
    pub tcp_out: u64,
    /// Bytes received over UDP.
    pub udp_in: u64,
    /// Bytes sent over UDP.
    pub udp_out: u64,
}

impl TrafficTotals {
    /// All counters zero.
    pub const ZERO: TrafficTotals = TrafficTotals {
        tcp_in: 0,
        tcp_out: 0,
        udp_in: 0,
        udp_out: 0,
    };

    /// Counter-wise sum, saturating at `u64::MAX`.
    pub fn saturating_add(self, other: TrafficTotals) -> TrafficTotals {
        TrafficTotals {
            tcp_in: self.tcp_in.saturating_add(other.tcp_in),
            tcp_out: self.tcp_out.saturating_add(other.tcp_out),
            udp_in: self.udp_in.saturating_add(other.udp_in),
            udp_out: self.udp_out.saturating_add(other.udp_out),
        }
    }

    /// Counter-wise difference, saturating at zero: the traffic since an `earlier` reading.
    pub fn saturating_sub(self, earlier: TrafficTotals) -> TrafficTotals {
        TrafficTotals {
            tcp_in: self.tcp_in.saturating_sub(earlier.tcp_in),
            tcp_out: self.tcp_out.saturating_sub(earlier.tcp_out),
            udp_in: self.udp_in.saturating_sub(earlier.udp_in),
            udp_out: self.udp_out.saturating_sub(earlier.udp_out),
        }
    }

    /// Whether every counter is zero.
    pub fn is_zero(&self) -> bool {
        *self == TrafficTotals::ZERO
    }
}

impl Add for TrafficTotals {
    type Output = TrafficTotals;

    /// Saturating, see [`TrafficTotals::saturating_add`].
    fn add(self, other: TrafficTotals) -> TrafficTotals {
        self.saturating_add(other)
    }
}

impl AddAssign for TrafficTotals {
    fn add_assign(&mut self, other: TrafficTotals) {
        *self = self.saturating_add(other);
    }
}

/// One periodic reading of an instance's cumulative counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// When it was taken, unix milliseconds.
    pub ts_ms: i64,
    /// The cumulative counters at that time.
    pub traffic: TrafficTotals,
}

/// Everything the supervisor keeps about one instance across restarts.
///
/// `Debug` masks [`url`](Self::url), which carries the tunnel key.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// 8 lower-case hex characters; never changes.
    pub id: String,
    /// An operator-chosen name, at most [`MAX_ALIAS_CHARS`] characters.
    pub alias: Option<String>,
    /// The instance URL exactly as the operator gave it, secret key included. Never log it.
    pub url: String,
    /// Whether the supervisor restarts the instance when it fails.
    pub restart: bool,
    /// Free-form metadata.
    pub meta: Meta,
    /// Cumulative traffic, carried across restarts.
    pub traffic: TrafficTotals,
    /// Creation time, unix milliseconds (set by the supervisor).
    pub created_at: i64,
    /// Last change, unix milliseconds (set by the supervisor).
    pub updated_at: i64,
    /// Whether the operator left it running or stopped.
    pub desired: Desired,
}

impl InstanceRecord {
    /// A record with the given id and URL, no alias, no restart, empty metadata, zero traffic,
    /// both timestamps `now_ms` and [`Desired::Running`].
    pub fn new(id: impl Into<String>, url: impl Into<String>, now_ms: i64) -> Self {
        InstanceRecord {
            id: id.into(),
            alias: None,
            url: url.into(),
            restart: false,
            meta: Meta::default(),
            traffic: TrafficTotals::ZERO,
            created_at: now_ms,
            updated_at: now_ms,
            desired: Desired::Running,
        }
    }

    /// Check what the store relies on: the id format and the alias length.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !is_valid_id(&self.id) {
            return Err(StoreError::Invalid {
                reason: format!("id {:?} is not 8 lower-case hex characters", self.id),
            });
        }
        if let Some(alias) = &self.alias {
            let chars = alias.chars().count();
            if chars > MAX_ALIAS_CHARS {
                return Err(StoreError::Invalid {
                    reason: format!(
                        "alias of {} has {chars} characters, at most {MAX_ALIAS_CHARS} allowed",
                        self.id
                    ),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for InstanceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceRecord")
            .field("id", &self.id)
            .field("alias", &self.alias)
            .field("url", &format_args!("{MASK}"))
            .field("restart", &self.restart)
            .field("meta", &self.meta)
            .field("traffic", &self.traffic)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("desired", &self.desired)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_eight_lower_case_hex() {
        for ok in ["00000000", "deadbeef", "0a1b2c3d"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            "0000000",
            "000000000",
            "DEADBEEF",
            "0000000g",
            "0000 000",
            "ééééé",
        ] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn validate_checks_id_and_alias_length() {
        let mut r = InstanceRecord::new("deadbeef", "server://k@:1/:2", 1);
        assert!(r.validate().is_ok());
        r.alias = Some("é".repeat(MAX_ALIAS_CHARS));
        assert!(
            r.validate().is_ok(),
            "the limit counts characters, not bytes"
        );
        r.alias = Some("a".repeat(MAX_ALIAS_CHARS + 1));
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("257 characters"), "{err}");
        r.alias = None;
        r.id = "DEADBEEF".into();
        assert!(matches!(r.validate(), Err(StoreError::Invalid { .. })));
    }

    #[test]
    fn traffic_adds_and_subtracts_saturating() {
        let a = TrafficTotals {
            tcp_in: 1,
            tcp_out: 2,
            udp_in: 3,
            udp_out: u64::MAX - 1,
        };
        let b = TrafficTotals {
            tcp_in: 10,
            tcp_out: 20,
            udp_in: 30,
            udp_out: 5,
        };
        let sum = a + b;
        assert_eq!((sum.tcp_in, sum.tcp_out, sum.udp_in), (11, 22, 33));
        assert_eq!(sum.udp_out, u64::MAX);
        let mut acc = TrafficTotals::ZERO;
        acc += b;
        acc += b;
        assert_eq!(acc.tcp_in, 20);
        assert_eq!(b.saturating_sub(acc), TrafficTotals::ZERO);
        assert_eq!(acc.saturating_sub(b), b);
        assert!(TrafficTotals::default().is_zero());
    }

    #[test]
    fn debug_masks_the_url() {
        let r = InstanceRecord::new("deadbeef", "server://hunter2@:1/:2", 1);
        let text = format!("{r:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("deadbeef"), "{text}");
    }

    #[test]
    fn meta_json_uses_type_and_tolerates_missing_fields() {
        let mut meta = Meta::default();
        meta.peer.kind = "client".into();
        meta.tags.insert("env".into(), "prod".into());
        let json = serde_json::to_string(&meta).unwrap();
        assert!(json.contains(r#""type":"client""#), "{json}");
        assert_eq!(serde_json::from_str::<Meta>(&json).unwrap(), meta);
        let partial: Meta = serde_json::from_str(r#"{"peer":{"sid":"x"}}"#).unwrap();
        assert_eq!(partial.peer.sid, "x");
        assert!(partial.tags.is_empty());
    }

    #[test]
    fn desired_text_round_trips() {
        for d in [Desired::Running, Desired::Stopped] {
            assert_eq!(Desired::from_text(d.as_str()), Some(d));
        }
        assert_eq!(Desired::from_text("paused"), None);
    }
}
