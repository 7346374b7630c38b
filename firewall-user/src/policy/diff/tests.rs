//! Each kind of change, read from policies as operators write them, and the rewrites that are
//! no change at all.

use super::*;
use crate::policy::check_str;

fn load(text: &str) -> Policy {
    let (loaded, diagnostics) = check_str("p.yaml", text);
    match loaded {
        Some(loaded) => loaded.policy,
        None => panic!("policy does not load: {diagnostics:#?}\n{text}"),
    }
}

fn changes(old: &str, new: &str) -> Vec<Change> {
    diff(&load(old), &load(new))
}

fn lines(old: &str, new: &str) -> Vec<String> {
    changes(old, new).into_iter().map(|c| c.text).collect()
}

/// The one change between `old` and `new`.
fn only(old: &str, new: &str) -> Change {
    let mut all = changes(old, new);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

/// Two zones with a host each; `{defaults}` and `{conduits}` are filled in by [`policy`].
const TEMPLATE: &str = "\
version: 1
gateway:
  bridge: br0
{defaults}
zones:
  office:
    networks: [10.0.1.0/24]
    security_level: 1
    hosts:
      pc: 10.0.1.10
  plant:
    networks: [10.0.2.0/24]
    security_level: 3
    hosts:
      plc: 10.0.2.10
conduits:
{conduits}";

fn policy(defaults: &str, conduits: &str) -> String {
    TEMPLATE
        .replace("{defaults}", defaults)
        .replace("{conduits}", conduits)
}

/// One conduit `c` from office to plant/plc allowing `allow` (a flow-style list).
fn allowing(allow: &str) -> String {
    policy(
        "",
        &format!("  - name: c\n    from: office\n    to: plant/plc\n    allow: {allow}\n"),
    )
}

#[test]
fn the_same_policy_rewritten_is_no_change() {
    let old = "\
version: 1
gateway: { interfaces: [eth1, eth2] }
defaults: { non_ip: [arp, lldp] }
zones:
  office:
    networks: [10.0.1.0/24, 10.0.9.0/24]
    ports: [eth1, eth2]
    hosts: { pc: 10.0.1.10 }
  plant:
    networks: [10.0.2.0/24]
    hosts: { plc: 10.0.2.10 }
conduits:
  - name: c
    from: office
    to: plant/plc
    allow:
      - tcp: { ports: [22, 23, \"8000-8100\"] }
      - icmp: { types: [echo_request, 13] }
      - modbus: { functions: [read, write], units: [1, 255] }
      - enip: { services: [read, write_tag], tags: [Line1_*, Recipe.Setpoint] }
";
    let new = "\
# Reordered, reformatted, commented: the same policy.
version: 1
gateway:
  interfaces: [eth2, eth1]
defaults:
  non_ip: [lldp, arp, arp]
  action: deny          # the default, now written out
zones:
  office:
    description: Offices
    networks:
      - 10.0.9.0/24
      - 10.0.1.0/24
    ports: [eth2, eth1]
    hosts:
      pc: 10.0.1.10
  plant:
    networks: [10.0.2.0/24]
    hosts:
      plc: 10.0.2.10
conduits:
  - name: c
    description: now described
    from: office
    to: plant/plc
    allow:
      - enip:
          tags: [Recipe.Setpoint, Line1_*]
          services: [write_tag, read]
          commands: [default]
      - modbus:
          units: [255, 1]
          functions: [write, read, read_coils]
      - tcp: { ports: [\"8000-8050\", \"8051-8100\"] }
      - tcp: { ports: [\"22-23\"] }
      - icmp: { types: [13, echo_request] }
";
    assert_eq!(lines(old, new), Vec::<String>::new());
}

#[test]
fn presets_and_the_same_grants_spelled_out_are_no_change() {
    let modbus =
        |functions: &str| allowing(&format!("[{{ modbus: {{ functions: {functions} }} }}]"));
    assert!(changes(
        &modbus("[read]"),
        &modbus("[1, 2, 3, 4, read_file_record, 0x18, \"43/14\"]")
    )
    .is_empty());
    assert!(changes(
        &modbus("[write, program]"),
        &modbus("[5, 6, 15, 16, 21, 22, 23, 40, 42, umas, 125, 126]")
    )
    .is_empty());
    let enip = |rule: &str| allowing(&format!("[{{ enip: {rule} }}]"));
    // Named services, the same services under their class, and the default commands.
    assert!(changes(
        &enip("{ services: [forward_open, read_tag, get_attribute_single] }"),
        &enip(
            "{ commands: [list_identity, list_services, list_interfaces, register_session, \
             unregister_session, send_rr_data, send_unit_data], services: [0x0E], \
             objects: [{ class: 0x06, services: [0x54] }, { class: 0x6B, services: [read_tag] }] }"
        )
    )
    .is_empty());
    // A class grant under a service allowed on every class adds nothing.
    assert!(changes(
        &enip("{ services: [get_attribute_single] }"),
        &enip("{ services: [get_attribute_single], objects: [{ class: 1, services: [0x0E] }] }")
    )
    .is_empty());
    assert!(changes(
        &enip("{ services: [read] }"),
        &enip("{ services: [read], tags: [\"*\"] }")
    )
    .is_empty());
    let addresses = |table: &str| {
        allowing(&format!(
            "[{{ modbus: {{ functions: [read], addresses: {{ {table} }} }} }}]"
        ))
    };
    assert!(changes(
        &addresses("holding_registers: [\"0-9\", \"10-19\", 15]"),
        &addresses("holding_registers: [\"0-19\"]")
    )
    .is_empty());
    assert!(changes(&addresses("coils: [\"0-65535\"]"), &addresses("")).is_empty());
}

#[test]
fn zones_added_removed_and_changed() {
    let old = policy("", "  []\n");
    let new = old
        .replace(
            "    networks: [10.0.1.0/24]\n    security_level: 1\n",
            "    networks: [10.0.1.0/24, \"2001:db8:1::/64\"]\n    ports: [eth1]\n    security_level: 2\n",
        )
        .replace("      pc: 10.0.1.10\n", "      pc: 10.0.1.11\n      printer: 10.0.1.20\n")
        .replace(
            "  plant:\n    networks: [10.0.2.0/24]\n    security_level: 3\n    hosts:\n      plc: 10.0.2.10\n",
            "  lab:\n    networks: [10.0.5.0/24]\n",
        );
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ zone office: + networks 2001:db8:1::/64",
            "~ zone office: host pc 10.0.1.10 -> 10.0.1.11",
            "~ zone office: + hosts printer (10.0.1.20)",
            "~ zone office: ports any -> eth1",
            "~ zone office: security_level 1 -> 2",
            "- zone plant: networks 10.0.2.0/24; hosts plc (10.0.2.10); security_level 3",
            "+ zone lab: networks 10.0.5.0/24",
        ]
    );
    let all = changes(&old, &new);
    assert_eq!(all[0].path, ["zones", "office", "networks"]);
    assert_eq!(all[0].effect, None, "membership: undecidable");
    assert_eq!(
        all[3].effect,
        Some(Effect::AllowsLess),
        "anti-spoofing added"
    );
    assert_eq!(
        all[4].effect,
        Some(Effect::Neutral),
        "levels only steer lints"
    );
    assert_eq!(all[5].kind, Kind::Removed);

    let ports =
        |list: &str| old.replace("    security_level: 1\n", &format!("    ports: {list}\n"));
    assert_eq!(
        lines(&ports("[eth1]"), &ports("[eth2, eth1]")),
        vec!["~ zone office: + ports eth2"]
    );
    assert_eq!(
        only(&ports("[eth1, eth2]"), &ports("[eth2]")).effect,
        Some(Effect::AllowsLess)
    );
    let wider = only(
        &ports("[eth1]"),
        &policy("", "  []\n").replace("    security_level: 1\n", ""),
    );
    assert_eq!(wider.text, "~ zone office: ports eth1 -> any");
    assert_eq!(wider.effect, Some(Effect::AllowsMore));
    let removed = old.replace("      pc: 10.0.1.10\n", "      pc2: 10.0.1.12\n");
    assert_eq!(
        lines(&old, &removed),
        vec![
            "~ zone office: + hosts pc2 (10.0.1.12)",
            "~ zone office: - hosts pc (10.0.1.10)"
        ]
    );
}

#[test]
fn conduits_added_and_removed_with_their_rules() {
    let none = policy("", "  []\n");
    let one = policy(
        "",
        r"  - name: reads
    from: office/pc
    to: plant/plc
    on_deny: reset
    allow:
      - modbus: { functions: [read_holding_registers], units: [1] }
      - tcp: { ports: [22] }
",
    );
    assert_eq!(
        lines(&none, &one),
        vec![
            "+ conduit reads: from office/pc to plant/plc; mode enforce; on_deny reset",
            "+ conduit reads: tcp ports 22",
            "+ conduit reads: modbus rule on port 502: functions read_holding_registers (3); \
             units 1; addresses any",
        ]
    );
    let added = changes(&none, &one);
    assert!(added.iter().all(|c| c.effect == Some(Effect::AllowsMore)));
    assert_eq!(added[2].path, ["conduits", "reads", "allow", "modbus:502"]);
    assert_eq!(
        lines(&one, &none),
        vec![
            "- conduit reads: from office/pc to plant/plc; mode enforce; on_deny reset",
            "- conduit reads: tcp ports 22",
            "- conduit reads: modbus rule on port 502: functions read_holding_registers (3); \
             units 1; addresses any",
        ]
    );
    let removed = changes(&one, &none);
    assert!(removed.iter().all(|c| c.effect == Some(Effect::AllowsLess)));
    assert!(removed
        .iter()
        .all(|c| c.kind == Kind::Removed && c.after.is_none()));
}

#[test]
fn conduit_ends_mode_and_on_deny() {
    let conduit = |from: &str, to: &str, extra: &str| {
        policy(
            "",
            &format!(
                "  - name: c\n    from: {from}\n    to: {to}\n{extra}    allow: [{{ tcp: {{ ports: [22] }} }}]\n"
            ),
        )
    };
    let old = conduit("office/pc", "plant/plc", "");
    let wider = only(&old, &conduit("office", "plant/plc", ""));
    assert_eq!(wider.text, "~ conduit c: from office/pc -> office");
    assert_eq!(wider.path, ["conduits", "c", "from"]);
    assert_eq!(wider.effect, Some(Effect::AllowsMore));
    let narrower = only(
        &conduit("office", "plant", ""),
        &old.replace("from: office/pc", "from: office"),
    );
    assert_eq!(narrower.text, "~ conduit c: to plant -> plant/plc");
    assert_eq!(narrower.effect, Some(Effect::AllowsLess));
    let elsewhere = only(&old, &conduit("office/pc", "office", ""));
    assert_eq!(elsewhere.text, "~ conduit c: to plant/plc -> office");
    assert_eq!(elsewhere.effect, None);

    let monitor = only(
        &old,
        &conduit("office/pc", "plant/plc", "    mode: monitor\n"),
    );
    assert_eq!(monitor.text, "~ conduit c: mode enforce -> monitor");
    assert_eq!(monitor.effect, Some(Effect::AllowsMore));
    let reset = only(
        &old,
        &conduit("office/pc", "plant/plc", "    on_deny: reset\n"),
    );
    assert_eq!(reset.text, "~ conduit c: on_deny drop -> reset");
    assert_eq!(reset.effect, Some(Effect::Neutral));
    assert_eq!(
        (reset.before, reset.after),
        (
            Some(Value::Text("drop".into())),
            Some(Value::Text("reset".into()))
        )
    );
    // A conduit's own value that equals the default is no change.
    assert!(changes(
        &old,
        &conduit("office/pc", "plant/plc", "    mode: enforce\n")
    )
    .is_empty());
}

#[test]
fn ports_and_icmp_types() {
    let old = allowing("[{ tcp: { ports: [22, \"8000-8100\"] } }, { udp: { ports: [161] } }, { icmp: { types: [echo_request] } }]");
    let new = allowing("[{ tcp: { ports: [22, \"8050-8200\"] } }, { icmp: { types: [echo_request, echo_reply, 13] } }, { udp: { ports: [162] } }]");
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ conduit c: + tcp ports 8101-8200",
            "~ conduit c: - tcp ports 8000-8049",
            "~ conduit c: + udp ports 162",
            "~ conduit c: - udp ports 161",
            "~ conduit c: + icmp types echo_reply, timestamp_request",
        ]
    );
    let all = changes(&old, &new);
    assert_eq!(all[0].after, Some(Value::List(vec!["8101-8200".into()])));
    assert_eq!(all[1].before, Some(Value::List(vec!["8000-8049".into()])));
    assert_eq!(all[1].effect, Some(Effect::AllowsLess));
    assert_eq!(all[4].path, ["conduits", "c", "allow", "icmp"]);
    // A number is an ICMPv4 type only: dropping `echo_request` for 8 loses ICMPv6 128.
    assert_eq!(
        lines(
            &allowing("[{ icmp: { types: [echo_request] } }]"),
            &allowing("[{ icmp: { types: [8] } }]")
        ),
        vec!["~ conduit c: - icmp types ICMPv6 128 (echo_request)"]
    );
}

#[test]
fn modbus_functions_units_and_addresses() {
    let rule = |body: &str| allowing(&format!("[{{ modbus: {{ {body} }} }}]"));
    let old =
        rule("functions: [read], units: [1, 255], addresses: { holding_registers: [\"0-99\"] }");
    let new = rule(
        "functions: [read, write_single_register], units: [1], \
         addresses: { holding_registers: [\"0-199\"], coils: [\"0-63\"] }",
    );
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ conduit c: modbus rule on port 502: + functions write_single_register (6)",
            "~ conduit c: modbus rule on port 502: - units 255",
            "~ conduit c: modbus rule on port 502: coils any -> 0-63",
            "~ conduit c: modbus rule on port 502: + holding_registers 100-199",
        ]
    );
    let all = changes(&old, &new);
    assert_eq!(
        all[0].path,
        ["conduits", "c", "allow", "modbus:502", "functions"]
    );
    assert_eq!(
        all[0].after,
        Some(Value::List(vec!["write_single_register (6)".into()]))
    );
    let effects: Vec<_> = all.iter().map(|c| c.effect).collect();
    assert_eq!(
        effects,
        [
            Effect::AllowsMore,
            Effect::AllowsLess,
            Effect::AllowsLess,
            Effect::AllowsMore
        ]
        .map(Some)
    );
    assert_eq!(
        all[3].path,
        [
            "conduits",
            "c",
            "allow",
            "modbus:502",
            "addresses",
            "holding_registers"
        ]
    );

    // Sub-functions: the diagnostics preset leaves out 1 and 4 until they are named.
    assert_eq!(
        lines(
            &rule("functions: [read]"),
            &rule("functions: [read, diagnostics]")
        ),
        vec![
            "~ conduit c: modbus rule on port 502: + functions read_exception_status (7), \
             diagnostics (8) except 8/1, 8/4, get_comm_event_counter (11), \
             get_comm_event_log (12), report_server_id (17)"
        ]
    );
    assert_eq!(
        lines(
            &rule("functions: [diagnostics]"),
            &rule("functions: [diagnostics, \"8/1\"]")
        ),
        vec!["~ conduit c: modbus rule on port 502: + functions 8/1"]
    );
    assert_eq!(
        lines(
            &rule("functions: [read, 43]"),
            &rule("functions: [read, \"43/13\"]")
        ),
        vec![
            "~ conduit c: modbus rule on port 502: - functions \
             encapsulated_interface_transport (43) except 43/13, read_device_identification (43/14)"
        ]
    );
    assert_eq!(
        lines(
            &rule("functions: [all]"),
            &rule("functions: [read, write, umas]")
        ),
        vec![
            "~ conduit c: modbus rule on port 502: - functions read_exception_status (7), \
             diagnostics (8), 9-10, get_comm_event_counter (11), get_comm_event_log (12), 13-14, \
             report_server_id (17), 18-19, 25-42, encapsulated_interface_transport (43) except \
             read_device_identification (43/14), 44-89, 91-127"
        ]
    );
    assert_eq!(
        lines(&rule("functions: [read]"), &rule("functions: [all]")),
        vec![
            "~ conduit c: modbus rule on port 502: + functions write_single_coil (5), \
             write_single_register (6), read_exception_status (7), diagnostics (8), 9-10, \
             get_comm_event_counter (11), get_comm_event_log (12), 13-14, \
             write_multiple_coils (15), write_multiple_registers (16), report_server_id (17), \
             18-19, write_file_record (21), mask_write_register (22), \
             read_write_multiple_registers (23), 25-42, encapsulated_interface_transport (43) \
             except read_device_identification (43/14), 44-89, umas (90), 91-127"
        ]
    );
    assert_eq!(
        lines(
            &rule("functions: [read], units: [3]"),
            &rule("functions: [read]")
        ),
        vec!["~ conduit c: modbus rule on port 502: units 3 -> any"]
    );
}

#[test]
fn modbus_rules_are_matched_by_port() {
    let two = allowing(
        "[{ modbus: { functions: [read] } }, { modbus: { port: 5020, functions: [write] } }]",
    );
    let moved = allowing(
        "[{ modbus: { functions: [read] } }, { modbus: { port: 5021, functions: [write] } }]",
    );
    assert_eq!(
        lines(&two, &moved),
        vec!["~ conduit c: modbus rule on port 5020 -> 5021"]
    );
    let one = allowing("[{ modbus: { functions: [read] } }]");
    let removed = only(&two, &one);
    assert_eq!(
        removed.text,
        "~ conduit c: - modbus rule on port 5020: functions write_single_coil (5), \
         write_single_register (6), write_multiple_coils (15), write_multiple_registers (16), \
         write_file_record (21), mask_write_register (22), read_write_multiple_registers (23); \
         units any; addresses any"
    );
    assert_eq!(removed.kind, Kind::Removed);
    assert_eq!(removed.effect, Some(Effect::AllowsLess));
    // The datapath stops at the first rule on a port: a second one there changes nothing.
    let shadowed =
        allowing("[{ modbus: { functions: [read] } }, { modbus: { functions: [all] } }]");
    assert!(changes(&one, &shadowed).is_empty());
    // A single rule moved to another port, with a change inside.
    let lines = lines(
        &one,
        &allowing("[{ modbus: { port: 5020, functions: [read, 6] } }]"),
    );
    assert_eq!(
        lines,
        vec![
            "~ conduit c: modbus rule on port 502 -> 5020",
            "~ conduit c: modbus rule on port 5020: + functions write_single_register (6)",
        ]
    );
}

#[test]
fn enip_commands_services_objects_tags_and_io() {
    let rule = |body: &str| allowing(&format!("[{{ enip: {{ {body} }} }}]"));
    let old = rule("services: [read, 0x10], tags: [Line1_*]");
    let new = rule(
        "commands: [default, nop], services: [read, write_tag], \
         objects: [{ class: 0x01, services: [0x4B, get_attribute_single] }], \
         tags: [line1_*, Line2_Speed, LINE1_SPEED], io: true",
    );
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ conduit c: enip rule on port 44818: + commands nop (0x00)",
            "~ conduit c: enip rule on port 44818: + services write_tag (0x4D)",
            "~ conduit c: enip rule on port 44818: + objects class 0x01: 0x4B",
            "~ conduit c: enip rule on port 44818: - services set_attribute_single (0x10)",
            "~ conduit c: enip rule on port 44818: + tags Line2_Speed",
            "~ conduit c: enip rule on port 44818: io false -> true",
        ]
    );
    let all = changes(&old, &new);
    assert_eq!(
        all[1].path,
        ["conduits", "c", "allow", "enip:44818", "services"]
    );
    assert_eq!(
        all[2].path,
        ["conduits", "c", "allow", "enip:44818", "objects"]
    );
    assert_eq!(all[3].effect, Some(Effect::AllowsLess));
    assert_eq!(all[5].effect, Some(Effect::AllowsMore));

    assert_eq!(
        lines(&rule("services: [read]"), &rule("services: [all]")),
        vec!["~ conduit c: enip rule on port 44818: + services all (every service on every class)"]
    );
    assert_eq!(
        lines(
            &rule("services: [all]"),
            &rule("services: [get_attribute_single]")
        ),
        vec![
            "~ conduit c: enip rule on port 44818: - services all (every service on every \
             class); still allowed: get_attribute_single (0x0E)"
        ]
    );
    assert_eq!(
        lines(
            &rule("services: [read]"),
            &rule("services: [read], tags: [Line1_*, Line2_*]")
        ),
        vec!["~ conduit c: enip rule on port 44818: tags any -> Line1_*, Line2_*"]
    );
    assert_eq!(
        lines(&rule("tags: [Line1_*]"), &rule("tags: [Line1_Speed]")),
        vec!["~ conduit c: enip rule on port 44818: - tags Line1_*"]
    );
    assert_eq!(
        lines(&rule("port: 44818"), &rule("port: 44819")),
        vec!["~ conduit c: enip rule on port 44818 -> 44819"]
    );
    // A class grant that a grant on every class covers is not shown twice.
    let covered = only(
        &allowing("[{ tcp: { ports: [22] } }]"),
        &allowing(
            "[{ tcp: { ports: [22] } }, { enip: { services: [get_attribute_single], \
             objects: [{ class: 1, services: [0x0E, 0x4B] }] } }]",
        ),
    );
    assert_eq!(
        covered.text,
        "~ conduit c: + enip rule on port 44818: commands default; services \
         get_attribute_single (0x0E); objects class 0x01: 0x4B; tags any"
    );
    let added = only(&allowing("[{ tcp: { ports: [22] } }]"), &allowing("[{ tcp: { ports: [22] } }, { enip: { services: [read_tag], tags: [Line1_*], io: true } }]"));
    assert_eq!(
        added.text,
        "~ conduit c: + enip rule on port 44818: commands default; services read_tag (0x4C); \
         tags Line1_*; io (class 0/1 I/O on UDP 2222)"
    );
}

