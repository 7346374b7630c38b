use std::collections::BTreeSet;

use firewall_common::{
    conduit::{
        FIRST_CONDUIT, INSPECT_ENIP, INSPECT_MODBUS, INSPECT_NONE, MODE_ENFORCE, MODE_MONITOR,
    },
    config::{FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_MIDSTREAM_ADOPT, FLAG_UNZONED_ALLOW},
    modbus::bit,
};

use super::*;
use crate::policy::{check_str, compiled::RuleKey};

/// Permissive defaults in monitor mode, a Modbus and an EtherNet/IP conduit with read, write
/// and more, plain TCP and ICMP beside them, and a third zone with a conduit of its own.
const POLICY: &str = r#"version: 1
gateway: { bridge: br-test }
defaults:
  action: allow
  intra_zone: allow
  unzoned: allow
  mode: monitor
zones:
  office:
    networks: [10.0.0.0/24]
  cell:
    networks: [10.0.1.0/24]
    hosts: { plc: 10.0.1.10 }
  dmz:
    networks: [10.0.2.0/24]
conduits:
  - name: engineering
    from: office
    to: cell/plc
    mode: enforce
    on_deny: refuse
    allow:
      - modbus:
          units: [1]
          functions: [read, write, diagnostics, "43/14"]
          addresses: { holding_registers: ["0-99"] }
      - tcp: { ports: [22] }
      - icmp: { types: [echo_request] }
  - name: scada
    from: office
    to: cell
    allow:
      - enip:
          services: [read, write, admin]
          objects:
            - { class: 0x01, services: [get_attribute_single, set_attribute_single] }
          io: true
  - name: web
    from: dmz
    to: office
    allow:
      - tcp: { ports: [443] }
"#;

fn policy() -> CompiledPolicy {
    let (loaded, diagnostics) = check_str("test.yaml", POLICY);
    loaded
        .unwrap_or_else(|| panic!("test policy: {diagnostics:?}"))
        .compiled
}

fn zone(policy: &CompiledPolicy, name: &str) -> u16 {
    policy.names.zones.iter().position(|z| z == name).unwrap() as u16
}

fn inspections(policy: &CompiledPolicy) -> Vec<(RuleKey, u8)> {
    policy
        .rules
        .iter()
        .flat_map(|(k, set)| {
            set.rules[..set.count as usize]
                .iter()
                .map(|r| (*k, r.inspect))
        })
        .collect()
}

fn modbus_functions(policy: &CompiledPolicy) -> BTreeSet<u8> {
    let [(_, rules)] = &policy.modbus_rules[..] else {
        panic!("one modbus rule expected: {:?}", policy.modbus_rules);
    };
    rules.functions.keys().copied().collect()
}

#[test]
fn read_only_keeps_only_the_read_functions_of_modbus_rules() {
    let before = policy();
    let after = restrict(&before, &Lockdown::ReadOnly).unwrap();
    assert!(modbus_functions(&before).is_superset(&[5, 6, 8, 15, 16, 23].into()));
    assert_eq!(modbus_functions(&after), [1, 2, 3, 4, 20, 24, 43].into());
    let (_, rules) = &after.modbus_rules[0];
    let (_, original) = &before.modbus_rules[0];
    assert!(rules.functions[&43].allows(14));
    assert!(!rules.functions[&43].allows(13));
    // Units, address ranges and the refusal stay as the policy says.
    assert_eq!(rules.units, original.units);
    assert_eq!(rules.addresses, original.addresses);
    assert_eq!(rules.refuse_function, original.refuse_function);
    // The map form is what the datapath reads: rebuilt from the narrowed rules.
    let (_, map) = &after.modbus_maps[0];
    assert_eq!(*map, modbus::to_map(rules).unwrap());
    assert!(bit(&map.functions, 3));
    for write in [5, 6, 8, 15, 16, 22, 23] {
        assert!(
            !bit(&map.functions, write),
            "function {write} still allowed"
        );
    }
}

#[test]
fn read_only_keeps_only_read_services_of_enip_rules() {
    let before = policy();
    let after = restrict(&before, &Lockdown::ReadOnly).unwrap();
    let (_, rules) = &after.enip_rules[0];
    let names = |names: &[&str]| -> Vec<_> {
        names
            .iter()
            .map(|n| enip::SERVICES.iter().find(|(s, _)| s == n).unwrap().1)
            .collect()
    };
    for service in names(&["read_tag", "get_attribute_single", "forward_open"]) {
        assert!(rules.allows(service), "{service:?} no longer allowed");
    }
    for service in names(&["write_tag", "set_attribute_single", "reset", "execute_pccc"]) {
        assert!(!rules.allows(service), "{service:?} still allowed");
    }
    assert!(!rules.grants_write_or_admin());
    // The explicit class keeps its read service only, on that class.
    assert_eq!(rules.objects.get(&0x01), Some(&[0x0E].into()));
    assert!(rules.io, "cyclic I/O keeps running in read-only");
    let (_, map) = &after.enip_maps[0];
    assert_eq!(*map, enip::to_map(rules).unwrap());
    assert_ne!(*map, before.enip_maps[0].1);
}

