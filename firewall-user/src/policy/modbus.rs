//! Modbus/TCP rules of a conduit: function names and presets (POLICY.md tables), unit ids and
//! address ranges, resolved into the form the datapath maps will be filled from.

use std::collections::{BTreeMap, BTreeSet};

use firewall_common::modbus::{
    AddressRange, ModbusRule, MAX_RANGES, RULE_DIAG_OTHERS, RULE_PRESENT, RULE_TABLE_LIMITED,
    TABLE_COILS, TABLE_DISCRETE_INPUTS, TABLE_HOLDING_REGISTERS, TABLE_INPUT_REGISTERS,
};

use super::model::{self, Scalar};
use super::source::{child, item, Diagnostics};

pub const DEFAULT_PORT: u16 = 502;

/// Function names: (name, code, sub-function or MEI type).
pub const FUNCTIONS: &[(&str, u8, Option<u16>)] = &[
    ("read_coils", 1, None),
    ("read_discrete_inputs", 2, None),
    ("read_holding_registers", 3, None),
    ("read_input_registers", 4, None),
    ("write_single_coil", 5, None),
    ("write_single_register", 6, None),
    ("read_exception_status", 7, None),
    ("diagnostics", 8, None),
    ("get_comm_event_counter", 11, None),
    ("get_comm_event_log", 12, None),
    ("write_multiple_coils", 15, None),
    ("write_multiple_registers", 16, None),
    ("report_server_id", 17, None),
    ("read_file_record", 20, None),
    ("write_file_record", 21, None),
    ("mask_write_register", 22, None),
    ("read_write_multiple_registers", 23, None),
    ("read_fifo_queue", 24, None),
    ("read_device_identification", 43, Some(14)),
    ("encapsulated_interface_transport", 43, None),
    ("umas", 90, None),
];

pub const DIAGNOSTICS: u8 = 8;
pub const ENCAPSULATED_INTERFACE_TRANSPORT: u8 = 43;
/// Diagnostics sub-functions left out of the `diagnostics` preset: they disturb the device
/// (restart communications, force listen only mode), so a policy must name them.
pub const DISRUPTIVE_DIAGNOSTICS: [u16; 2] = [1, 4];

const READ: &[u8] = &[1, 2, 3, 4, 20, 24];
const WRITE: &[u8] = &[5, 6, 15, 16, 21, 22, 23];
const DIAGNOSTICS_PRESET: &[u8] = &[7, 11, 12, 17];
const PROGRAM: &[u8] = &[40, 42, 90, 125, 126];
const PRESETS: &[&str] = &["read", "write", "diagnostics", "program", "all"];

/// Which sub-functions (diagnostics) or MEI types (43) of one function code are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubFunctions {
    Any,
    Only(BTreeSet<u16>),
    AllExcept(BTreeSet<u16>),
}

impl SubFunctions {
    fn union(self, other: SubFunctions) -> SubFunctions {
        use SubFunctions::*;
        let merged = match (self, other) {
            (Any, _) | (_, Any) => Any,
            (Only(a), Only(b)) => Only(&a | &b),
            (AllExcept(e), Only(o)) | (Only(o), AllExcept(e)) => AllExcept(&e - &o),
            (AllExcept(a), AllExcept(b)) => AllExcept(&a & &b),
        };
        match merged {
            AllExcept(e) if e.is_empty() => Any,
            other => other,
        }
    }

    /// The sub-functions both allow; `None` when there are none.
    fn intersect(&self, other: &SubFunctions) -> Option<SubFunctions> {
        use SubFunctions::*;
        match (self, other) {
            (Any, x) | (x, Any) => Some(x.clone()),
            (Only(set), x) | (x, Only(set)) => {
                let kept: BTreeSet<u16> = set.iter().copied().filter(|&s| x.allows(s)).collect();
                (!kept.is_empty()).then_some(Only(kept))
            }
            (AllExcept(a), AllExcept(b)) => Some(AllExcept(a | b)),
        }
    }

    pub fn allows(&self, sub: u16) -> bool {
        match self {
            SubFunctions::Any => true,
            SubFunctions::Only(set) => set.contains(&sub),
            SubFunctions::AllExcept(set) => !set.contains(&sub),
        }
    }
}

/// Allowed Modbus requests. An absent list (`None`) allows any value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModbusRules {
    pub port: u16,
    pub units: Option<BTreeSet<u8>>,
    /// Function code -> allowed sub-functions. Codes are 1..=127.
    pub functions: BTreeMap<u8, SubFunctions>,
    pub addresses: Addresses,
    /// `on_deny: refuse`: the function code a refused request is given, and the exception code
    /// its answer is given for the client.
    pub refuse_function: u8,
    pub refuse_exception: u8,
}

