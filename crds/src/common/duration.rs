//! `google.protobuf.Duration` as Istio's YAML spells it: `"1.5s"`, `"100ms"`,
//! `"1h30m"`.
//!
//! The API server checks Istio's durations with CEL's `duration()`, which
//! takes Go duration syntax, so we accept the same grammar (a sequence of
//! decimal numbers, each with a unit `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`,
//! or a lone `0`) and write the protobuf JSON form back (`"90s"`,
//! `"0.25s"`). The CRD schema carries [`Duration::PATTERN`], so anything
//! the API server admits also parses here.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time, read from Go/protobuf duration text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct InvalidDuration {
    text: String,
    reason: &'static str,
}

impl Duration {
    /// The regular expression the CRD schema checks; [`Duration::from_str`]
    /// accepts exactly these strings (bar numbers too large to represent).
    pub const PATTERN: &'static str = r"^(0|([0-9]+(\.[0-9]+)?(h|m|s|ms|us|µs|ns))+)$";

    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

const UNITS: [(&str, u128); 7] = [
    // Longest first, so "ms" is not read as "m" followed by "s".
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
];

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| InvalidDuration {
            text: text.to_owned(),
            reason,
        };
        if text == "0" {
            return Ok(Self::default());
        }
        if text.is_empty() {
            return Err(fail("empty"));
        }
        let mut rest = text;
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            if int_len == 0 {
                return Err(fail("expected a number"));
            }
            let (int, after) = rest.split_at(int_len);
            let (frac, after) = match after.strip_prefix('.') {
                Some(after) => {
                    let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
                    if frac_len == 0 {
                        return Err(fail("expected digits after '.'"));
                    }
                    after.split_at(frac_len)
                }
                None => ("", after),
            };
            let (unit, scale) = UNITS
                .iter()
                .find(|(unit, _)| after.starts_with(unit))
                .ok_or_else(|| fail("expected a unit (h, m, s, ms, us, ns)"))?;
            rest = &after[unit.len()..];
            let int: u128 = int.parse().map_err(|_| fail("number too large"))?;
            let mut part = int.checked_mul(*scale).ok_or_else(|| fail("too large"))?;
            // Fractional digits beyond nanosecond precision are dropped.
            let mut place = *scale;
            for digit in frac.bytes() {
                place /= 10;
                part += u128::from(digit - b'0') * place;
            }
            nanos = nanos.checked_add(part).ok_or_else(|| fail("too large"))?;
        }
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| fail("too large"))?;
        let subsec = (nanos % 1_000_000_000) as u32;
        Ok(Self(std::time::Duration::new(secs, subsec)))
    }
}

/// Protobuf's JSON form: whole seconds, then the fraction without trailing
/// zeros, then `s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            return write!(f, "{secs}s");
        }
        let frac = format!("{nanos:09}");
        write!(f, "{secs}.{}s", frac.trim_end_matches('0'))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": Self::PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, InvalidDuration> {
        text.parse()
    }

    #[test]
    fn reads_protobuf_and_go_forms() {
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("0").unwrap(), Duration::default());
        assert_eq!(
            parse("1µs").unwrap(),
            Duration(std::time::Duration::from_micros(1))
        );
        assert_eq!(
            parse("0.000000001s").unwrap(),
            Duration(std::time::Duration::from_nanos(1))
        );
    }

    #[test]
    fn rejects_what_the_pattern_rejects() {
        for bad in ["", "5", "s", "-1s", "1.s", ".5s", "1x", "1s2", "1 s"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("99999999999999999999999999999999999999h").is_err());
    }

    #[test]
    fn writes_protobuf_json() {
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(Duration::from_millis(1500).to_string(), "1.5s");
        assert_eq!(Duration::from_millis(1).to_string(), "0.001s");
        assert_eq!(parse("1m30s").unwrap().to_string(), "90s");
    }
}