#[test]
fn read_only_closes_uninspected_conduits_and_permissive_defaults() {
    let before = policy();
    let after = restrict(&before, &Lockdown::ReadOnly).unwrap();
    assert!(inspections(&before).iter().any(|(_, i)| *i == INSPECT_NONE));
    let left = inspections(&after);
    assert!(left.iter().all(|(_, i)| *i != INSPECT_NONE), "{left:?}");
    assert!(left.iter().any(|(_, i)| *i == INSPECT_MODBUS));
    assert!(left.iter().any(|(_, i)| *i == INSPECT_ENIP));
    // The dmz conduit was plain TCP only: its key is gone.
    assert!(!after
        .rules
        .iter()
        .any(|(k, _)| k.from_zone == zone(&after, "dmz")));
    assert_eq!(
        after.config.flags & (FLAG_DEFAULT_ALLOW | FLAG_INTRA_ZONE_ALLOW | FLAG_UNZONED_ALLOW),
        0
    );
    assert_eq!(
        after.config.flags & FLAG_MIDSTREAM_ADOPT,
        before.config.flags & FLAG_MIDSTREAM_ADOPT
    );
    assert!(before.conduits.iter().any(|(_, c)| c.mode == MODE_MONITOR));
    assert!(after.conduits.iter().all(|(_, c)| c.mode == MODE_ENFORCE));
    // Ids and names stay: metrics and events keep meaning the same conduits.
    assert_eq!(after.names.conduits, before.names.conduits);
    assert_eq!(after.prefixes_v4, before.prefixes_v4);
}

#[test]
fn isolate_removes_every_conduit_of_the_zone_and_nothing_else() {
    let before = policy();
    let after = restrict(
        &before,
        &Lockdown::Isolate {
            zone: "cell".into(),
        },
    )
    .unwrap();
    let cell = zone(&before, "cell");
    let touches = |k: &RuleKey| k.from_zone == cell || k.to_zone == cell;
    assert!(before.rules.iter().any(|(k, _)| touches(k)));
    assert!(!after.rules.iter().any(|(k, _)| touches(k)));
    let others: Vec<_> = before.rules.iter().filter(|(k, _)| !touches(k)).collect();
    assert!(!others.is_empty());
    assert_eq!(after.rules.iter().collect::<Vec<_>>(), others);
    // Defaults that could admit traffic across the border close; intra-zone traffic stays.
    assert_eq!(
        after.config.flags & (FLAG_DEFAULT_ALLOW | FLAG_UNZONED_ALLOW),
        0
    );
    assert_ne!(after.config.flags & FLAG_INTRA_ZONE_ALLOW, 0);
    for (id, info) in &after.conduits {
        if *id < FIRST_CONDUIT {
            assert_eq!(info.mode, MODE_ENFORCE, "default {id} must drop");
        } else {
            let original = before.conduits.iter().find(|(c, _)| c == id).unwrap();
            assert_eq!(*info, original.1, "conduit {id} of another zone changed");
        }
    }
    assert_eq!(after.modbus_maps, before.modbus_maps);
}

#[test]
fn isolating_an_unknown_zone_is_an_error_naming_the_zones() {
    let error = restrict(
        &policy(),
        &Lockdown::Isolate {
            zone: "nowhere".into(),
        },
    )
    .unwrap_err();
    assert!(error.contains("`nowhere`"), "{error}");
    assert!(error.contains("office, cell, dmz"), "{error}");
    // The pseudo zone of index 0 is no zone to isolate.
    let none = policy().names.zones[0].clone();
    assert!(restrict(&policy(), &Lockdown::Isolate { zone: none }).is_err());
}

#[test]
fn orders_are_kept_as_json_with_their_mode() {
    let order = Order::now(Lockdown::Isolate {
        zone: "cell".into(),
    });
    let text = serde_json::to_string(&order).unwrap();
    assert!(
        text.starts_with(r#"{"mode":"isolate","zone":"cell","since":""#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Order>(&text).unwrap(), order);
    let read_only: Order =
        serde_json::from_str(r#"{"mode":"read-only","since":"2026-01-01T00:00:00Z"}"#).unwrap();
    assert_eq!(read_only.lockdown, Lockdown::ReadOnly);
    assert!(serde_json::from_str::<Order>(r#"{"mode":"open","since":"x"}"#).is_err());
}
