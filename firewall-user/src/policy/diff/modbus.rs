//! Modbus rules compared by what they let through: function codes with their sub-functions
//! (so a preset and the same codes spelled out are equal), unit ids, address ranges per table.

use std::collections::BTreeMap;

use super::ranges::Ranges;
use super::{Effect, Fallback, Inspected, Kind, Report, Scope};
use crate::policy::modbus::{
    Addresses, ModbusRules, SubFunctions, DIAGNOSTICS, ENCAPSULATED_INTERFACE_TRANSPORT, FUNCTIONS,
};
use crate::policy::validated::Allow;

/// Function code -> the sub-functions (diagnostics) or MEI types (43) allowed with it. Other
/// codes have none to tell apart: "any" is the single value 0.
type Functions = BTreeMap<u8, Ranges>;

const UNITS: (u32, u32) = (0, 255);
const ADDRESSES: (u32, u32) = (0, 65535);

fn sub_functions(code: u8) -> (u32, u32) {
    match code {
        DIAGNOSTICS => (0, 65535),
        ENCAPSULATED_INTERFACE_TRANSPORT => (0, 255),
        _ => (0, 0),
    }
}

fn functions(rules: &ModbusRules) -> Functions {
    rules
        .functions
        .iter()
        .map(|(&code, subs)| {
            let (lo, hi) = sub_functions(code);
            let allowed = match subs {
                SubFunctions::Any => Ranges::full(lo, hi),
                SubFunctions::Only(only) => Ranges::values(only.iter().map(|&s| u32::from(s))),
                SubFunctions::AllExcept(except) => Ranges::full(lo, hi)
                    .minus(&Ranges::values(except.iter().map(|&s| u32::from(s)))),
            };
            (code, allowed)
        })
        .collect()
}

/// What `a` allows that `b` does not, per function code.
fn minus(a: &Functions, b: &Functions) -> Functions {
    a.iter()
        .map(|(code, subs)| (*code, subs.minus(b.get(code).unwrap_or(&Ranges::default()))))
        .filter(|(_, subs)| !subs.is_empty())
        .collect()
}

/// `write_single_register (6)`; a code without a name is its number.
fn function_name(code: u8) -> String {
    match FUNCTIONS.iter().find(|f| f.1 == code && f.2.is_none()) {
        Some(f) => format!("{} ({code})", f.0),
        None => code.to_string(),
    }
}

/// `read_device_identification (43/14)`, or `8/1` for a sub-function without a name.
fn sub_function_name(code: u8, sub: u32) -> String {
    match FUNCTIONS
        .iter()
        .find(|f| f.1 == code && f.2.map(u32::from) == Some(sub))
    {
        Some(f) => format!("{} ({code}/{sub})", f.0),
        None => format!("{code}/{sub}"),
    }
}

/// The functions as a reviewer reads them: by name, runs of unnamed codes as `lo-hi`, and a
/// function with only some sub-functions as those (`8/1`) or as all but some
/// (`diagnostics (8) except 8/1, 8/4`), whichever is shorter.
pub(super) fn function_items(functions: &Functions) -> Vec<String> {
    let whole = |code: u8, subs: &Ranges| {
        let (lo, hi) = sub_functions(code);
        *subs == Ranges::full(lo, hi)
    };
    if (1..=127).all(|c| functions.get(&c).is_some_and(|s| whole(c, s))) {
        return vec!["all (1-127)".to_string()];
    }
    let mut items = Vec::new();
    let mut unnamed: Vec<(u32, u32)> = Vec::new();
    let flush = |unnamed: &mut Vec<(u32, u32)>, items: &mut Vec<String>| {
        items.extend(Ranges::new(unnamed.drain(..)).items(|n| n.to_string()));
    };
    for (&code, subs) in functions {
        if whole(code, subs) {
            if FUNCTIONS.iter().any(|f| f.1 == code && f.2.is_none()) {
                flush(&mut unnamed, &mut items);
                items.push(function_name(code));
            } else {
                unnamed.push((u32::from(code), u32::from(code)));
            }
            continue;
        }
        flush(&mut unnamed, &mut items);
        let (lo, hi) = sub_functions(code);
        let others = Ranges::full(lo, hi).minus(subs);
        // Short runs one by one, so that named ones (43/14) show their names.
        let subs_text = |r: &Ranges| -> Vec<String> {
            r.ranges()
                .iter()
                .flat_map(|&(lo, hi)| match hi - lo < 4 {
                    true => (lo..=hi).map(|s| sub_function_name(code, s)).collect(),
                    false => vec![format!("{code}/{lo}-{hi}")],
                })
                .collect()
        };
        if others.ranges().len() < subs.ranges().len() {
            let except = subs_text(&others).join(", ");
            items.push(format!("{} except {except}", function_name(code)));
        } else {
            items.extend(subs_text(subs));
        }
    }
    flush(&mut unnamed, &mut items);
    items
}