/// The function code a refused request carries to the server by default. The Modbus
/// Application Protocol (v1.1b3, 5) leaves it unassigned: it is a public code (not in the
/// user-defined ranges 65-72 and 100-110), not reserved for legacy products (8/19, 9, 10, 13,
/// 14, 41, 42, 90, 91, 125-127) and not used by any function the specification or a vendor
/// extension we know of defines, so a server executes nothing and answers "illegal function".
pub const REFUSE_FUNCTION: u8 = 60;
/// The exception code the client gets for a refused request by default: 01, illegal function,
/// what a server answers for a function it does not support; clients treat it as final.
pub const REFUSE_EXCEPTION: u8 = 1;

/// Allowed 0-based protocol address ranges per table, both ends included. The datapath checks
/// coils for functions 1, 5, 15; discrete inputs for 2; holding registers for 3, 6, 16, 22, 23;
/// input registers for 4.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub coils: Option<Vec<(u16, u16)>>,
    pub discrete_inputs: Option<Vec<(u16, u16)>>,
    pub holding_registers: Option<Vec<(u16, u16)>>,
    pub input_registers: Option<Vec<(u16, u16)>>,
}

impl ModbusRules {
    fn allow(&mut self, code: u8, subs: SubFunctions) {
        let merged = match self.functions.remove(&code) {
            Some(existing) => existing.union(subs),
            None => subs,
        };
        self.functions.insert(code, merged);
    }

    /// These rules narrowed to the `read` preset (lockdown): the read functions they allow
    /// stay, with their units, address ranges and refusal; every other function goes.
    pub fn read_only(&self) -> ModbusRules {
        let mut read = ModbusRules::default();
        add_function(&mut read, &Scalar::Text("read".into())).expect("the read preset resolves");
        let functions = self
            .functions
            .iter()
            .filter_map(|(&code, subs)| Some((code, subs.intersect(read.functions.get(&code)?)?)))
            .collect();
        ModbusRules {
            functions,
            ..self.clone()
        }
    }

    /// Whether any function that changes data or programs a device is allowed (lint input).
    pub fn grants_write_or_program(&self) -> bool {
        WRITE
            .iter()
            .chain(PROGRAM)
            .any(|c| self.functions.contains_key(c))
    }
}

/// Resolves a conduit's `modbus:` entry at `path`; reports each problem and returns `None` if
/// there was any.
pub fn resolve(
    doc: &model::Modbus,
    path: &str,
    diagnostics: &mut Diagnostics,
) -> Option<ModbusRules> {
    let mut ok = true;
    let mut rules = ModbusRules {
        port: DEFAULT_PORT,
        refuse_function: REFUSE_FUNCTION,
        refuse_exception: REFUSE_EXCEPTION,
        ..ModbusRules::default()
    };
    if let Some(refuse) = &doc.refuse {
        let path = child(path, "refuse");
        if let Some(function) = &refuse.function {
            match unassigned_function(function) {
                Ok(code) => rules.refuse_function = code,
                Err(e) => {
                    diagnostics.error(&child(&path, "function"), e);
                    ok = false;
                }
            }
        }
        if let Some(exception) = &refuse.exception {
            match exception.number_in("exception code", 1, 255) {
                Ok(code) => rules.refuse_exception = code as u8,
                Err(e) => {
                    diagnostics.error(&child(&path, "exception"), e);
                    ok = false;
                }
            }
        }
    }
    if let Some(port) = &doc.port {
        match port.number_in("port", 1, 65535) {
            Ok(p) => rules.port = p as u16,
            Err(e) => {
                diagnostics.error(&child(path, "port"), e);
                ok = false;
            }
        }
    }
    if let Some(units) = &doc.units {
        let mut set = BTreeSet::new();
        for (i, unit) in units.iter().enumerate() {
            match unit.number_in("unit id", 0, 255) {
                Ok(u) => {
                    set.insert(u as u8);
                }
                Err(e) => {
                    diagnostics.error(&item(&child(path, "units"), i), e);
                    ok = false;
                }
            }
        }
        rules.units = Some(set);
    }
    let functions_path = child(path, "functions");
    match &doc.functions {
        None => {
            diagnostics.error(
                path,
                "modbus rule needs `functions`, e.g. `functions: [read]` (presets: read, write, \
                 diagnostics, program, all)",
            );
            ok = false;
        }
        Some(list) => {
            for (i, function) in list.iter().enumerate() {
                if let Err(e) = add_function(&mut rules, function) {
                    diagnostics.error(&item(&functions_path, i), e);
                    ok = false;
                }
            }
        }
    }
    if let Some(addresses) = &doc.addresses {
        let path = child(path, "addresses");
        let tables = [
            ("coils", &addresses.coils, &mut rules.addresses.coils),
            (
                "discrete_inputs",
                &addresses.discrete_inputs,
                &mut rules.addresses.discrete_inputs,
            ),
            (
                "holding_registers",
                &addresses.holding_registers,
                &mut rules.addresses.holding_registers,
            ),
            (
                "input_registers",
                &addresses.input_registers,
                &mut rules.addresses.input_registers,
            ),
        ];
        for (name, written, resolved) in tables {
            let Some(ranges) = written else { continue };
            let mut list = Vec::new();
            for (i, range) in ranges.iter().enumerate() {
                match range.range_in("address", 0, 65535) {
                    Ok((lo, hi)) => list.push((lo as u16, hi as u16)),
                    Err(e) => {
                        diagnostics.error(&item(&child(&path, name), i), e);
                        ok = false;
                    }
                }
            }
            *resolved = Some(list);
        }
    }
    ok.then_some(rules)
}

