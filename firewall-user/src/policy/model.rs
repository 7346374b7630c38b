//! The policy document as written: serde types read with serde_yaml.
//!
//! Everything an operator can get wrong in a way worth explaining is kept loose here (names and
//! numbers as [`Scalar`], required keys as `Option`), so that one mistake does not hide the
//! next: `validate` checks them all and says where each one is. Only the structure (a list where
//! a mapping belongs, a keyword that is not one) is left to serde, which stops at the first.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::source::{child, item, Diagnostics, Position};

#[derive(Debug, Default, serde::Deserialize)]
pub struct Document {
    pub version: Option<Scalar>,
    pub gateway: Option<Gateway>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub zones: IndexMap<String, Zone>,
    #[serde(default)]
    pub conduits: Vec<Conduit>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Gateway {
    pub bridge: Option<String>,
    pub interfaces: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Defaults {
    pub action: Option<Action>,
    pub intra_zone: Option<Action>,
    pub unzoned: Option<Action>,
    pub non_ip: Option<Vec<Scalar>>,
    pub midstream: Option<Midstream>,
    pub mode: Option<Mode>,
    pub on_deny: Option<OnDeny>,
    /// Addition to POLICY.md (documented in policies/README.md): flow idle timeouts.
    pub timeouts: Option<Timeouts>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Timeouts {
    pub udp: Option<Scalar>,
    pub tcp: Option<Scalar>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Midstream {
    Adopt,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Monitor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDeny {
    Drop,
    Reset,
    /// Inspected requests the rule refuses are answered in-band (a Modbus exception) and the
    /// connection is kept; other denials fall back to drop.
    Refuse,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Zone {
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    pub security_level: Option<Scalar>,
    pub description: Option<String>,
    #[serde(default)]
    pub hosts: IndexMap<String, String>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Conduit {
    pub name: Option<String>,
    /// Addition to POLICY.md: free text, like a zone's.
    pub description: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub mode: Option<Mode>,
    pub on_deny: Option<OnDeny>,
    pub allow: Option<Vec<AllowItem>>,
}

/// One entry of `allow`: exactly one of the protocol keys. A key given without a value
/// (`- icmp:`) is present with its defaults, so that the "exactly one" check sees it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AllowItem {
    #[serde(default, deserialize_with = "present")]
    pub tcp: Option<Ports>,
    #[serde(default, deserialize_with = "present")]
    pub udp: Option<Ports>,
    #[serde(default, deserialize_with = "present")]
    pub icmp: Option<Icmp>,
    #[serde(default, deserialize_with = "present")]
    pub modbus: Option<Modbus>,
    #[serde(default, deserialize_with = "present")]
    pub enip: Option<Enip>,
}

fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Ports {
    pub ports: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Icmp {
    pub types: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Modbus {
    pub port: Option<Scalar>,
    pub units: Option<Vec<Scalar>>,
    pub functions: Option<Vec<Scalar>>,
    pub addresses: Option<ModbusAddresses>,
    /// Addition to POLICY.md: how `on_deny: refuse` refuses (policies/README.md).
    pub refuse: Option<ModbusRefuse>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ModbusRefuse {
    /// The unassigned function code a refused request is given on its way to the server.
    pub function: Option<Scalar>,
    /// The exception code the client gets.
    pub exception: Option<Scalar>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ModbusAddresses {
    pub coils: Option<Vec<Scalar>>,
    pub discrete_inputs: Option<Vec<Scalar>>,
    pub holding_registers: Option<Vec<Scalar>>,
    pub input_registers: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Enip {
    pub port: Option<Scalar>,
    pub commands: Option<Vec<Scalar>>,
    pub services: Option<Vec<Scalar>>,
    pub tags: Option<Vec<String>>,
    pub objects: Option<Vec<CipObject>>,
    pub io: Option<bool>,
    /// Addition to POLICY.md: how `on_deny: refuse` refuses (policies/README.md).
    pub refuse: Option<EnipRefuse>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct EnipRefuse {
    /// The reserved service code a refused request is given on its way to the target.
    pub service: Option<Scalar>,
    /// The general status the client gets.
    pub status: Option<Scalar>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct CipObject {
    pub class: Option<Scalar>,
    pub services: Option<Vec<Scalar>>,
}

/// A YAML scalar that may be a name or a number (`502`, `0x88cc`, `"8000-8100"`, `read`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scalar {
    Number(i64),
    Text(String),
}

impl Scalar {
    /// The number this scalar spells, decimal or `0x` hexadecimal, also when quoted.
    pub fn number(&self) -> Option<i64> {
        match self {
            Scalar::Number(n) => Some(*n),
            Scalar::Text(t) => parse_number(t),
        }
    }

    /// The number this scalar spells, if it lies in `lo..=hi`; `what` names it in the error.
    pub fn number_in(&self, what: &str, lo: i64, hi: i64) -> Result<i64, String> {
        match self.number() {
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            Some(n) => Err(format!("{what} {n} is out of range {lo}..{hi}")),
            None => Err(format!("{what} `{self}` is not a number")),
        }
    }

    /// A number or a `"lo-hi"` range (both ends included), inside `lo..=hi`.
    pub fn range_in(&self, what: &str, lo: i64, hi: i64) -> Result<(i64, i64), String> {
        let Some((first, last)) = self.text().and_then(|t| t.split_once('-')) else {
            return self.number_in(what, lo, hi).map(|n| (n, n));
        };
        let first = Scalar::Text(first.to_string()).number_in(what, lo, hi)?;
        let last = Scalar::Text(last.to_string()).number_in(what, lo, hi)?;
        if first > last {
            return Err(format!(
                "{what} range `{self}` runs backwards; write it as {last}-{first}"
            ));
        }
        Ok((first, last))
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Scalar::Text(t) => Some(t),
            Scalar::Number(_) => None,
        }
    }
}

/// Parses `123` or `0x7b` (any case, surrounding blanks ignored).
pub fn parse_number(text: &str) -> Option<i64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Text(t) => f.write_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                // Too large for any field; kept as text so validation names the value.
                Ok(i64::try_from(v).map_or_else(|_| Scalar::Text(v.to_string()), Scalar::Number))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Reads `text` into a [`Document`]. Every unknown key is reported; a structural error is
/// reported and ends the reading (`None`).
pub fn read(text: &str, diagnostics: &mut Diagnostics) -> Option<Document> {
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
        unknown.push(segments(&path))
    });
    for path in unknown {
        let (parent, key) = path.split_at(path.len() - 1);
        let path_text = render(&path);
        let message = match (&key[0], context(parent)) {
            (Segment::Key(key), Some((what, fields))) => format!(
                "unknown key `{key}` in {what}; expected one of: {}",
                fields.join(", ")
            ),
            (Segment::Key(key), None) => format!("unknown key `{key}`"),
            (Segment::Index(_), _) => "unexpected item".to_string(),
        };
        diagnostics.key_error(&path_text, message);
    }
    match result {
        Ok(document) => Some(document),
        Err(error) => {
            let message = error.to_string();
            // The source map reports every duplicate key, at the right place.
            if !message.contains("duplicate field") {
                let (message, at) = match error.location() {
                    Some(l) => (
                        message
                            .rsplit_once(" at line ")
                            .map_or(message.as_str(), |(m, _)| m)
                            .to_string(),
                        Position {
                            line: l.line(),
                            col: l.column(),
                        },
                    ),
                    None => (message, Position::START),
                };
                diagnostics.push(at, super::source::Severity::Error, message);
            }
            None
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path) -> Vec<Segment> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Segment::Index(*index));
            v
        }
        Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Segment::Key(key.clone()));
            v
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

fn render(path: &[Segment]) -> String {
    path.iter()
        .fold(String::new(), |acc, segment| match segment {
            Segment::Key(k) => child(&acc, k),
            Segment::Index(i) => item(&acc, *i),
        })
}

/// What the mapping at `parent` is, and the keys it may have.
fn context(parent: &[Segment]) -> Option<(&'static str, &'static [&'static str])> {
    // Indexes and zone names vary; the shape does not.
    let shape =
        parent
            .iter()
            .enumerate()
            .fold(String::new(), |acc, (depth, segment)| match segment {
                Segment::Index(_) => format!("{acc}[]"),
                Segment::Key(_) if depth == 1 && acc == "zones" => child(&acc, "*"),
                Segment::Key(k) => child(&acc, k),
            });
    let allow = shape.strip_prefix("conduits[].allow[]");
    Some(match (shape.as_str(), allow) {
        ("", _) => ("the policy", fields_of::<Document>()),
        ("gateway", _) => ("gateway", fields_of::<Gateway>()),
        ("defaults", _) => ("defaults", fields_of::<Defaults>()),
        ("defaults.timeouts", _) => ("defaults.timeouts", fields_of::<Timeouts>()),
        ("zones.*", _) => ("zone", fields_of::<Zone>()),
        ("conduits[]", _) => ("conduit", fields_of::<Conduit>()),
        (_, Some("")) => ("allow item", fields_of::<AllowItem>()),
        (_, Some(".tcp" | ".udp")) => ("port rule", fields_of::<Ports>()),
        (_, Some(".icmp")) => ("icmp rule", fields_of::<Icmp>()),
        (_, Some(".modbus")) => ("modbus rule", fields_of::<Modbus>()),
        (_, Some(".modbus.addresses")) => ("modbus addresses", fields_of::<ModbusAddresses>()),
        (_, Some(".modbus.refuse")) => ("modbus refuse", fields_of::<ModbusRefuse>()),
        (_, Some(".enip.refuse")) => ("enip refuse", fields_of::<EnipRefuse>()),
        (_, Some(".enip")) => ("enip rule", fields_of::<Enip>()),
        (_, Some(".enip.objects[]")) => ("CIP object", fields_of::<CipObject>()),
        _ => return None,
    })
}

/// The keys a struct accepts, as serde's derive declares them, so that the "expected one of"
/// list can never drift from the types.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Catch(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Catch {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("fields caught"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut catch = Catch(&[]);
    let _ = T::deserialize(&mut catch);
    catch.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::source::SourceMap;

    fn read_str(text: &str) -> (Option<Document>, Vec<String>) {
        let (map, _) = SourceMap::parse(text).unwrap();
        let mut diagnostics = Diagnostics::new("p.yaml", &map);
        let document = read(text, &mut diagnostics);
        let messages = diagnostics
            .into_sorted()
            .iter()
            .map(ToString::to_string)
            .collect();
        (document, messages)
    }

    #[test]
    fn field_lists_come_from_the_types() {
        assert_eq!(fields_of::<Ports>(), &["ports"]);
        assert_eq!(
            fields_of::<Gateway>(),
            &["bridge", "interfaces"],
            "field order follows the struct"
        );
    }

    #[test]
    fn scalars_accept_numbers_and_names() {
        let v: Vec<Scalar> =
            serde_yaml::from_str("[1, 0x88cc, \"0x0806\", read, \"8/1\"]").unwrap();
        assert_eq!(v[0], Scalar::Number(1));
        assert_eq!(v[1], Scalar::Number(0x88cc));
        assert_eq!(v[2].number(), Some(0x0806));
        assert_eq!(v[3], Scalar::Text("read".into()));
        assert_eq!(v[4].number(), None);
    }

    #[test]
    fn numbers_and_ranges_are_range_checked() {
        let text = |t: &str| Scalar::Text(t.into());
        assert_eq!(text("10-20").range_in("port", 1, 65535), Ok((10, 20)));
        assert_eq!(Scalar::Number(7).range_in("port", 1, 65535), Ok((7, 7)));
        assert_eq!(
            text("20-10").range_in("port", 1, 65535),
            Err("port range `20-10` runs backwards; write it as 10-20".into())
        );
        assert_eq!(
            text("1-70000").range_in("port", 1, 65535),
            Err("port 70000 is out of range 1..65535".into())
        );
        assert_eq!(
            Scalar::Number(0).range_in("port", 1, 65535),
            Err("port 0 is out of range 1..65535".into())
        );
        assert_eq!(
            text("http").number_in("port", 1, 65535),
            Err("port `http` is not a number".into())
        );
    }

    #[test]
    fn a_protocol_key_without_value_is_present() {
        let (doc, messages) = read_str("conduits:\n  - allow:\n      - icmp:\n");
        assert!(messages.is_empty(), "{messages:?}");
        let doc = doc.unwrap();
        let item = &doc.conduits[0].allow.as_ref().unwrap()[0];
        assert!(item.icmp.is_some() && item.tcp.is_none());
    }

    #[test]
    fn every_unknown_key_is_reported_where_it_is() {
        let text = "\
version: 1
colour: red
zones:
  a:
    netwroks: []
conduits:
  - name: x
    allow:
      - tcp: { ports: [1], prot: 2 }
      - http: {}
";
        let (doc, messages) = read_str(text);
        assert!(doc.is_some());
        assert_eq!(
            messages,
            vec![
                "p.yaml:2:1: error: unknown key `colour` in the policy; expected one of: version, gateway, defaults, zones, conduits",
                "p.yaml:5:5: error: unknown key `netwroks` in zone; expected one of: networks, ports, security_level, description, hosts",
                "p.yaml:9:28: error: unknown key `prot` in port rule; expected one of: ports",
                "p.yaml:10:9: error: unknown key `http` in allow item; expected one of: tcp, udp, icmp, modbus, enip",
            ]
        );
    }

    #[test]
    fn serde_yaml_errors_at_the_end_stay_inside_the_file() {
        // yaml-rust2 reads this; serde_yaml's scanner fails at the end of the input, which it
        // places on a fourth line (after the `\r` break of line 2 and the last line, "= ").
        let text = "!1\n&a:\r:= ";
        let (doc, messages) = read_str(text);
        assert!(doc.is_none());
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("p.yaml:3:4: error: could not find expected ':'")),
            "{messages:?}"
        );
        assert!(
            messages.iter().all(|m| !m.starts_with("p.yaml:4:")),
            "{messages:?}"
        );
    }

    #[test]
    fn structural_errors_are_reported_at_serde_yaml_s_location() {
        let (doc, messages) = read_str("version: 1\ndefaults:\n  action: alow\n");
        assert!(doc.is_none());
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].starts_with("p.yaml:3:11: error: defaults.action: unknown variant `alow`"),
            "{messages:?}"
        );
    }
}
