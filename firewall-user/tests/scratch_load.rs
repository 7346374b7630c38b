use firewall_common::{conduit::*, config::*, zone::*};
use otfw::datapath::Datapath;
use otfw::policy::compiled::*;

#[test]
fn loads_and_runs() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_level(log::LevelFilter::Debug)
        .try_init();
    let t = std::time::Instant::now();
    let mut dp = Datapath::load().expect("load");
    println!(
        "load {:?} insns {:?}",
        t.elapsed(),
        dp.verified_instructions()
    );
    let mut rules = RuleSet::default();
    rules.count = 1;
    rules.rules[0] = PortRule {
        lo: 502,
        hi: 502,
        conduit: 4,
        ..Default::default()
    };
    let policy = CompiledPolicy {
        config: Config {
            flags: FLAG_MIDSTREAM_ADOPT | FLAG_INTRA_ZONE_ALLOW,
            udp_idle_secs: 60,
            tcp_idle_secs: 60,
            non_ip: [0x0806, 0, 0, 0, 0, 0, 0, 0],
            non_ip_count: 1,
            ..Default::default()
        },
        attachment: Attachment::Bridge("br0".into()),
        prefixes_v4: vec![
            Prefix {
                addr: [10, 0, 1, 0],
                prefix_len: 24,
                target: ZoneMatch { zone: 1, host: 0 },
            },
            Prefix {
                addr: [10, 0, 2, 0],
                prefix_len: 24,
                target: ZoneMatch { zone: 2, host: 0 },
            },
        ],
        prefixes_v6: vec![],
        zone_info: vec![],
        zone_ports: vec![],
        rules: vec![(
            RuleKey {
                proto: 6,
                from_zone: 1,
                from_host: 0,
                to_zone: 2,
                to_host: 0,
            },
            rules,
        )],
        conduits: vec![(4, ConduitInfo::default())],
        names: Names {
            zones: vec!["-".into(), "a".into(), "b".into()],
            hosts: vec![],
            conduits: vec![
                "(none)".into(),
                "(default)".into(),
                "(intra)".into(),
                "(unzoned)".into(),
                "c".into(),
            ],
        },
    };
    dp.install(&policy).expect("install");
    dp.enable_trace().unwrap();
    let syn = |s: [u8; 4], d: [u8; 4], sp: u16, dp_: u16, syn: bool| {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(s, d, 64)
            .tcp(sp, dp_, 1000, 1000);
        let b = if syn { b.syn() } else { b.ack(5) };
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    };
    let r = dp
        .run_frame(&syn([10, 0, 1, 5], [10, 0, 2, 5], 40000, 502, true))
        .unwrap();
    println!("{r:?}");
    assert!(r.passed());
    let r = dp
        .run_frame(&syn([10, 0, 2, 5], [10, 0, 1, 5], 502, 40000, false))
        .unwrap();
    println!("{r:?}");
    assert!(r.passed());
    let r = dp
        .run_frame(&syn([10, 0, 2, 5], [10, 0, 1, 5], 40001, 22, true))
        .unwrap();
    println!("{r:?}");
    assert!(r.dropped());
    println!("{:?}", dp.counters().unwrap());
}