fn add_function(rules: &mut ModbusRules, function: &Scalar) -> Result<(), String> {
    let text = match function {
        Scalar::Number(_) => None,
        Scalar::Text(t) => Some(t.as_str()),
    };
    match text {
        Some("read") => {
            for &code in READ {
                rules.allow(code, SubFunctions::Any);
            }
            rules.allow(
                ENCAPSULATED_INTERFACE_TRANSPORT,
                SubFunctions::Only([14].into()),
            );
        }
        Some("write") => WRITE
            .iter()
            .for_each(|&c| rules.allow(c, SubFunctions::Any)),
        Some("diagnostics") => {
            for &code in DIAGNOSTICS_PRESET {
                rules.allow(code, SubFunctions::Any);
            }
            rules.allow(
                DIAGNOSTICS,
                SubFunctions::AllExcept(DISRUPTIVE_DIAGNOSTICS.into()),
            );
        }
        Some("program") => PROGRAM
            .iter()
            .for_each(|&c| rules.allow(c, SubFunctions::Any)),
        Some("all") => (1..=127).for_each(|c| rules.allow(c, SubFunctions::Any)),
        Some(text) if text.contains('/') => {
            let (code, sub) = parse_sub_function(text)?;
            rules.allow(code, SubFunctions::Only([sub].into()));
        }
        Some(name) if function.number().is_none() => {
            let Some(&(_, code, sub)) = FUNCTIONS.iter().find(|(n, ..)| *n == name) else {
                return Err(format!(
                    "unknown modbus function `{name}`; expected a preset ({}), a name ({}), a \
                     code 1..127, or \"8/N\" / \"43/N\"",
                    PRESETS.join(", "),
                    FUNCTIONS.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
                ));
            };
            let subs = sub.map_or(SubFunctions::Any, |s| SubFunctions::Only([s].into()));
            rules.allow(code, subs);
        }
        _ => rules.allow(function_code(function)?, SubFunctions::Any),
    }
    Ok(())
}

fn function_code(function: &Scalar) -> Result<u8, String> {
    let code = function.number_in("modbus function", 1, 255)?;
    if code >= 128 {
        return Err(format!(
            "modbus function {code} is an exception response code (128..255), never a request; \
             allowed requests are 1..127"
        ));
    }
    Ok(code as u8)
}

/// `"8/N"` (a diagnostics sub-function, 0..65535) or `"43/N"` (an MEI type, 0..255).
fn parse_sub_function(text: &str) -> Result<(u8, u16), String> {
    let (code, sub) = text.split_once('/').unwrap_or((text, ""));
    let code = function_code(&Scalar::Text(code.to_string()))?;
    let max = match code {
        DIAGNOSTICS => 65535,
        ENCAPSULATED_INTERFACE_TRANSPORT => 255,
        _ => {
            return Err(format!(
                "`{text}`: only diagnostics (8/N) and encapsulated interface transport (43/N) \
                 have sub-functions; write `{code}` for the whole function"
            ))
        }
    };
    let what = if code == DIAGNOSTICS {
        "diagnostics sub-function"
    } else {
        "MEI type"
    };
    let sub = Scalar::Text(sub.to_string()).number_in(what, 0, max)?;
    Ok((code, sub as u16))
}

