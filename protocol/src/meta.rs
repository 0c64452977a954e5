//! The metadata every node announces in its SWIM `Alive` updates: its name,
//! overlay, the addresses to reach it, its session capacity and load, and
//! its tags. Carried as opaque bytes by SWIM (sent when they change, not on
//! every probe); encoded here as CBOR within the cap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::MAX_META_BYTES;

/// What a node tells the group about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Human name of the node (its cluster).
    #[serde(rename = "n")]
    pub name: String,
    /// Overlay the node belongs to.
    #[serde(rename = "o")]
    pub overlay: String,
    /// Addresses (multiaddrs) where the node listens.
    #[serde(rename = "a", default)]
    pub addrs: Vec<String>,
    /// Sessions the node will host.
    #[serde(rename = "c", default)]
    pub capacity: u32,
    /// Sessions the node hosts now.
    #[serde(rename = "l", default)]
    pub load: u32,
    /// Its datagram socket (`ip:port`; an unspecified ip means "the address
    /// its libp2p connections come from").
    #[serde(rename = "d", default, skip_serializing_if = "String::is_empty")]
    pub datagram: String,
    /// A random number its process drew at start: another one means the
    /// process restarted, and the keys agreed with the old one are void.
    #[serde(rename = "b", default)]
    pub boot: u64,
    /// A digest of the node's service configuration (its `exec` templates
    /// and their rules), 0 when unknown: members whose digests differ may
    /// run another command for a session they take over, or refuse it.
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub services: u64,
    /// The operator's tags (`--tag region=eu`): a CBOR map of text to
    /// text, left out when empty, within the caps of [`check_tags`].
    #[serde(rename = "t", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A node's tags, by key (sorted: the encoding is deterministic).
pub type Tags = BTreeMap<String, String>;

/// The most tags a node announces.
pub const MAX_TAGS: usize = 8;
/// The longest tag key, in bytes.
pub const MAX_TAG_KEY: usize = 32;
/// The longest tag value, in bytes.
pub const MAX_TAG_VALUE: usize = 64;
/// The most bytes of keys and values together: with CBOR's heads (at most
/// two bytes per key and value), the map's head and the field key `t`,
/// tags take at most `MAX_TAGS_BYTES + 2 * 2 * MAX_TAGS + 3` = 291 bytes
/// of the metadata, which is re-sent (piggybacked on SWIM datagrams)
/// whenever it changes.
pub const MAX_TAGS_BYTES: usize = 256;

/// Checks one tag key: 1 to [`MAX_TAG_KEY`] bytes of ASCII letters,
/// digits, `_`, `-` and `.`, beginning with a letter.
pub fn check_tag_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_TAG_KEY {
        return Err(format!(
            "tag key {key:?}: 1 to {MAX_TAG_KEY} characters expected"
        ));
    }
    if !key.starts_with(|c: char| c.is_ascii_alphabetic())
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "tag key {key:?}: a letter, then letters, digits, '_', '-' or '.' expected"
        ));
    }
    Ok(())
}

/// Checks one tag value: 1 to [`MAX_TAG_VALUE`] bytes of ASCII letters,
/// digits and `_ - . : / @ +` (no spaces, `=` or `,`, so that
/// `KEY=VALUE` lists read back unambiguously).
pub fn check_tag_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TAG_VALUE {
        return Err(format!(
            "tag {key}: value {value:?} must have 1 to {MAX_TAG_VALUE} characters"
        ));
    }
    if !value.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/' | b'@' | b'+')
    }) {
        return Err(format!(
            "tag {key}: value {value:?} may hold only letters, digits and _ - . : / @ +"
        ));
    }
    Ok(())
}

