//! Sharding past one replica, as Flux does it: a replica started with `--shard KEY`
//! reconciles only the Transforms and ResourceGraphs labelled `sharding.pequod.io/key=KEY`;
//! the unsharded replica reconciles those without the label. Each replica's watches ask the
//! API server for its share only (a label selector), so its caches hold nothing else, and
//! no object is reconciled by two replicas. A Transform's ResourceGraph carries its
//! Transform's label, so it goes to the same replica; relabelling a Transform moves both.

use crate::api::labels;

/// Which objects this replica reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Shard {
    /// Those without the shard label.
    #[default]
    Unsharded,
    /// Those labelled with this key.
    Key(String),
}

/// Why a shard key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "shard key {key:?} is not a label value (at most 63 characters: letters, digits, '-', '_' and '.', beginning and ending with a letter or digit)"
)]
pub struct InvalidShard {
    key: String,
}

impl Shard {
    /// The shard of `key` (`None`: the unsharded replica); the key must be a label value.
    pub fn new(key: Option<&str>) -> Result<Shard, InvalidShard> {
        let Some(key) = key else {
            return Ok(Shard::Unsharded);
        };
        let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let valid = key.len() <= crate::api::MAX_LABEL_VALUE
            && alphanumeric(key.chars().next())
            && alphanumeric(key.chars().last())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(Shard::Key(key.to_string()))
        } else {
            Err(InvalidShard {
                key: key.to_string(),
            })
        }
    }

    /// The label selector of this replica's watches.
    pub fn selector(&self) -> String {
        match self {
            Shard::Unsharded => format!("!{}", labels::SHARD),
            Shard::Key(key) => format!("{}={key}", labels::SHARD),
        }
    }

    /// The leader Lease of this shard: each shard elects its own leader.
    pub fn lease_name(&self, base: &str) -> String {
        match self {
            Shard::Unsharded => base.to_string(),
            Shard::Key(key) => format!("{base}-{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_selects_its_key_and_the_unsharded_replica_the_rest() {
        assert_eq!(
            Shard::new(Some("shard-1")).map(|s| s.selector()),
            Ok("sharding.pequod.io/key=shard-1".to_string())
        );
        assert_eq!(
            Shard::new(None).map(|s| s.selector()),
            Ok("!sharding.pequod.io/key".to_string())
        );
        assert_eq!(
            Shard::new(Some("a")).map(|s| s.lease_name("pequod-leader")),
            Ok("pequod-leader-a".to_string())
        );
        assert_eq!(
            Shard::Unsharded.lease_name("pequod-leader"),
            "pequod-leader"
        );
    }

    #[test]
    fn a_key_that_is_no_label_value_is_refused() {
        for key in ["", "-a", "a-", "a,b", "a=b", "a b", &"x".repeat(64)] {
            assert_eq!(
                Shard::new(Some(key)),
                Err(InvalidShard {
                    key: key.to_string()
                }),
                "{key:?}"
            );
        }
        assert!(Shard::new(Some(&"x".repeat(63))).is_ok());
        assert!(Shard::new(Some("a.b_c-1")).is_ok());
    }
}