/// A function code a refused request may be given: one the specification does not assign,
/// so no server acts on it.
fn unassigned_function(value: &Scalar) -> Result<u8, String> {
    let code = value.number_in("function code", 1, 127)? as u8;
    let assigned = FUNCTIONS.iter().any(|&(_, c, _)| c == code)
        || (65..=72).contains(&code)
        || (100..=110).contains(&code)
        || [8, 9, 10, 13, 14, 19, 41, 42, 90, 91, 125, 126, 127].contains(&code);
    if assigned {
        return Err(format!(
            "function code {code} is assigned (by the specification, as user-defined or \
             reserved): a refused request must carry a code no server acts on, e.g. {REFUSE_FUNCTION}"
        ));
    }
    Ok(code)
}

/// The datapath form of `rules` (map `MODBUS_RULES`). `Err` names what does not fit: more
/// than `MAX_RANGES` ranges in a table, or diagnostics sub-functions above 63 named one by one.
pub fn to_map(rules: &ModbusRules) -> Result<ModbusRule, (String, String)> {
    let mut m = ModbusRule {
        flags: RULE_PRESENT,
        refuse_function: rules.refuse_function,
        refuse_exception: rules.refuse_exception,
        ..ModbusRule::default()
    };
    let set = |words: &mut [u64], n: usize| words[n / 64] |= 1 << (n % 64);
    match &rules.units {
        None => m.units = [u64::MAX; 4],
        Some(units) => units.iter().for_each(|&u| set(&mut m.units, u as usize)),
    }
    for (&code, subs) in &rules.functions {
        set(&mut m.functions, code as usize);
        match code {
            DIAGNOSTICS => {
                let too_high = |set: &BTreeSet<u16>| set.iter().copied().find(|&s| s >= 64);
                match subs {
                    SubFunctions::Any => {
                        m.diagnostics = u64::MAX;
                        m.flags |= RULE_DIAG_OTHERS;
                    }
                    SubFunctions::Only(only) => {
                        if let Some(s) = too_high(only) {
                            return Err(sub_function_error(s));
                        }
                        only.iter().for_each(|&s| m.diagnostics |= 1 << s);
                    }
                    SubFunctions::AllExcept(except) => {
                        if let Some(s) = too_high(except) {
                            return Err(sub_function_error(s));
                        }
                        m.diagnostics = u64::MAX;
                        except.iter().for_each(|&s| m.diagnostics &= !(1 << s));
                        m.flags |= RULE_DIAG_OTHERS;
                    }
                }
            }
            ENCAPSULATED_INTERFACE_TRANSPORT => {
                for mei in 0..=255u16 {
                    if subs.allows(mei) {
                        set(&mut m.mei, mei as usize);
                    }
                }
            }
            _ => {}
        }
    }
    let tables = [
        ("coils", &rules.addresses.coils, TABLE_COILS),
        (
            "discrete_inputs",
            &rules.addresses.discrete_inputs,
            TABLE_DISCRETE_INPUTS,
        ),
        (
            "holding_registers",
            &rules.addresses.holding_registers,
            TABLE_HOLDING_REGISTERS,
        ),
        (
            "input_registers",
            &rules.addresses.input_registers,
            TABLE_INPUT_REGISTERS,
        ),
    ];
    for (name, ranges, table) in tables {
        let Some(ranges) = ranges else { continue };
        let merged = merge(ranges);
        if merged.len() > MAX_RANGES {
            return Err((
                format!("addresses.{name}"),
                format!(
                    "{} separate {name} ranges; the datapath checks at most {MAX_RANGES} per                      table: join adjacent ranges or split the rule into several conduits",
                    merged.len()
                ),
            ));
        }
        m.flags |= RULE_TABLE_LIMITED << table;
        m.range_count[table] = merged.len() as u8;
        for (i, &(lo, hi)) in merged.iter().enumerate() {
            m.ranges[table][i] = AddressRange { lo, hi };
        }
    }
    Ok(m)
}

fn sub_function_error(sub: u16) -> (String, String) {
    (
        "functions".to_owned(),
        format!(
            "diagnostics sub-function {sub}: the datapath tells apart sub-functions 0..63 only;              allow `diagnostics` (8) as a whole or leave {sub} out"
        ),
    )
}

