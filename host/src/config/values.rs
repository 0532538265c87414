//! The value syntax a manifest's settings share: sizes ("64 MiB"),
//! durations ("250ms"), counts that must not be zero, instance counts. As
//! serde `deserialize_with` functions yielding `Option`, so a table's keys
//! stay optional ([`super::limits::LimitsTable`], the parser's tables).

use super::limits::{Instances, MAX_INSTANCES};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::time::Duration;

/// Deserializes a value of `T` as serde does, present.
pub(crate) fn plain<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Deserializes a size: bytes as an integer, or a string like "64 MiB".
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(Some(n)),
        Raw::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|b| Some(b.as_u64()))
            .map_err(|_| {
                de::Error::custom(format!(
                    "{text:?} is not a size; write e.g. \"64 MiB\" or a number of bytes"
                ))
            }),
    }
}

/// Deserializes a memory limit: a size of at least 1 MiB (a guest's stack
/// and data alone take more).
pub(crate) fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bytes = size(d)?;
    if bytes.is_some_and(|n| n < 1024 * 1024) {
        return Err(de::Error::custom(
            "must be at least 1 MiB; write e.g. \"64 MiB\"",
        ));
    }
    Ok(bytes)
}

/// Deserializes `instances`: a count from 1 to [`MAX_INSTANCES`], or
/// `"auto"`.
pub(crate) fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instances>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(i64),
        Word(String),
    }
    let text = match Raw::deserialize(d).map_err(|_| {
        de::Error::custom(format!(
            "must be \"auto\" or a count from 1 to {MAX_INSTANCES}"
        ))
    })? {
        Raw::Count(n) => n.to_string(),
        Raw::Word(word) => word,
    };
    text.parse().map(Some).map_err(de::Error::custom)
}

/// Deserializes a count that must not be zero.
pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// Deserializes a duration that must be at least a millisecond.
pub(crate) fn at_least_a_millisecond<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let value = duration(d)?;
    if value.is_some_and(|v| v < Duration::from_millis(1)) {
        return Err(de::Error::custom("must be at least 1ms"));
    }
    Ok(value)
}

/// Deserializes a duration written like "250ms", "2s", "1m".
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not a duration; write e.g. \"250ms\", \"2s\" or \"1m\""
        ))
    })
}