/// Checks a node's tags against the caps: at most [`MAX_TAGS`] tags, each
/// key and value valid ([`check_tag_key`], [`check_tag_value`]), at most
/// [`MAX_TAGS_BYTES`] of keys and values in all.
pub fn check_tags(tags: &Tags) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags: a node has at most {MAX_TAGS}",
            tags.len()
        ));
    }
    for (key, value) in tags {
        check_tag_key(key)?;
        check_tag_value(key, value)?;
    }
    let bytes: usize = tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_TAGS_BYTES {
        return Err(format!(
            "tags of {bytes} bytes (keys and values): at most {MAX_TAGS_BYTES}"
        ));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (as `--tag` and the API's `tag` filter take it) and
/// checks both halves.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} has no '=': write KEY=VALUE, such as region=eu"
        ));
    };
    check_tag_key(key)?;
    check_tag_value(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Why metadata bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// Not CBOR of the expected shape.
    Malformed(String),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Malformed(why) => write!(f, "malformed node metadata: {why}"),
        }
    }
}

impl std::error::Error for MetaError {}

impl NodeMeta {
    /// Encodes the metadata, dropping addresses from the end (then
    /// shortening the name, then dropping the tags) until it fits in
    /// [`MAX_META_BYTES`]. Tags within [`check_tags`]' caps always fit
    /// beside a name, an overlay name and a datagram address.
    pub fn encode(&self) -> Vec<u8> {
        let mut meta = self.clone();
        loop {
            let mut out = Vec::new();
            ciborium::into_writer(&meta, &mut out).expect("CBOR encoding into a Vec cannot fail");
            if out.len() <= MAX_META_BYTES {
                return out;
            }
            if meta.addrs.pop().is_some() {
                continue;
            }
            if !meta.name.is_empty() {
                let keep = meta.name.chars().count() / 2;
                meta.name = meta.name.chars().take(keep).collect();
            } else if !meta.tags.is_empty() {
                meta.tags.clear();
            } else {
                // Only an overlay name or a datagram address far beyond
                // their own caps gets here: announce the bare minimum.
                meta.overlay.clear();
                meta.datagram.clear();
            }
        }
    }

