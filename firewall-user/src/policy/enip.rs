//! EtherNet/IP rules of a conduit: encapsulation commands, CIP services (POLICY.md table),
//! tags, explicit (class, services) objects and implicit I/O, resolved for the datapath.

use std::collections::{BTreeMap, BTreeSet};

use firewall_common::enip::{
    tag_hash, EnipRule, ENIP_RULE_ALL_SERVICES, ENIP_RULE_IO, ENIP_RULE_PRESENT, ENIP_RULE_TAGS,
    TAG_MAX,
};

use super::model::{self, Scalar};
use super::source::{child, item, Diagnostics};

/// Explicit messaging, TCP and UDP.
pub const DEFAULT_PORT: u16 = 44818;
/// Class 0/1 implicit I/O.
pub const IO_PORT: u16 = 2222;

/// The service code a refused request carries to the target (`on_deny: refuse`): 0x7F is in
/// the range CIP (Vol. 1, Appendix A) reserves (0x64-0x7F), so no object implements it and the
/// target answers an error (general status 0x08, service not supported) without acting.
pub const REFUSE_SERVICE: u8 = 0x7F;
/// The general status the client gets for a refused request: 0x0F, privilege violation (the
/// request was understood and is not permitted).
pub const REFUSE_STATUS: u8 = 0x0F;

/// Encapsulation command names.
pub const COMMANDS: &[(&str, u16)] = &[
    ("nop", 0x0000),
    ("list_services", 0x0004),
    ("list_identity", 0x0063),
    ("list_interfaces", 0x0064),
    ("register_session", 0x0065),
    ("unregister_session", 0x0066),
    ("send_rr_data", 0x006F),
    ("send_unit_data", 0x0070),
    ("indicate_status", 0x0072),
    ("cancel", 0x0073),
];

/// `commands: [default]`, also what a rule without `commands` gets.
pub const DEFAULT_COMMANDS: &[&str] = &[
    "list_identity",
    "list_services",
    "list_interfaces",
    "register_session",
    "unregister_session",
    "send_rr_data",
    "send_unit_data",
];

pub const MESSAGE_ROUTER: u16 = 0x02;
pub const CONNECTION_MANAGER: u16 = 0x06;
pub const PCCC_OBJECT: u16 = 0x67;
pub const SYMBOL_CLASS: u16 = 0x6B;

/// Services from this code up are class-specific: a bare number would be ambiguous.
pub const FIRST_CLASS_SPECIFIC_SERVICE: u8 = 0x31;

/// What a service name addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CipTarget {
    /// The service means the same on every class.
    AnyClass,
    /// Only this class.
    Class(u16),
    /// A symbolic (tag) path, or the Symbol class (0x6B).
    Symbolic,
}

