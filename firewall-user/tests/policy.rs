//! Policy pipeline tests through the public API: every key, every error with its position,
//! lints, and the compiled map contents.

use firewall_common::conduit::*;
use firewall_common::config::*;
use firewall_common::flow::MAX_FLOWS;
use firewall_common::zone::{zone_charge, ZoneInfo, ZoneMatch, UNZONED_CHARGE, ZONE_FLAG_PORTS};
use otfw::policy::compiled::{Attachment, RuleKey};
use otfw::policy::enip::{CipService, CipTarget};
use otfw::policy::modbus::SubFunctions;
use otfw::policy::validated::{Allow, PortRange};
use otfw::policy::{check_str, LoadedPolicy};

/// Diagnostics as `line:col: severity: message`.
fn check(text: &str) -> Vec<String> {
    let (_, diagnostics) = check_str("p.yaml", text);
    diagnostics
        .iter()
        .map(|d| d.to_string().trim_start_matches("p.yaml:").to_string())
        .collect()
}

fn load(text: &str) -> LoadedPolicy {
    let (loaded, diagnostics) = check_str("p.yaml", text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    loaded.unwrap()
}

/// Errors only (lints are tested separately).
fn errors(text: &str) -> Vec<String> {
    check(text)
        .into_iter()
        .filter(|d| d.contains(": error: "))
        .collect()
}

fn warnings(text: &str) -> Vec<String> {
    check(text)
        .into_iter()
        .filter(|d| d.contains(": warning: "))
        .collect()
}

/// Two zones with a host each; lines 1-13.
const ZONES: &str = "\
version: 1
gateway:
  bridge: br0
zones:
  a:
    networks: [10.0.1.0/24]
    security_level: 1
    hosts:
      h1: 10.0.1.10
  b:
    networks: [10.0.2.0/24, \"2001:db8:2::/64\"]
    hosts:
      h2: 10.0.2.10
";

fn with_conduits(conduits: &str) -> String {
    format!("{ZONES}conduits:\n{}", conduits.trim_start_matches('\n'))
}

#[test]
fn acceptance_unknown_key_bad_cidr_and_unknown_zone_are_all_reported() {
    let text = include_str!("data/three-errors.yaml");
    assert_eq!(
        check(text),
        vec![
            "6:29: error: `10.0.300.0/24` is not a network in CIDR notation (e.g. 10.0.0.0/24)",
            "7:5: error: unknown key `colour` in zone; expected one of: networks, ports, \
             security_level, description, hosts",
            "11:9: error: unknown zone `plant` in `to`; zones are: office",
        ]
    );
}

#[test]
fn every_key_of_the_format_is_read() {
    let text = r#"
version: 1
gateway:
  interfaces: [eth1, eth2]
defaults:
  action: deny
  intra_zone: deny
  unzoned: allow
  non_ip: [arp, lldp, stp, 0x88b5, "0x9000"]
  midstream: deny
  mode: monitor
  on_deny: reset
  timeouts: { udp: 30, tcp: 600 }
zones:
  enterprise:
    networks: [10.0.0.0/26, "2001:db8:1::/64"]
    ports: [eth1]
    security_level: 1
    description: Business network
    hosts:
      historian: 10.0.0.5
  cell-1:
    networks: [10.0.0.128/26]
    security_level: 3
    hosts:
      plc-1: 10.0.0.130
      plc-6: "2001:db8:1::6"
conduits:
  - name: historian-reads
    description: polling
    from: enterprise/historian
    to: cell-1/plc-1
    mode: enforce
    on_deny: drop
    allow:
      - modbus:
          port: 5020
          units: [1, 255]
          functions: [read, "8/10", 0x2B]
          addresses:
            holding_registers: ["0-999"]
            input_registers: ["0-99", "200-299"]
            coils: ["0-63"]
            discrete_inputs: [7]
  - name: engineering
    from: enterprise
    to: cell-1
    allow:
      - modbus: { functions: [read] }
      - enip:
          port: 44819
          commands: [default, nop, 0x72]
          services: [read, write_tag]
          tags: ["Line1_*", "Recipe.Setpoint"]
          objects:
            - { class: 0x01, services: [get_attribute_single, get_attributes_all] }
            - { class: 0x06, services: [forward_open, 0x4E] }
          io: true
      - tcp: { ports: [22, "8000-8100"] }
      - udp: { ports: [161] }
      - icmp: { types: [echo_request, 13] }
"#;
    let loaded = load(text);
    let p = &loaded.policy;
    assert_eq!(
        p.gateway,
        Attachment::Interfaces(vec!["eth1".into(), "eth2".into()])
    );
    let d = &p.defaults;
    assert_eq!(d.non_ip, vec![0x0806, 0x88cc, NON_IP_STP, 0x88b5, 0x9000]);
    assert_eq!((d.udp_idle_secs, d.tcp_idle_secs), (30, 600));
    let enterprise = &p.zones[0];
    assert_eq!(enterprise.ports, vec!["eth1".to_string()]);
    assert_eq!(enterprise.security_level, Some(1));
    assert_eq!(enterprise.description.as_deref(), Some("Business network"));
    assert_eq!(p.zones[1].hosts[1].addr.to_string(), "2001:db8:1::6");
    let reads = &p.conduits[0];
    assert_eq!(reads.description.as_deref(), Some("polling"));
    let Allow::Modbus(m) = &reads.allow[0] else {
        panic!("not modbus")
    };
    assert_eq!(m.port, 5020);
    assert_eq!(m.units, Some([1, 255].into()));
    assert_eq!(m.functions[&8], SubFunctions::Only([10].into()));
    assert_eq!(m.functions[&43], SubFunctions::Any);
    assert_eq!(m.addresses.input_registers, Some(vec![(0, 99), (200, 299)]));
    assert_eq!(m.addresses.discrete_inputs, Some(vec![(7, 7)]));
    let Allow::Enip(e) = &p.conduits[1].allow[1] else {
        panic!("not enip")
    };
    assert_eq!(e.port, 44819);
    assert!(e.commands.contains(&0) && e.commands.contains(&0x72) && e.commands.contains(&0x6F));
    assert!(e.services.contains(&CipService {
        code: 0x4D,
        target: CipTarget::Symbolic
    }));
    assert_eq!(e.tags.as_ref().unwrap().len(), 2);
    assert_eq!(e.objects[&0x06], [0x4E, 0x54].into());
    assert!(e.io);
    assert_eq!(
        p.conduits[1].allow[2],
        Allow::Tcp(vec![
            PortRange::single(22),
            PortRange { lo: 8000, hi: 8100 }
        ])
    );
    let Allow::Icmp(icmp) = &p.conduits[1].allow[4] else {
        panic!("not icmp")
    };
    assert_eq!((icmp.v4.clone(), icmp.v6.clone()), (vec![8, 13], vec![128]));
}

#[test]
fn version_and_gateway_errors() {
    assert_eq!(
        errors("version: 2\ngateway: {bridge: br0, interfaces: [eth1]}\n"),
        vec![
            "1:10: error: unsupported policy version `2`; this otfw reads version 1",
            "2:10: error: set exactly one of `gateway.bridge` (attach to all its ports) and \
             `gateway.interfaces` (attach to these ports)",
        ]
    );
    assert_eq!(
        errors("zones: {}\n"),
        vec![
            "1:1: error: missing `version: 1` (the policy format version)",
            "1:1: error: missing `gateway`: set `gateway.bridge` to the bridge to protect, or \
             `gateway.interfaces` to the bridge ports to attach to",
        ]
    );
    assert_eq!(
        errors(
            "version: 1\ngateway:\n  interfaces: [eth1, eth1, \"a/b\"]\nzones:\n  a: {ports: [eth9]}\n"
        ),
        vec![
            "3:22: error: interface `eth1` is listed twice",
            "3:28: error: `a/b` is not a valid interface name (1 to 15 characters, no `/`, `:` \
             or blanks)",
        ]
    );
    assert_eq!(
        errors("version: 1\ngateway:\n  interfaces: [eth1]\nzones:\n  a: {ports: [eth9]}\n"),
        vec![
            "5:15: error: port `eth9` is not one of `gateway.interfaces` (eth1); the firewall \
             only sees those ports"
        ]
    );
}

#[test]
fn defaults_errors() {
    let text = "\
version: 1
gateway: {bridge: br0}
defaults:
  non_ip: [arp, ipx, 0x0500, 0x88cc]
  timeouts: {udp: 0}
";
    assert_eq!(
        errors(text),
        vec![
            "4:17: error: unknown ethertype name `ipx`; expected arp, lldp, stp or a number \
             0x0600..0xffff",
            "4:22: error: ethertype `1280` is out of range 0x0600..0xffff (values below 0x0600 \
             are 802.3 lengths; write `stp` for spanning tree)",
            "5:19: error: timeout (seconds) 0 is out of range 1..4294967295",
        ]
    );
    let nine = "version: 1\ngateway: {bridge: br0}\ndefaults:\n  non_ip: [arp, lldp, stp, \
                0x0600, 0x0601, 0x0602, 0x0603, 0x0604, 0x0605]\n";
    assert_eq!(
        errors(nine),
        vec!["4:11: error: 9 ethertypes in `non_ip`; the datapath holds at most 8"]
    );
    assert_eq!(
        errors("version: 1\ngateway: {bridge: br0}\ndefaults: {action: alow}\n"),
        vec!["3:20: error: defaults.action: unknown variant `alow`, expected `allow` or `deny`"]
    );
}

#[test]
fn zone_and_host_errors() {
    let text = "\
version: 1
gateway: {bridge: br0}
zones:
  a:
    networks: [10.0.1.5/24, 10.0.9.9, \"2001:db8::/129\"]
    security_level: 5
    hosts:
      h1: 10.0.1.999
      h2: 10.0.1.20
  b:
    networks: [10.0.1.0/24, 10.0.2.0/24]
    hosts:
      h3: 10.0.1.20
  c/d: {}
";
    assert_eq!(
        errors(text),
        vec![
            "5:16: error: network `10.0.1.5/24` has host bits set; write 10.0.1.0/24 (or list \
             the address under `hosts`)",
            "5:29: error: `10.0.9.9` is not a network in CIDR notation (e.g. 10.0.0.0/24); for \
             one address write 10.0.9.9/32",
            "5:39: error: `2001:db8::/129` is not a network in CIDR notation (e.g. 10.0.0.0/24)",
            "6:21: error: security_level 5 is out of range 0..4",
            "8:11: error: host `h1`: `10.0.1.999` is not an IP address (e.g. 10.0.0.5 or \
             2001:db8::5)",
            "13:11: error: address 10.0.1.20 is already a host of zone `a`",
            "14:3: error: zone name `c/d` must be non-empty, without `/` or blanks",
        ]
    );
    assert_eq!(
        errors("version: 1\ngateway: {bridge: br0}\nzones:\n  a: {networks: [10.0.0.0/8]}\n  b: {networks: [10.0.0.0/8]}\n"),
        vec!["5:18: error: network 10.0.0.0/8 is already listed in zone `a`"]
    );
}

#[test]
fn conduit_errors() {
    let text = with_conduits(
        "
  - name: c1
    from: a/nobody
    to: nowhere
    allow: []
  - name: c1
    from: a
    to: b
  - from: b
    to: a
    allow:
      - {}
      - tcp: {ports: [1]}
        udp: {ports: [1]}
      - tcp: {ports: [0, 70000, \"20-10\", http, \"1-2\"]}
      - tcp: {}
      - udp: {ports: []}
      - icmp: {types: [echo_request, echo, 256]}
",
    );
    assert_eq!(
        errors(&text),
        vec![
            "16:11: error: zone `a` has no host `nobody` (in `from`); its hosts are: h1",
            "17:9: error: unknown zone `nowhere` in `to`; zones are: a, b",
            "18:12: error: `allow` is empty, so the conduit allows nothing; add rules or remove \
             the conduit",
            "19:5: error: conduit needs `allow`: a list of tcp, udp, icmp, modbus, enip rules",
            "19:11: error: conduit name `c1` is already used on line 15",
            "22:5: error: conduit needs a `name` (used in metrics, events and errors)",
            "25:9: error: allow item names no protocol; use one of tcp, udp, icmp, modbus, enip",
            "26:9: error: allow item names several protocols (tcp, udp); give each its own `- ` \
             item",
            "28:23: error: port 0 is out of range 1..65535",
            "28:26: error: port 70000 is out of range 1..65535",
            "28:33: error: port range `20-10` runs backwards; write it as 10-20",
            "28:42: error: port `http` is not a number",
            "29:14: error: rule needs `ports`, e.g. `ports: [22, \"8000-8100\"]`",
            "30:22: error: `ports` is empty, e.g. `ports: [22, \"8000-8100\"]`",
            "31:38: error: unknown ICMP type `echo`; expected a name (echo_reply, \
             destination_unreachable, packet_too_big, redirect, echo_request, \
             router_advertisement, router_solicitation, time_exceeded, parameter_problem, \
             timestamp_request, timestamp_reply) or an ICMPv4 type number 0..255",
            "31:44: error: ICMP type 256 is out of range 0..255",
        ]
    );
}

#[test]
fn modbus_and_enip_errors() {
    let text = with_conduits(
        "
  - name: c
    from: a
    to: b
    allow:
      - modbus:
          port: 0
          units: [1, 256]
          functions: [read, raed, 131, \"43/300\"]
          addresses:
            coils: [\"5-1\", 70000]
            registers: [1]
      - modbus: {units: [1]}
      - enip:
          commands: [default, hello]
          services: [read, 0x4C, fly]
          tags: [\"ok_tag\", \"no spaces\"]
          objects:
            - {class: 0x01, services: [forward_open, 0x0E]}
            - {services: [1]}
            - {class: 0x10000, services: [1]}
",
    );
    let errors = errors(&text);
    let positions: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        positions,
        vec![
            "20:17", "21:22", "22:29", "22:35", "22:40", "24:21", "24:28", "25:13", "26:17",
            "28:31", "29:28", "29:34", "30:28", "32:40", "33:15", "34:23",
        ],
        "{errors:#?}"
    );
    let expect = [
        "port 0 is out of range 1..65535",
        "unit id 256 is out of range 0..255",
        "unknown modbus function `raed`; expected a preset (read, write, diagnostics, program, all)",
        "modbus function 131 is an exception response code (128..255), never a request",
        "MEI type 300 is out of range 0..255",
        "address range `5-1` runs backwards; write it as 1-5",
        "address 70000 is out of range 0..65535",
        "unknown key `registers` in modbus addresses; expected one of: coils, discrete_inputs, \
         holding_registers, input_registers",
        "modbus rule needs `functions`, e.g. `functions: [read]`",
        "unknown encapsulation command `hello`; expected `default`, a name (nop, list_services,",
        "CIP service 0x4C means something different on every class; name it or list it under \
         `objects` with its class",
        "unknown CIP service `fly`; expected a preset (read, write, admin, all)",
        "tag `no spaces` contains ` `",
        "`forward_open` is a service of class 0x06, not of class 0x01",
        "CIP object needs `class`, e.g. `class: 0x01`",
        "CIP class 65536 is out of range 0..65535",
    ];
    for (error, expected) in errors.iter().zip(expect) {
        assert!(
            error.contains(expected),
            "{error}\n  should contain: {expected}"
        );
    }
}

#[test]
fn yaml_problems_are_reported_where_they_are() {
    assert_eq!(
        check("version: 1\nversion: 1\ngateway: {bridge: br0}\n"),
        vec!["2:1: error: duplicate key `version` (first on line 1); keep one"]
    );
    assert_eq!(
        check("version: 1\ngateway: [br0\n"),
        vec!["3:1: error: not valid YAML: while parsing a flow sequence, expected ',' or ']'"]
    );
    let wrong_type = with_conduits("  - name: c\n    from: a\n    to: b\n    allow: 5\n");
    let errors = errors(&wrong_type);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "18:12: error: conduits[0].allow: invalid type: integer `5`, expected a sequence"
        ),
        "{errors:?}"
    );
}

#[test]
fn lints() {
    let text = "\
version: 1
gateway: {bridge: br0}
defaults: {action: allow}
zones:
  low:
    networks: [10.0.0.0/16, 10.0.1.0/24]
    security_level: 1
    hosts:
      stray: 192.168.0.1
  high:
    networks: [10.0.2.0/24]
    security_level: 3
    hosts:
      plc: 10.0.2.10
  empty: {}
conduits:
  - name: wide
    from: low
    to: high
    allow:
      - tcp: {ports: [\"1-1000\"]}
      - modbus: {functions: [write]}
  - name: narrow
    from: low/stray
    to: high/plc
    allow:
      - tcp: {ports: [22, 502]}
  - name: inside
    from: high
    to: high
    allow:
      - enip: {services: [admin], io: true}
";
    assert_eq!(
        warnings(text),
        vec![
            "3:20: warning: `defaults.action: allow` lets any inter-zone traffic through that no conduit covers; conduits then only add inspection",
            "6:29: warning: network 10.0.1.0/24 overlaps 10.0.0.0/16 of the same zone; keep one",
            "9:14: warning: host `stray` (192.168.0.1) lies outside the networks of zone `low`",
            "11:16: warning: network 10.0.2.0/24 overlaps 10.0.0.0/16 of zone `low`; addresses in both belong to the zone with the longer prefix",
            "15:10: warning: zone `empty` has no networks and no hosts, so no address is in it",
            "22:9: warning: conduit `wide` grants modbus write or program functions from zone `low` (security level 1) into zone `high` (security level 3); a lower level should not change a higher one",
            "23:11: warning: conduit `narrow` is redundant: conduit `wide` already allows everything it allows",
            "30:9: warning: conduit `inside` stays inside zone `high`, where `defaults.intra_zone: allow` already lets all traffic through",
            "32:39: warning: `io: true` admits I/O only for connections opened by an allowed Forward_Open, and this rule allows neither forward_open nor large_forward_open",
        ]
    );
}

#[test]
fn overlapping_networks_of_different_zones_and_enip_writes_upward() {
    let text = "\
version: 1
gateway: {bridge: br0}
zones:
  plant:
    networks: [10.0.0.0/8]
    security_level: 2
  cell:
    networks: [10.0.3.0/24]
    security_level: 3
conduits:
  - name: upward
    from: plant
    to: cell
    allow:
      - enip: {services: [read, write]}
  - name: same
    from: plant
    to: cell
    allow:
      - enip: {services: [read, write]}
";
    assert_eq!(
        warnings(text),
        vec![
            "8:16: warning: network 10.0.3.0/24 overlaps 10.0.0.0/8 of zone `plant`; addresses in both belong to the zone with the longer prefix",
            "15:9: warning: conduit `upward` grants CIP write or admin services from zone `plant` (security level 2) into zone `cell` (security level 3); a lower level should not change a higher one",
            "16:11: warning: conduit `same` is redundant: conduit `upward` already allows everything it allows",
            "20:9: warning: conduit `same` grants CIP write or admin services from zone `plant` (security level 2) into zone `cell` (security level 3); a lower level should not change a higher one",
        ]
    );
}

#[test]
fn compiles_ids_names_prefixes_and_config() {
    let loaded = load(&with_conduits(
        "
  - name: first
    from: a/h1
    to: b
    on_deny: reset
    allow:
      - tcp: {ports: [22]}
  - name: second
    from: b/h2
    to: a/h1
    mode: monitor
    allow:
      - udp: {ports: [161]}
",
    ));
    let c = &loaded.compiled;
    assert_eq!(c.attachment, Attachment::Bridge("br0".into()));
    assert_eq!(c.names.zones, vec!["(none)", "a", "b"]);
    assert_eq!(c.names.hosts, vec!["", "a/h1", "b/h2"]);
    assert_eq!(
        c.names.conduits,
        vec![
            "(none)",
            "(default)",
            "(intra-zone)",
            "(unzoned)",
            "first",
            "second"
        ]
    );
    let v4: Vec<(String, u32, ZoneMatch)> = c
        .prefixes_v4
        .iter()
        .map(|p| {
            (
                std::net::Ipv4Addr::from(p.addr).to_string(),
                p.prefix_len,
                p.target,
            )
        })
        .collect();
    let zm = |zone, host| ZoneMatch { zone, host };
    assert_eq!(
        v4,
        vec![
            ("10.0.1.0".into(), 24, zm(1, 0)),
            ("10.0.1.10".into(), 32, zm(1, 1)),
            ("10.0.2.0".into(), 24, zm(2, 0)),
            ("10.0.2.10".into(), 32, zm(2, 2)),
        ]
    );
    assert_eq!(c.prefixes_v6.len(), 1);
    assert_eq!(c.prefixes_v6[0].prefix_len, 64);
    assert_eq!(c.prefixes_v6[0].addr[..6], [0x20, 0x01, 0x0d, 0xb8, 0, 2]);
    assert_eq!(c.prefixes_v6[0].target, zm(2, 0));
    assert_eq!(
        c.zone_info,
        vec![
            (
                1,
                ZoneInfo {
                    flags: 0,
                    charge: zone_charge("a"),
                    max_flows: MAX_FLOWS / 3,
                    _pad: 0
                }
            ),
            (
                2,
                ZoneInfo {
                    flags: 0,
                    charge: zone_charge("b"),
                    max_flows: MAX_FLOWS / 3,
                    _pad: 0
                }
            )
        ]
    );
    // Hosts in no zone share the table like one more zone.
    assert_eq!(c.unzoned_info.charge, UNZONED_CHARGE);
    assert_eq!(c.unzoned_info.max_flows, MAX_FLOWS / 3);
    assert_ne!(zone_charge("a"), zone_charge("b"));
    let info = |mode, on_deny| ConduitInfo {
        mode,
        on_deny,
        _pad: [0; 2],
    };
    assert_eq!(
        c.conduits,
        vec![
            (0, info(MODE_ENFORCE, ON_DENY_DROP)),
            (1, info(MODE_ENFORCE, ON_DENY_DROP)),
            (2, info(MODE_ENFORCE, ON_DENY_DROP)),
            (3, info(MODE_ENFORCE, ON_DENY_DROP)),
            (4, info(MODE_ENFORCE, ON_DENY_RESET)),
            (5, info(MODE_MONITOR, ON_DENY_DROP)),
        ]
    );
    // Defaults left out: deny, intra_zone allow, unzoned deny, arp, adopt, 120 s / 7200 s.
    assert_eq!(c.config.flags, FLAG_INTRA_ZONE_ALLOW | FLAG_MIDSTREAM_ADOPT);
    assert_eq!(c.config.non_ip, [0x0806, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        (c.config.udp_idle_secs, c.config.tcp_idle_secs),
        (120, 7200)
    );
    assert_eq!(c.config.epoch, 0);
    let keys: Vec<RuleKey> = c.rules.iter().map(|(k, _)| *k).collect();
    let key = |proto, from_zone, from_host, to_zone, to_host| RuleKey {
        proto,
        from_zone,
        from_host,
        to_zone,
        to_host,
    };
    assert_eq!(keys, vec![key(6, 1, 1, 2, 0), key(17, 2, 2, 1, 1)]);
}

#[test]
fn compiles_config_flags_and_pseudo_conduits_from_defaults() {
    let loaded = load(
        "version: 1\ngateway: {interfaces: [eth1, eth2]}\ndefaults:\n  action: allow\n  \
         intra_zone: deny\n  unzoned: allow\n  midstream: deny\n  mode: monitor\n  on_deny: \
         reset\n  non_ip: [stp, lldp]\n  timeouts: {udp: 5, tcp: 60}\nzones:\n  a: {networks: \
         [10.0.0.0/24], ports: [eth1, eth2]}\n",
    );
    let c = &loaded.compiled;
    assert_eq!(c.config.flags, FLAG_DEFAULT_ALLOW | FLAG_UNZONED_ALLOW);
    assert_eq!(c.config.non_ip[..3], [NON_IP_STP, 0x88cc, 0]);
    assert_eq!((c.config.udp_idle_secs, c.config.tcp_idle_secs), (5, 60));
    assert!(c
        .conduits
        .iter()
        .all(|(_, i)| i.mode == MODE_MONITOR && i.on_deny == ON_DENY_RESET));
    assert_eq!(c.conduits.len(), FIRST_CONDUIT as usize);
    assert_eq!(
        c.zone_info,
        vec![(
            1,
            ZoneInfo {
                flags: ZONE_FLAG_PORTS,
                charge: zone_charge("a"),
                max_flows: MAX_FLOWS / 2,
                _pad: 0
            }
        )]
    );
    assert_eq!(
        c.zone_ports,
        vec![(1, "eth1".to_string()), (1, "eth2".to_string())]
    );
}

fn rules_of(loaded: &LoadedPolicy, proto: u8) -> Vec<(u16, u16, u16, u8)> {
    loaded
        .compiled
        .rules
        .iter()
        .filter(|(k, _)| k.proto == proto)
        .flat_map(|(_, set)| set.rules[..set.count as usize].to_vec())
        .map(|r| (r.lo, r.hi, r.conduit, r.inspect))
        .collect()
}

#[test]
fn compiles_port_rules_per_protocol() {
    let loaded = load(&with_conduits(
        "
  - name: plain
    from: a
    to: b
    allow:
      - tcp: {ports: [22, \"8000-8100\", 23, \"8050-8200\"]}
      - udp: {ports: [161]}
      - icmp: {types: [echo_request, echo_reply, packet_too_big, 13]}
  - name: inspected
    from: a
    to: b
    allow:
      - modbus: {functions: [read]}
      - enip: {services: [read, forward_open], io: true}
      - modbus: {port: 5020, functions: [read]}
",
    ));
    assert_eq!(
        rules_of(&loaded, 6),
        vec![
            (502, 502, 5, INSPECT_MODBUS),
            (44818, 44818, 5, INSPECT_ENIP),
            (5020, 5020, 5, INSPECT_MODBUS),
            (22, 23, 4, INSPECT_NONE),
            (8000, 8200, 4, INSPECT_NONE),
        ],
        "inspected rules first, adjacent and overlapping ranges joined"
    );
    let protocol_rules: Vec<u16> = loaded
        .compiled
        .rules
        .iter()
        .filter(|(k, _)| k.proto == 6)
        .flat_map(|(_, set)| set.rules[..set.count as usize].iter().map(|r| r.rule))
        .collect();
    assert_eq!(
        protocol_rules,
        vec![1, 2, 3, 0, 0],
        "each modbus/enip item has its own rule id"
    );
    assert_eq!(
        loaded
            .compiled
            .modbus_rules
            .iter()
            .map(|(id, r)| (*id, r.port))
            .collect::<Vec<_>>(),
        vec![(1, 502), (3, 5020)]
    );
    assert_eq!(
        loaded
            .compiled
            .enip_rules
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        rules_of(&loaded, 17),
        vec![
            (44818, 44818, 5, INSPECT_ENIP),
            (2222, 2222, 5, INSPECT_ENIP_IO),
            (161, 161, 4, INSPECT_NONE),
        ]
    );
    assert_eq!(
        rules_of(&loaded, 1),
        vec![
            (0, 0, 4, INSPECT_NONE),
            (8, 8, 4, INSPECT_NONE),
            (13, 13, 4, INSPECT_NONE)
        ]
    );
    assert_eq!(
        rules_of(&loaded, 58),
        vec![(2, 2, 4, INSPECT_NONE), (128, 129, 4, INSPECT_NONE)]
    );
}

#[test]
fn more_than_max_rules_per_key_is_a_compile_error_naming_the_conduits() {
    let ports = |base: u32| {
        (0..9)
            .map(|i| (base + 2 * i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = with_conduits(&format!(
        "  - name: one\n    from: a\n    to: b\n    allow:\n      - tcp: {{ports: [{}]}}\n  - name: two\n    from: a\n    to: b\n    allow:\n      - tcp: {{ports: [{}]}}\n",
        ports(1000),
        ports(2000)
    ));
    assert_eq!(
        errors(&text),
        vec![
            "24:7: error: TCP from `a` to `b` needs 18 port rules, more than the 16 the datapath \
             holds per (protocol, from, to); conduits involved: one, two. Join adjacent ports \
             into ranges, or split the traffic by host"
        ]
    );
    // Exactly MAX_RULES fits.
    let fits = with_conduits(&format!(
        "  - name: one\n    from: a\n    to: b\n    allow:\n      - tcp: {{ports: [{}, 3000, 3002, 3004, 3006, 3008, 3010, 3012]}}\n",
        ports(1000)
    ));
    assert_eq!(rules_of(&load(&fits), 6).len(), MAX_RULES);
}

#[test]
fn a_host_may_name_a_single_address_network_of_its_zone() {
    let loaded = load(
        "version: 1\ngateway: {bridge: br0}\nzones:\n  a:\n    networks: [10.0.0.0/24, \
         10.0.1.1/32]\n    hosts: {gw: 10.0.1.1}\n",
    );
    let targets: Vec<(u32, u16)> = loaded
        .compiled
        .prefixes_v4
        .iter()
        .map(|p| (p.prefix_len, p.target.host))
        .collect();
    assert_eq!(targets, vec![(24, 0), (32, 1)]);
}

#[test]
fn example_policy_compiles_with_only_its_intended_warning() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/example.yaml");
    let loaded = otfw::policy::load(std::path::Path::new(path)).expect("example.yaml loads");
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    assert!(loaded.warnings[0]
        .message
        .contains("grants modbus write or program functions from zone `engineering`"));
    let c = &loaded.compiled;
    assert_eq!(c.attachment, Attachment::Bridge("br-otfw".into()));
    assert_eq!(
        c.names.zones,
        vec!["(none)", "enterprise", "engineering", "cell-1"]
    );
    assert_eq!(
        c.names.hosts,
        vec![
            "",
            "enterprise/historian",
            "engineering/ews",
            "cell-1/plc-1"
        ]
    );
    assert_eq!(
        c.names.conduits[FIRST_CONDUIT as usize..],
        ["historian-reads", "engineering-to-cell", "remote-desktop"]
    );
    // historian (host 1 of zone 1) -> plc-1 (host 3 of zone 3): Modbus on 502, inspected.
    let key = RuleKey {
        proto: 6,
        from_zone: 1,
        from_host: 1,
        to_zone: 3,
        to_host: 3,
    };
    let (_, set) = c
        .rules
        .iter()
        .find(|(k, _)| *k == key)
        .expect("historian rule");
    assert_eq!(set.count, 1);
    assert_eq!(
        (
            set.rules[0].lo,
            set.rules[0].hi,
            set.rules[0].conduit,
            set.rules[0].inspect
        ),
        (502, 502, FIRST_CONDUIT, INSPECT_MODBUS)
    );
    assert_eq!(c.config.non_ip[0], 0x0806);
}

/// The overlap lint finds exactly the pairs a comparison of every network with every earlier one
/// finds, on many nested and disjoint networks of both families across zones.
#[test]
fn overlap_lint_matches_pairwise_comparison() {
    let mut zones: Vec<Vec<String>> = vec![Vec::new(); 5];
    // A deterministic mix: /8../30 IPv4 blocks that nest or are disjoint, and IPv6 blocks.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut all: Vec<(usize, ipnet::IpNet)> = Vec::new();
    for _ in 0..120 {
        let r = next();
        let zone = (r % 5) as usize;
        let net: ipnet::IpNet = if r % 7 == 0 {
            let len = 32 + (r >> 8) % 33;
            let addr =
                std::net::Ipv6Addr::new(0x2001, 0xdb8, ((r >> 16) % 4) as u16, 0, 0, 0, 0, 0);
            ipnet::Ipv6Net::new(addr, len as u8).unwrap().trunc().into()
        } else {
            let len = 8 + (r >> 8) % 23;
            let addr = std::net::Ipv4Addr::from((10u32 << 24) | ((r >> 20) as u32 & 0x00ff_ffff));
            ipnet::Ipv4Net::new(addr, len as u8).unwrap().trunc().into()
        };
        // The same network twice is an error, not a lint: keep the first.
        if all.iter().any(|(_, n)| *n == net) {
            continue;
        }
        all.push((zone, net));
        zones[zone].push(net.to_string());
    }
    let mut text = String::from("version: 1\ngateway:\n  bridge: br0\nzones:\n");
    for (z, nets) in zones.iter().enumerate() {
        let list: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
        text.push_str(&format!("  z{z}:\n    networks: [{}]\n", list.join(", ")));
    }
    // File order: zone by zone, network by network.
    let file_order: Vec<(usize, ipnet::IpNet)> = zones
        .iter()
        .enumerate()
        .flat_map(|(z, nets)| nets.iter().map(move |n| (z, n.parse().unwrap())))
        .collect();
    let mut expected = 0;
    for (i, (_, net)) in file_order.iter().enumerate() {
        for (_, earlier) in &file_order[..i] {
            if earlier.contains(net) || net.contains(earlier) {
                expected += 1;
            }
        }
    }
    let errs = errors(&text);
    assert!(errs.is_empty(), "{errs:?}");
    let found = warnings(&text)
        .iter()
        .filter(|w| w.contains(" overlaps "))
        .count();
    assert!(
        expected > 10,
        "the mix should overlap a lot, got {expected}"
    );
    assert_eq!(found, expected);
}