    /// Decodes metadata received from a peer; tags beyond the caps of
    /// [`check_tags`] make it malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::Malformed(format!("{} bytes", bytes.len())));
        }
        let meta: NodeMeta =
            ciborium::from_reader(bytes).map_err(|e| MetaError::Malformed(e.to_string()))?;
        check_tags(&meta.tags).map_err(MetaError::Malformed)?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = NodeMeta {
            name: "berkeley".into(),
            overlay: "demo".into(),
            addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            capacity: 100,
            load: 3,
            datagram: "0.0.0.0:7702".into(),
            boot: 42,
            services: 0x5eed,
            tags: [("region".into(), "eu".into())].into(),
        };
        assert_eq!(NodeMeta::decode(&meta.encode()).unwrap(), meta);
        // An unknown digest costs no bytes.
        let unknown = NodeMeta {
            services: 0,
            ..meta.clone()
        };
        assert!(unknown.encode().len() < meta.encode().len());
        assert_eq!(NodeMeta::decode(&unknown.encode()).unwrap(), unknown);
    }

    #[test]
    fn no_tags_cost_no_byte_and_one_tag_costs_its_text_and_four() {
        let bare = NodeMeta {
            name: "berkeley".into(),
            ..NodeMeta::default()
        };
        let tagged = NodeMeta {
            tags: [("region".into(), "eu".into())].into(),
            ..bare.clone()
        };
        // Field "t" (2), a map head (1), two text heads (2), the text (8).
        assert_eq!(tagged.encode().len() - bare.encode().len(), 2 + 1 + 2 + 8);
        // An older node's metadata (no "t") reads with no tags.
        assert!(NodeMeta::decode(&bare.encode()).unwrap().tags.is_empty());
    }

    /// A name too long to announce is cut to a prefix (halved until the
    /// metadata fits), not dropped: members still see where it came from.
    #[test]
    fn an_overlong_name_keeps_the_longest_halving_that_fits() {
        let meta = NodeMeta {
            name: "n".repeat(4 * MAX_META_BYTES),
            overlay: "demo".into(),
            tags: [("region".into(), "eu".into())].into(),
            ..NodeMeta::default()
        };
        let sent = NodeMeta::decode(&meta.encode()).unwrap();
        // 4096 -> 2048 -> 1024 -> 512 characters: the first that fits.
        assert_eq!(sent.name.len(), MAX_META_BYTES / 2);
        assert!(meta.name.starts_with(&sent.name));
        assert_eq!(sent.tags, meta.tags);
    }

    /// The largest tags allowed.
    fn max_tags() -> Tags {
        (0..MAX_TAGS)
            .map(|i| {
                let key = format!("k{i}{}", "x".repeat(6));
                let value = "v".repeat(MAX_TAGS_BYTES / MAX_TAGS - key.len());
                (key, value)
            })
            .collect()
    }

    #[test]
    fn the_largest_tags_fit_beside_the_largest_other_fields() {
        let tags = max_tags();
        check_tags(&tags).unwrap();
        let meta = NodeMeta {
            name: "n".repeat(64),
            overlay: "o".repeat(crate::peering::MAX_OVERLAY_LEN),
            addrs: vec!["/ip4/198.18.0.1/udp/7701/quic-v1".into(); 3],
            capacity: u32::MAX,
            load: u32::MAX,
            datagram: "[2001:db8::1]:7702".into(),
            boot: u64::MAX,
            services: u64::MAX,
            tags,
        };
        let bytes = meta.encode();
        assert!(bytes.len() <= MAX_META_BYTES, "{}", bytes.len());
        let untagged = NodeMeta {
            tags: Tags::new(),
            ..meta.clone()
        };
        let cost = bytes.len() - untagged.encode().len();
        assert!(cost <= MAX_TAGS_BYTES + 4 * MAX_TAGS + 3, "{cost}");
        // Nothing was trimmed.
        assert_eq!(NodeMeta::decode(&bytes).unwrap(), meta);
    }

    #[test]
    fn tags_beyond_the_caps_are_refused_with_the_reason() {
        let too_many: Tags = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(check_tags(&too_many).unwrap_err().contains("at most 8"));
        let mut too_big = max_tags();
        too_big.insert("extra".into(), "v".into());
        too_big.pop_first();
        too_big.pop_first();
        too_big.insert("z".into(), "v".repeat(MAX_TAG_VALUE));
        assert!(check_tags(&too_big).unwrap_err().contains("at most 256"));
        for (key, value, why) in [
            ("", "eu", "1 to 32"),
            ("1region", "eu", "a letter"),
            ("re gion", "eu", "a letter"),
            (&*"k".repeat(MAX_TAG_KEY + 1), "eu", "1 to 32"),
            ("region", "", "1 to 64"),
            ("region", "e u", "only letters"),
            ("region", "eu,us", "only letters"),
            ("region", "é", "only letters"),
        ] {
            let tags: Tags = [(key.to_owned(), value.to_owned())].into();
            let err = check_tags(&tags).unwrap_err();
            assert!(err.contains(why), "{key:?}={value:?}: {err}");
        }
        assert_eq!(
            parse_tag("region=eu-west:1"),
            Ok(("region".into(), "eu-west:1".into()))
        );
        assert!(parse_tag("region").unwrap_err().contains("no '='"));
        assert!(parse_tag("=eu").is_err());
        assert!(parse_tag("region=a=b").is_err());
    }

    #[test]
    fn metadata_with_tags_beyond_the_caps_is_malformed() {
        let meta = NodeMeta {
            tags: [("bad key".into(), "v".into())].into(),
            ..NodeMeta::default()
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&meta, &mut bytes).unwrap();
        let err = NodeMeta::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("bad key"), "{err}");
    }

    #[test]
    fn oversized_metadata_is_trimmed_to_fit() {
        let meta = NodeMeta {
            name: "x".repeat(5000),
            overlay: "demo".into(),
            addrs: (0..100)
                .map(|i| format!("/ip4/198.18.0.{i}/tcp/4001"))
                .collect(),
            capacity: 1,
            load: 0,
            ..NodeMeta::default()
        };
        let bytes = meta.encode();
        assert!(bytes.len() <= MAX_META_BYTES);
        let back = NodeMeta::decode(&bytes).unwrap();
        assert_eq!(back.overlay, "demo");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(NodeMeta::decode(&[0xff, 0x00, 0x13]).is_err());
    }
}