#[test]
fn defaults_and_gateway() {
    let old = policy("", "  []\n");
    let new = policy(
        "defaults:\n  action: allow\n  intra_zone: deny\n  unzoned: allow\n  non_ip: [arp, stp, 0x88b8]\n  midstream: deny\n  mode: monitor\n  on_deny: reset\n  timeouts: { udp: 60, tcp: 9000 }\n",
        "  []\n",
    )
    .replace("bridge: br0", "bridge: br1");
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ gateway: bridge br0 -> br1",
            "~ defaults: action deny -> allow",
            "~ defaults: intra_zone allow -> deny",
            "~ defaults: unzoned deny -> allow",
            "~ defaults: + non_ip stp, 0x88b8",
            "~ defaults: midstream adopt -> deny",
            "~ defaults: mode enforce -> monitor",
            "~ defaults: on_deny drop -> reset",
            "~ defaults: timeouts.udp 120 s -> 60 s",
            "~ defaults: timeouts.tcp 7200 s -> 9000 s",
        ]
    );
    let effects: Vec<_> = changes(&old, &new).iter().map(|c| c.effect).collect();
    assert_eq!(
        effects,
        vec![
            None,
            Some(Effect::AllowsMore),
            Some(Effect::AllowsLess),
            Some(Effect::AllowsMore),
            Some(Effect::AllowsMore),
            Some(Effect::AllowsLess),
            Some(Effect::AllowsMore),
            Some(Effect::Neutral),
            Some(Effect::AllowsLess),
            Some(Effect::AllowsMore),
        ]
    );
    let interfaces = |list: &str| old.replace("bridge: br0", &format!("interfaces: {list}"));
    assert_eq!(
        lines(&interfaces("[eth1, eth2]"), &interfaces("[eth3, eth1]")),
        vec![
            "~ gateway: + interfaces eth3",
            "~ gateway: - interfaces eth2"
        ]
    );
    assert_eq!(
        lines(&old, &interfaces("[eth1]")),
        vec!["~ gateway: attachment bridge br0 -> interfaces eth1"]
    );
}