/// Sorted ranges with overlapping and adjacent ones joined (containment is unchanged: a range
/// inside the union of two touching ranges is inside their join).
fn merge(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if lo as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_common::modbus::bit;

    #[test]
    fn map_form_of_presets_and_ranges() {
        let mut rules = ModbusRules::default();
        add_function(&mut rules, &Scalar::Text("read".into())).unwrap();
        add_function(&mut rules, &Scalar::Text("diagnostics".into())).unwrap();
        rules.units = Some([1, 255].into());
        rules.addresses.holding_registers = Some(vec![(0, 9), (10, 19), (100, 199)]);
        let m = to_map(&rules).unwrap();
        assert!(bit(&m.functions, 3) && bit(&m.functions, 43) && !bit(&m.functions, 5));
        assert!(bit(&m.units, 1) && bit(&m.units, 255) && !bit(&m.units, 2));
        assert!(bit(&m.mei, 14) && !bit(&m.mei, 13));
        assert_eq!(m.diagnostics & 0b10010, 0);
        assert!(m.diagnostics & 1 != 0 && m.flags & RULE_DIAG_OTHERS != 0);
        assert_eq!(m.range_count[TABLE_HOLDING_REGISTERS], 2);
        assert_eq!(
            m.ranges[TABLE_HOLDING_REGISTERS][..2],
            [
                AddressRange { lo: 0, hi: 19 },
                AddressRange { lo: 100, hi: 199 }
            ]
        );
        assert_eq!(m.flags & (RULE_TABLE_LIMITED << TABLE_COILS), 0);
        rules.addresses.coils = Some((0..9).map(|i| (i * 10, i * 10 + 1)).collect());
        assert!(to_map(&rules).unwrap_err().1.contains("at most 8"));
    }

    fn functions(list: &[Scalar]) -> Result<BTreeMap<u8, SubFunctions>, String> {
        let mut rules = ModbusRules::default();
        for f in list {
            add_function(&mut rules, f)?;
        }
        Ok(rules.functions)
    }

    fn text(t: &str) -> Scalar {
        Scalar::Text(t.into())
    }

    #[test]
    fn read_preset_includes_device_identification_only() {
        let f = functions(&[text("read")]).unwrap();
        assert_eq!(
            f.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 20, 24, 43]
        );
        assert_eq!(f[&43], SubFunctions::Only([14].into()));
    }

    #[test]
    fn diagnostics_preset_excludes_disruptive_sub_functions_until_named() {
        let f = functions(&[text("diagnostics")]).unwrap();
        assert_eq!(
            f.keys().copied().collect::<Vec<_>>(),
            vec![7, 8, 11, 12, 17]
        );
        assert!(f[&8].allows(0) && !f[&8].allows(1) && !f[&8].allows(4));
        let f = functions(&[text("diagnostics"), text("8/1")]).unwrap();
        assert_eq!(f[&8], SubFunctions::AllExcept([4].into()));
        let f = functions(&[text("8/4"), text("diagnostics"), text("8/1")]).unwrap();
        assert_eq!(f[&8], SubFunctions::Any);
    }

    #[test]
    fn names_numbers_and_sub_functions() {
        let f = functions(&[
            text("write_single_coil"),
            Scalar::Number(16),
            text("0x5A"),
            text("43/13"),
            text("read_device_identification"),
            text("umas"),
        ])
        .unwrap();
        assert_eq!(f[&5], SubFunctions::Any);
        assert_eq!(f[&16], SubFunctions::Any);
        assert_eq!(f[&90], SubFunctions::Any);
        assert_eq!(f[&43], SubFunctions::Only([13, 14].into()));
        assert_eq!(functions(&[text("all")]).unwrap().len(), 127);
        assert_eq!(functions(&[text("program")]).unwrap().len(), 5);
        assert_eq!(functions(&[text("write")]).unwrap().len(), 7);
    }

    #[test]
    fn bad_functions_explain_themselves() {
        let err = |s: Scalar| functions(&[s]).unwrap_err();
        assert!(err(Scalar::Number(131)).contains("exception response"));
        assert!(err(Scalar::Number(0)).contains("out of range 1..255"));
        assert!(err(text("raed")).starts_with("unknown modbus function `raed`; expected a preset"));
        assert!(err(text("3/1")).contains("only diagnostics"));
        assert!(err(text("43/256")).contains("MEI type 256 is out of range 0..255"));
        assert!(err(text("8/x")).contains("diagnostics sub-function `x` is not a number"));
    }

    #[test]
    fn write_or_program_detection() {
        let rules = |list: &[Scalar]| ModbusRules {
            functions: functions(list).unwrap(),
            ..ModbusRules::default()
        };
        assert!(!rules(&[text("read"), text("diagnostics")]).grants_write_or_program());
        assert!(rules(&[text("mask_write_register")]).grants_write_or_program());
        assert!(rules(&[Scalar::Number(90)]).grants_write_or_program());
        assert!(rules(&[text("all")]).grants_write_or_program());
    }
}