fn units(rules: &ModbusRules) -> Ranges {
    match &rules.units {
        None => Ranges::full(UNITS.0, UNITS.1),
        Some(units) => Ranges::values(units.iter().map(|&u| u32::from(u))),
    }
}

/// Each table with its allowed addresses; a table left out is not limited.
fn tables(addresses: &Addresses) -> [(&'static str, Ranges); 4] {
    // Destructured so that a new table cannot be left out of the comparison unnoticed.
    let Addresses {
        coils,
        discrete_inputs,
        holding_registers,
        input_registers,
    } = addresses;
    let table = |ranges: &Option<Vec<(u16, u16)>>| match ranges {
        None => Ranges::full(ADDRESSES.0, ADDRESSES.1),
        Some(list) => Ranges::new(list.iter().map(|&(lo, hi)| (u32::from(lo), u32::from(hi)))),
    };
    [
        ("coils", table(coils)),
        ("discrete_inputs", table(discrete_inputs)),
        ("holding_registers", table(holding_registers)),
        ("input_registers", table(input_registers)),
    ]
}

/// One line for a rule added or removed whole.
fn summary(rules: &ModbusRules) -> String {
    let units = units(rules);
    let units = match units == Ranges::full(UNITS.0, UNITS.1) {
        true => "any".to_string(),
        false => units.items(|n| n.to_string()).join(", "),
    };
    let limited: Vec<String> = tables(&rules.addresses)
        .into_iter()
        .filter(|(_, r)| *r != Ranges::full(ADDRESSES.0, ADDRESSES.1))
        .map(|(table, r)| format!("{table} {}", r.items(|n| n.to_string()).join(", ")))
        .collect();
    let addresses = match limited.is_empty() {
        true => "any".to_string(),
        false => limited.join(", "),
    };
    format!(
        "modbus rule on port {}: functions {}; units {units}; addresses {addresses}",
        rules.port,
        function_items(&functions(rules)).join(", "),
    )
}

/// The `modbus` rules of a conduit, for `compare_inspected`.
pub(super) const INSPECTED: Inspected<ModbusRules> = Inspected {
    protocol: "modbus",
    rules: |allow| match allow {
        Allow::Modbus(rules) => Some(rules),
        _ => None,
    },
    port: |rules| rules.port,
    summary,
    changes,
};

/// What changed inside a rule that stayed (its port is compared by `compare_inspected`).
fn changes(
    report: &mut Report,
    scope: &Scope,
    old: &ModbusRules,
    new: &ModbusRules,
    fallback: Fallback,
) {
    // Destructured so that a new rule field cannot be left out of the comparison unnoticed.
    let ModbusRules {
        port: _,
        units: _,
        functions: _,
        addresses,
        refuse_function,
        refuse_exception,
    } = new;
    // How `on_deny: refuse` answers changes what a client sees, not what passes.
    let neutral = Some(Effect::Neutral);
    report.value(
        scope.field(&["refuse", "function"], "refuse function"),
        old.refuse_function.to_string(),
        refuse_function.to_string(),
        neutral,
    );
    report.value(
        scope.field(&["refuse", "exception"], "refuse exception"),
        old.refuse_exception.to_string(),
        refuse_exception.to_string(),
        neutral,
    );
    let gained = Some(fallback.granted());
    let lost = gained.map(Effect::opposite);
    let (before, after) = (functions(old), functions(new));
    let key = ["functions"];
    let added = function_items(&minus(&after, &before));
    let removed = function_items(&minus(&before, &after));
    report.items(scope.field(&key, "functions"), Kind::Added, added, gained);
    report.items(scope.field(&key, "functions"), Kind::Removed, removed, lost);
    let number = |n: u32| n.to_string();
    report.ranges(
        scope.field(&["units"], "units"),
        &units(old),
        &units(new),
        Some(UNITS),
        number,
        gained,
    );
    for ((table, before), (_, after)) in tables(&old.addresses).into_iter().zip(tables(addresses)) {
        report.ranges(
            scope.field(&["addresses", table], table),
            &before,
            &after,
            Some(ADDRESSES),
            number,
            gained,
        );
    }
}