#[test]
fn a_default_mode_reaches_every_conduit_without_its_own() {
    let conduits = "  - name: own\n    from: office\n    to: plant\n    mode: enforce\n    allow: [{ tcp: { ports: [22] } }]\n  - name: inherits\n    from: office\n    to: plant/plc\n    allow: [{ tcp: { ports: [23] } }]\n";
    let old = policy("", conduits);
    let new = policy("defaults: { mode: monitor }", conduits);
    assert_eq!(
        lines(&old, &new),
        vec![
            "~ defaults: mode enforce -> monitor",
            "~ conduit inherits: mode enforce -> monitor",
        ]
    );
}

#[test]
fn effects_follow_what_traffic_outside_the_conduit_meets() {
    let rules = "[{ tcp: { ports: [22] } }]";
    let with_rule = "[{ tcp: { ports: [22] } }, { modbus: { functions: [read] } }]";
    let conduit = |defaults: &str, to: &str, allow: &str| {
        policy(
            defaults,
            &format!("  - name: c\n    from: office\n    to: {to}\n    allow: {allow}\n"),
        )
    };
    // Denied by default: a new rule lets more through.
    let denied = only(
        &conduit("", "plant", rules),
        &conduit("", "plant", with_rule),
    );
    assert_eq!(denied.effect, Some(Effect::AllowsMore));
    // Allowed by default: an inspected rule narrows its port; a plain one changes nothing.
    let open = "defaults: { action: allow }";
    let inspected = only(
        &conduit(open, "plant", rules),
        &conduit(open, "plant", with_rule),
    );
    assert_eq!(inspected.effect, Some(Effect::AllowsLess));
    let plain = only(
        &conduit(open, "plant", rules),
        &conduit(open, "plant", "[{ tcp: { ports: [22, 23] } }]"),
    );
    assert_eq!(plain.effect, Some(Effect::Neutral));
    // Inside a zone under `intra_zone: allow` the datapath never asks the conduit.
    let inside = only(
        &conduit("", "office", rules),
        &conduit("", "office", with_rule),
    );
    assert_eq!(inside.effect, Some(Effect::Neutral));
    let strict = "defaults: { intra_zone: deny }";
    let inside = only(
        &conduit(strict, "office", rules),
        &conduit(strict, "office", with_rule),
    );
    assert_eq!(inside.effect, Some(Effect::AllowsMore));
}