impl CipTarget {
    pub fn matches_class(self, class: u16) -> bool {
        match self {
            CipTarget::AnyClass => true,
            CipTarget::Class(c) => c == class,
            CipTarget::Symbolic => class == SYMBOL_CLASS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CipService {
    pub code: u8,
    pub target: CipTarget,
}

const fn any(code: u8) -> CipService {
    CipService {
        code,
        target: CipTarget::AnyClass,
    }
}
const fn class(code: u8, class: u16) -> CipService {
    CipService {
        code,
        target: CipTarget::Class(class),
    }
}
const fn symbolic(code: u8) -> CipService {
    CipService {
        code,
        target: CipTarget::Symbolic,
    }
}

/// CIP service names.
pub const SERVICES: &[(&str, CipService)] = &[
    ("get_attributes_all", any(0x01)),
    ("set_attributes_all", any(0x02)),
    ("get_attribute_list", any(0x03)),
    ("set_attribute_list", any(0x04)),
    ("reset", any(0x05)),
    ("start", any(0x06)),
    ("stop", any(0x07)),
    ("create", any(0x08)),
    ("delete", any(0x09)),
    ("multiple_service_packet", class(0x0A, MESSAGE_ROUTER)),
    ("apply_attributes", any(0x0D)),
    ("get_attribute_single", any(0x0E)),
    ("set_attribute_single", any(0x10)),
    ("restore", any(0x15)),
    ("save", any(0x16)),
    ("execute_pccc", class(0x4B, PCCC_OBJECT)),
    ("read_tag", symbolic(0x4C)),
    ("write_tag", symbolic(0x4D)),
    ("read_modify_write_tag", symbolic(0x4E)),
    ("read_tag_fragmented", symbolic(0x52)),
    ("write_tag_fragmented", symbolic(0x53)),
    ("get_instance_attribute_list", class(0x55, SYMBOL_CLASS)),
    ("forward_close", class(0x4E, CONNECTION_MANAGER)),
    ("unconnected_send", class(0x52, CONNECTION_MANAGER)),
    ("forward_open", class(0x54, CONNECTION_MANAGER)),
    ("large_forward_open", class(0x5B, CONNECTION_MANAGER)),
];

const READ: &[&str] = &[
    "get_attributes_all",
    "get_attribute_list",
    "get_attribute_single",
    "read_tag",
    "read_tag_fragmented",
    "get_instance_attribute_list",
    "multiple_service_packet",
    "unconnected_send",
    "forward_open",
    "large_forward_open",
    "forward_close",
];
const WRITE: &[&str] = &[
    "set_attributes_all",
    "set_attribute_list",
    "set_attribute_single",
    "write_tag",
    "write_tag_fragmented",
    "read_modify_write_tag",
];
const ADMIN: &[&str] = &[
    "reset",
    "start",
    "stop",
    "create",
    "delete",
    "apply_attributes",
    "restore",
    "save",
    "execute_pccc",
];
const PRESETS: &[(&str, &[&str])] = &[("read", READ), ("write", WRITE), ("admin", ADMIN)];

fn service(name: &str) -> Option<CipService> {
    SERVICES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Allowed EtherNet/IP traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnipRules {
    pub port: u16,
    pub commands: BTreeSet<u16>,
    /// `services: [all]`: every service on every class.
    pub all_services: bool,
    pub services: BTreeSet<CipService>,
    /// Symbolic tag allowlist for tag services (`*` matches any run of characters); `None`
    /// allows every tag.
    pub tags: Option<Vec<String>>,
    /// Explicit class -> service codes.
    pub objects: BTreeMap<u16, BTreeSet<u8>>,
    pub io: bool,
    /// `on_deny: refuse`: the reserved service code a refused request is given, and the general
    /// status its answer is given for the client.
    pub refuse_service: u8,
    pub refuse_status: u8,
}

impl EnipRules {
    /// Whether `wanted` may be sent to some class (by name or through `objects`).
    pub fn allows(&self, wanted: CipService) -> bool {
        self.all_services
            || self.services.contains(&wanted)
            || self.objects.iter().any(|(&class, codes)| {
                codes.contains(&wanted.code) && wanted.target.matches_class(class)
            })
    }

    /// These rules narrowed to the `read` preset (lockdown): of the services they allow, the
    /// read services stay (named or through `objects`, on the same classes); commands, tags and
    /// I/O stay as they are (cyclic I/O keeps the process running; isolating a zone stops it).
    pub fn read_only(&self) -> EnipRules {
        let read: Vec<CipService> = READ.iter().filter_map(|n| service(n)).collect();
        let services = read
            .iter()
            .copied()
            .filter(|s| self.all_services || self.services.contains(s))
            .collect();
        let objects = self
            .objects
            .iter()
            .map(|(&class, codes)| {
                let kept: BTreeSet<u8> = codes
                    .iter()
                    .copied()
                    .filter(|&c| {
                        read.iter()
                            .any(|s| s.code == c && s.target.matches_class(class))
                    })
                    .collect();
                (class, kept)
            })
            .filter(|(_, codes)| !codes.is_empty())
            .collect();
        EnipRules {
            all_services: false,
            services,
            objects,
            ..self.clone()
        }
    }

    /// Whether any service that changes data or device state is allowed (lint input).
    pub fn grants_write_or_admin(&self) -> bool {
        WRITE
            .iter()
            .chain(ADMIN)
            .filter_map(|n| service(n))
            .any(|s| self.allows(s))
    }

    /// Whether a Forward_Open can open the connections `io` admits.
    pub fn opens_connections(&self) -> bool {
        ["forward_open", "large_forward_open"]
            .iter()
            .filter_map(|n| service(n))
            .any(|s| self.allows(s))
    }
}

/// Resolves a conduit's `enip:` entry at `path`; reports each problem and returns `None` if
/// there was any.
pub fn resolve(doc: &model::Enip, path: &str, diagnostics: &mut Diagnostics) -> Option<EnipRules> {
    let mut ok = true;
    let mut report = |at: String, error: String| {
        diagnostics.error(&at, error);
        ok = false;
    };
    let mut rules = EnipRules {
        port: DEFAULT_PORT,
        io: doc.io.unwrap_or(false),
        refuse_service: REFUSE_SERVICE,
        refuse_status: REFUSE_STATUS,
        ..EnipRules::default()
    };
    if let Some(refuse) = &doc.refuse {
        let path = child(path, "refuse");
        if let Some(service) = &refuse.service {
            match reserved_service(service) {
                Ok(code) => rules.refuse_service = code,
                Err(e) => report(child(&path, "service"), e),
            }
        }
        if let Some(status) = &refuse.status {
            match status.number_in("general status", 1, 255) {
                Ok(code) => rules.refuse_status = code as u8,
                Err(e) => report(child(&path, "status"), e),
            }
        }
    }
    if let Some(port) = &doc.port {
        match port.number_in("port", 1, 65535) {
            Ok(p) => rules.port = p as u16,
            Err(e) => report(child(path, "port"), e),
        }
    }
    let default_commands = [Scalar::Text("default".into())];
    let commands = doc.commands.as_deref().unwrap_or(&default_commands);
    for (i, command) in commands.iter().enumerate() {
        match add_command(&mut rules, command) {
            Ok(()) => {}
            Err(e) => report(item(&child(path, "commands"), i), e),
        }
    }
    for (i, name) in doc.services.iter().flatten().enumerate() {
        if let Err(e) = add_service(&mut rules, name) {
            report(item(&child(path, "services"), i), e);
        }
    }
    if let Some(tags) = &doc.tags {
        for (i, tag) in tags.iter().enumerate() {
            if let Err(e) = check_tag(tag) {
                report(item(&child(path, "tags"), i), e);
            }
        }
        rules.tags = Some(tags.clone());
    }
    for (i, object) in doc.objects.iter().flatten().enumerate() {
        let path = item(&child(path, "objects"), i);
        let Some(class) = &object.class else {
            report(path, "CIP object needs `class`, e.g. `class: 0x01`".into());
            continue;
        };
        let class = match class.number_in("CIP class", 0, 0xFFFF) {
            Ok(c) => c as u16,
            Err(e) => {
                report(child(&path, "class"), e);
                continue;
            }
        };
        let Some(services) = &object.services else {
            report(path, "CIP object needs `services`, names or numbers".into());
            continue;
        };
        let mut codes = BTreeSet::new();
        for (j, s) in services.iter().enumerate() {
            match object_service(class, s) {
                Ok(code) => {
                    codes.insert(code);
                }
                Err(e) => report(item(&child(&path, "services"), j), e),
            }
        }
        rules.objects.entry(class).or_default().extend(codes);
    }
    ok.then_some(rules)
}

/// A service code a refused request may be given: one CIP reserves (0x64-0x7F), so no object
/// implements it.
fn reserved_service(value: &Scalar) -> Result<u8, String> {
    let code = value.number_in("CIP service code", 0, 0x7F)? as u8;
    if code < 0x64 {
        return Err(format!(
            "service 0x{code:02X} may be implemented by an object (common, vendor-specific or              class-specific): a refused request must carry a reserved code (0x64-0x7F) no              object acts on, e.g. 0x{REFUSE_SERVICE:02X}"
        ));
    }
    Ok(code)
}

fn add_command(rules: &mut EnipRules, command: &Scalar) -> Result<(), String> {
    match command.text() {
        Some("default") => {
            let defaults = COMMANDS
                .iter()
                .filter(|(n, _)| DEFAULT_COMMANDS.contains(n));
            rules.commands.extend(defaults.map(|(_, c)| *c));
        }
        Some(name) if command.number().is_none() => {
            let Some((_, code)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "unknown encapsulation command `{name}`; expected `default`, a name ({}) or \
                     a number",
                    names(COMMANDS.iter().map(|c| c.0))
                ));
            };
            rules.commands.insert(*code);
        }
        _ => {
            let code = command.number_in("encapsulation command", 0, 0xFFFF)?;
            rules.commands.insert(code as u16);
        }
    }
    Ok(())
}

fn add_service(rules: &mut EnipRules, name: &Scalar) -> Result<(), String> {
    let text = name.text().filter(|_| name.number().is_none());
    if text == Some("all") {
        rules.all_services = true;
    } else if let Some(preset) = PRESETS.iter().find(|(n, _)| Some(*n) == text) {
        rules
            .services
            .extend(preset.1.iter().filter_map(|n| service(n)));
    } else if let Some(text) = text {
        let found = service(text).ok_or_else(|| {
            format!(
                "unknown CIP service `{text}`; expected a preset (read, write, admin, all) or a \
                 name ({})",
                names(SERVICES.iter().map(|s| s.0))
            )
        })?;
        rules.services.insert(found);
    } else {
        let code = name.number_in("CIP service", 0, 0x7F)? as u8;
        if code >= FIRST_CLASS_SPECIFIC_SERVICE {
            return Err(format!(
                "CIP service 0x{code:02X} means something different on every class; name it \
                 or list it under `objects` with its class"
            ));
        }
        rules.services.insert(any(code));
    }
    Ok(())
}

/// A service listed for an explicit class: a number, or a name that applies to that class.
fn object_service(class: u16, name: &Scalar) -> Result<u8, String> {
    match name.text().filter(|_| name.number().is_none()) {
        None => Ok(name.number_in("CIP service", 0, 0x7F)? as u8),
        Some(text) => {
            let found = service(text).ok_or_else(|| {
                format!(
                    "unknown CIP service `{text}`; expected a number or a name ({})",
                    names(SERVICES.iter().map(|s| s.0))
                )
            })?;
            if !found.target.matches_class(class) {
                let target = match found.target {
                    CipTarget::Class(c) => format!("class 0x{c:02X}"),
                    _ => format!("the Symbol class 0x{SYMBOL_CLASS:02X} or a tag path"),
                };
                return Err(format!(
                    "`{text}` is a service of {target}, not of class 0x{class:02X}"
                ));
            }
            Ok(found.code)
        }
    }
}

/// Logix tag names: letters, digits, `_`, members (`.`), program scope (`Program:Main.x`),
/// array indexes; `*` is a wildcard.
fn check_tag(tag: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:[]*,".contains(c);
    if tag.is_empty() {
        return Err("empty tag name".into());
    }
    match tag.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!(
            "tag `{tag}` contains `{c}`; tags use letters, digits, `_`, `.`, `:`, `[]` and the \
             wildcard `*`"
        )),
        None => Ok(()),
    }
}

fn names<'a>(list: impl Iterator<Item = &'a str>) -> String {
    list.collect::<Vec<_>>().join(", ")
}

/// An `enip:` rule as the datapath holds it: the rule itself, the services allowed per class,
/// and the allowed tag hashes (`(prefix length, hash)`, length 0 for exact names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnipMaps {
    pub rule: EnipRule,
    pub classes: Vec<(u16, [u64; 2])>,
    pub tags: Vec<(u8, u64)>,
}

fn set(bits: &mut [u64], n: usize) {
    bits[n / 64] |= 1 << (n % 64);
}

/// Compiles `rules` for the datapath; `Err((key, message))` when they do not fit it.
///
/// Tags: an exact name becomes the 64-bit FNV-1a hash of its lowercased bytes; `prefix*`
/// the hash of the prefix with its length. The datapath hashes the requested name (symbolic
/// segments joined with `.`) the same way and looks the hashes up in the rule's own set, so a
/// collision can only let a name pass as another name of the same allowlist's hash space: with
/// n patterns the chance that a given unlisted name collides is about n / 2^64.
pub fn to_map(rules: &EnipRules) -> Result<EnipMaps, (String, String)> {
    let mut rule = EnipRule {
        flags: ENIP_RULE_PRESENT,
        refuse_service: rules.refuse_service,
        refuse_status: rules.refuse_status,
        ..EnipRule::default()
    };
    for &c in &rules.commands {
        if c > 0xFF {
            return Err((
                "commands".into(),
                format!(
                    "encapsulation command 0x{c:04X} is reserved; the datapath checks commands \
                     0x0000-0x00FF"
                ),
            ));
        }
        set(&mut rule.commands, c as usize);
    }
    if rules.all_services {
        rule.flags |= ENIP_RULE_ALL_SERVICES;
    }
    if rules.io {
        rule.flags |= ENIP_RULE_IO;
    }
    let mut classes: BTreeMap<u16, [u64; 2]> = BTreeMap::new();
    for s in &rules.services {
        let code = s.code as usize & 0x7F;
        match s.target {
            CipTarget::AnyClass => set(&mut rule.any_class, code),
            CipTarget::Class(c) => set(classes.entry(c).or_default(), code),
            CipTarget::Symbolic => set(classes.entry(SYMBOL_CLASS).or_default(), code),
        }
    }
    for (&class, codes) in &rules.objects {
        for &code in codes {
            set(classes.entry(class).or_default(), code as usize & 0x7F);
        }
    }
    let mut tags = Vec::new();
    if let Some(patterns) = &rules.tags {
        if !patterns.iter().any(|p| p == "*") {
            rule.flags |= ENIP_RULE_TAGS;
            for p in patterns {
                let (name, prefix) = match p.strip_suffix('*') {
                    Some(prefix) => (prefix, true),
                    None => (p.as_str(), false),
                };
                if name.contains('*') {
                    return Err((
                        "tags".into(),
                        format!("tag pattern `{p}`: only a trailing `*` (a prefix) is supported"),
                    ));
                }
                if name.contains('[') || name.contains(']') {
                    return Err((
                        "tags".into(),
                        format!(
                            "tag pattern `{p}`: array elements are not matched separately; \
                             list the array tag (it allows all its elements)"
                        ),
                    ));
                }
                let len = name.len();
                if len as u32 > TAG_MAX || (prefix && len >= 64) {
                    return Err((
                        "tags".into(),
                        format!("tag pattern `{p}` is longer than the {TAG_MAX} bytes the datapath matches"),
                    ));
                }
                if prefix {
                    rule.prefix_lengths |= 1 << len;
                    tags.push((len as u8, tag_hash(name.as_bytes())));
                } else {
                    tags.push((0, tag_hash(name.as_bytes())));
                }
            }
        }
    }
    Ok(EnipMaps {
        rule,
        classes: classes.into_iter().collect(),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Scalar {
        Scalar::Text(t.into())
    }

    fn services(list: &[Scalar]) -> Result<EnipRules, String> {
        let mut rules = EnipRules::default();
        for s in list {
            add_service(&mut rules, s)?;
        }
        Ok(rules)
    }

    #[test]
    fn default_commands() {
        let mut rules = EnipRules::default();
        add_command(&mut rules, &text("default")).unwrap();
        assert_eq!(
            rules.commands.into_iter().collect::<Vec<_>>(),
            vec![0x04, 0x63, 0x64, 0x65, 0x66, 0x6F, 0x70]
        );
    }

    #[test]
    fn read_preset_carries_its_containers_and_connections() {
        let rules = services(&[text("read")]).unwrap();
        assert_eq!(rules.services.len(), READ.len());
        assert!(rules.allows(class(0x54, CONNECTION_MANAGER)));
        assert!(rules.allows(symbolic(0x4C)));
        assert!(!rules.allows(symbolic(0x4D)));
        assert!(!rules.grants_write_or_admin());
        assert!(rules.opens_connections());
    }

    #[test]
    fn class_specific_codes_are_distinguished_by_target() {
        // 0x4E is read_modify_write_tag on tags and forward_close on the Connection Manager.
        let rules = services(&[text("forward_close")]).unwrap();
        assert!(!rules.allows(symbolic(0x4E)));
        assert!(rules.allows(class(0x4E, CONNECTION_MANAGER)));
    }

    #[test]
    fn numbers_only_for_generic_services() {
        assert!(services(&[Scalar::Number(0x0E)]).unwrap().allows(any(0x0E)));
        let err = services(&[Scalar::Number(0x4C)]).unwrap_err();
        assert!(
            err.contains("0x4C means something different on every class"),
            "{err}"
        );
        assert!(services(&[text("raed")])
            .unwrap_err()
            .starts_with("unknown CIP service `raed`"));
    }

    #[test]
    fn write_and_admin_detection_includes_objects() {
        assert!(services(&[text("write")]).unwrap().grants_write_or_admin());
        assert!(services(&[text("admin")]).unwrap().grants_write_or_admin());
        assert!(services(&[text("all")]).unwrap().grants_write_or_admin());
        let mut rules = EnipRules::default();
        rules.objects.insert(0x01, [0x10].into());
        assert!(rules.grants_write_or_admin());
    }

    #[test]
    fn object_services_must_belong_to_the_class() {
        assert_eq!(object_service(0x06, &text("forward_open")), Ok(0x54));
        assert_eq!(object_service(0x6B, &text("read_tag")), Ok(0x4C));
        assert_eq!(
            object_service(0x01, &text("get_attribute_single")),
            Ok(0x0E)
        );
        assert_eq!(
            object_service(0x01, &text("forward_open")),
            Err("`forward_open` is a service of class 0x06, not of class 0x01".into())
        );
        assert_eq!(object_service(0x01, &Scalar::Number(0x4C)), Ok(0x4C));
    }

    #[test]
    fn tags() {
        assert!(check_tag("Program:Main.Line1_*").is_ok());
        assert!(check_tag("Recipe[3].Setpoint").is_ok());
        assert!(check_tag("").is_err());
        assert!(check_tag("bad tag").unwrap_err().contains("contains ` `"));
    }
}
