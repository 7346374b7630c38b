//! The configuration file of `otfw run` (`/etc/otfw/otfw.yaml` unless `--config` names
//! another): one YAML key per flag of `otfw run`, named like the long flag with `_` for `-`
//! (`--events-file` is `events_file`). Flags given on the command line override the file.
//! Relative paths in the file are relative to the file's directory, so a configuration and its
//! policy can move together.
//!
//! The file is read strictly, like a policy: an unknown key or a bad value is an error at its
//! `file:line:col`, and `otfw run` starts with nothing attached rather than guessing.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::ValueEnum as _;
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{FastPathChoice, ModeChoice},
    policy::source::SourceMap,
};

/// Where `otfw run` looks for its configuration when `--config` is not given; a missing file
/// there is not an error (every setting then comes from the flags).
pub const DEFAULT_CONFIG: &str = "/etc/otfw/otfw.yaml";

/// The settings of `otfw run`, as a file or the command line gives them: `None` is "not set
/// here".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunConfig {
    pub policy: Option<PathBuf>,
    pub bridge: Option<String>,
    pub iface: Option<Vec<String>>,
    pub watch_interval: Option<WatchInterval>,
    pub xdp_mode: Option<XdpMode>,
    pub fast_path: Option<FastPath>,
    pub metrics: Option<MetricsSetting>,
    pub events_file: Option<PathBuf>,
    pub instance: Option<String>,
    pub no_pin: Option<bool>,
    pub inventory: Option<PathBuf>,
    pub allow_insecure_policy_permissions: Option<bool>,
    pub replace_incompatible_maps: Option<bool>,
}

/// The file as YAML types give it. Values with rules of their own are checked after parsing,
/// where the source map knows their position (serde's custom errors carry none).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    policy: Option<PathBuf>,
    bridge: Option<String>,
    iface: Option<Vec<String>>,
    watch_interval: Option<f64>,
    xdp_mode: Option<String>,
    fast_path: Option<String>,
    metrics: Option<String>,
    events_file: Option<PathBuf>,
    instance: Option<String>,
    no_pin: Option<bool>,
    inventory: Option<PathBuf>,
    allow_insecure_policy_permissions: Option<bool>,
    replace_incompatible_maps: Option<bool>,
}

/// Seconds between checks of the policy file; positive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WatchInterval(pub f64);

impl TryFrom<f64> for WatchInterval {
    type Error = String;
    fn try_from(seconds: f64) -> Result<Self, String> {
        if seconds.is_finite() && seconds > 0.0 {
            Ok(WatchInterval(seconds))
        } else {
            Err(format!(
                "watch_interval must be a positive number of seconds, not {seconds}"
            ))
        }
    }
}

/// `auto`, `native` or `generic`, as `--xdp-mode` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(into = "String")]
pub struct XdpMode(pub ModeChoice);

impl From<XdpMode> for String {
    fn from(mode: XdpMode) -> String {
        mode.0
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

impl TryFrom<String> for XdpMode {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        ModeChoice::from_str(&name, false)
            .map(XdpMode)
            .map_err(|_| format!("xdp_mode must be one of auto, native, generic, not `{name}`"))
    }
}

/// `auto`, `on` or `off`, as `--fast-path` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(into = "String")]
pub struct FastPath(pub FastPathChoice);

impl From<FastPath> for String {
    fn from(choice: FastPath) -> String {
        choice
            .0
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

impl TryFrom<String> for FastPath {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        FastPathChoice::from_str(&name, false)
            .map(FastPath)
            .map_err(|_| format!("fast_path must be one of auto, on, off, not `{name}`"))
    }
}

/// Where to serve metrics: an `IP:PORT`, or `off` (`none`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(into = "String")]
pub struct MetricsSetting(pub Option<SocketAddr>);

impl From<MetricsSetting> for String {
    fn from(metrics: MetricsSetting) -> String {
        metrics
            .0
            .map_or_else(|| "off".to_string(), |a| a.to_string())
    }
}

impl TryFrom<String> for MetricsSetting {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "off" | "none" => Ok(MetricsSetting(None)),
            addr => addr.parse().map(|a| MetricsSetting(Some(a))).map_err(|_| {
                format!(
                    "metrics: expected IP:PORT (e.g. {}) or off, not `{addr}`",
                    crate::metrics::DEFAULT_ADDR
                )
            }),
        }
    }
}

impl RunConfig {
    /// Reads `path`. `Ok(None)` if `path` is the default location and there is no file there;
    /// every other failure is an error naming the file (and the position, for YAML errors).
    pub fn read(path: &Path, explicit: bool) -> Result<Option<RunConfig>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "{}: cannot read the configuration: {e}",
                    path.display()
                ))
            }
        };
        let mut config = Self::parse(&text).map_err(|e| format!("{}:{e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.policy,
            &mut config.events_file,
            &mut config.inventory,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(Some(config))
    }

    /// Parses a configuration; the error is `line:col: error: message`. An empty document (or
    /// only comments) sets nothing.
    pub fn parse(text: &str) -> Result<RunConfig, String> {
        let (source, _) = SourceMap::parse(text)
            .map_err(|e| format!("{}:{}: error: {}", e.at.line, e.at.col, e.message))?;
        let file: Option<FileConfig> = serde_yaml::from_str(text).map_err(|e| {
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            format!("{line}:{col}: error: {message}")
        })?;
        let file = file.unwrap_or_default();
        let at = |key: &str, message: String| {
            let p = source.value(key);
            format!("{}:{}: error: {message}", p.line, p.col)
        };
        if file.bridge.is_some() && file.iface.is_some() {
            let p = source.key("iface");
            return Err(format!(
                "{}:{}: error: `bridge` and `iface` exclude each other: name the bridge (every \
                 port) or list the ports",
                p.line, p.col
            ));
        }
        Ok(RunConfig {
            policy: file.policy,
            bridge: file.bridge,
            iface: file.iface,
            watch_interval: file
                .watch_interval
                .map(WatchInterval::try_from)
                .transpose()
                .map_err(|e| at("watch_interval", e))?,
            xdp_mode: file
                .xdp_mode
                .map(XdpMode::try_from)
                .transpose()
                .map_err(|e| at("xdp_mode", e))?,
            fast_path: file
                .fast_path
                .map(FastPath::try_from)
                .transpose()
                .map_err(|e| at("fast_path", e))?,
            metrics: file
                .metrics
                .map(MetricsSetting::try_from)
                .transpose()
                .map_err(|e| at("metrics", e))?,
            events_file: file.events_file,
            instance: file.instance,
            no_pin: file.no_pin,
            inventory: file.inventory,
            allow_insecure_policy_permissions: file.allow_insecure_policy_permissions,
            replace_incompatible_maps: file.replace_incompatible_maps,
        })
    }

    /// These settings with `flags` taking precedence. The ports to attach to are one setting:
    /// `--bridge` or `--iface` on the command line replaces both keys of the file.
    pub fn overridden_by(self, flags: RunConfig) -> RunConfig {
        let ports_from_flags = flags.bridge.is_some() || flags.iface.is_some();
        let (bridge, iface) = if ports_from_flags {
            (flags.bridge, flags.iface)
        } else {
            (self.bridge, self.iface)
        };
        RunConfig {
            policy: flags.policy.or(self.policy),
            bridge,
            iface,
            watch_interval: flags.watch_interval.or(self.watch_interval),
            xdp_mode: flags.xdp_mode.or(self.xdp_mode),
            fast_path: flags.fast_path.or(self.fast_path),
            metrics: flags.metrics.or(self.metrics),
            events_file: flags.events_file.or(self.events_file),
            instance: flags.instance.or(self.instance),
            no_pin: flags.no_pin.or(self.no_pin),
            inventory: flags.inventory.or(self.inventory),
            allow_insecure_policy_permissions: flags
                .allow_insecure_policy_permissions
                .or(self.allow_insecure_policy_permissions),
            replace_incompatible_maps: flags
                .replace_incompatible_maps
                .or(self.replace_incompatible_maps),
        }
    }
}

/// The settings `otfw run` runs with, every default applied; printed by `--check-config` in
/// the file's own format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Effective {
    pub policy: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iface: Vec<String>,
    pub watch_interval: f64,
    pub xdp_mode: XdpMode,
    pub fast_path: FastPath,
    pub metrics: MetricsSetting,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub no_pin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<PathBuf>,
    pub allow_insecure_policy_permissions: bool,
    pub replace_incompatible_maps: bool,
}

impl RunConfig {
    /// Applies the defaults; fails if no policy is named anywhere.
    pub fn effective(self, config: Option<&Path>) -> Result<Effective, String> {
        let policy = self.policy.ok_or_else(|| match config {
            Some(file) => format!(
                "no policy to enforce: pass --policy FILE or set `policy:` in {}",
                file.display()
            ),
            None => format!(
                "no policy to enforce: pass --policy FILE (or set `policy:` in {DEFAULT_CONFIG})"
            ),
        })?;
        let metrics = self.metrics.unwrap_or_else(|| {
            MetricsSetting(Some(
                crate::metrics::DEFAULT_ADDR
                    .parse()
                    .expect("the default metrics address parses"),
            ))
        });
        Ok(Effective {
            policy,
            bridge: self.bridge,
            iface: self.iface.unwrap_or_default(),
            watch_interval: self.watch_interval.map_or(1.0, |w| w.0),
            xdp_mode: self.xdp_mode.unwrap_or(XdpMode(ModeChoice::Auto)),
            fast_path: self.fast_path.unwrap_or(FastPath(FastPathChoice::Auto)),
            metrics,
            events_file: self.events_file,
            instance: self.instance,
            no_pin: self.no_pin.unwrap_or(false),
            inventory: self.inventory,
            allow_insecure_policy_permissions: self
                .allow_insecure_policy_permissions
                .unwrap_or(false),
            replace_incompatible_maps: self.replace_incompatible_maps.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_its_key() {
        let config = RunConfig::parse(
            "policy: /etc/otfw/policy.yaml\n\
             bridge: br0\n\
             watch_interval: 2.5\n\
             xdp_mode: native\n\
             metrics: 0.0.0.0:9725\n\
             events_file: /var/log/otfw/events.jsonl\n\
             instance: gw1\n\
             no_pin: true\n\
             allow_insecure_policy_permissions: true\n",
        )
        .unwrap();
        let effective = config.effective(None).unwrap();
        assert_eq!(effective.policy, Path::new("/etc/otfw/policy.yaml"));
        assert_eq!(effective.bridge.as_deref(), Some("br0"));
        assert_eq!(effective.watch_interval, 2.5);
        assert_eq!(effective.xdp_mode, XdpMode(ModeChoice::Native));
        assert_eq!(String::from(effective.metrics), "0.0.0.0:9725");
        assert_eq!(
            effective.events_file.as_deref(),
            Some(Path::new("/var/log/otfw/events.jsonl"))
        );
        assert_eq!(effective.instance.as_deref(), Some("gw1"));
        assert!(effective.no_pin);
        assert!(effective.allow_insecure_policy_permissions);
        let ports = RunConfig::parse("iface: [eth1, eth2]\n").unwrap();
        assert_eq!(ports.iface, Some(vec!["eth1".into(), "eth2".into()]));
    }

    #[test]
    fn the_packaged_configuration_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/otfw.yaml");
        let config = RunConfig::read(&path, true).unwrap().unwrap();
        assert_eq!(
            config.policy,
            Some(path.parent().unwrap().join("policy.yaml"))
        );
        assert_eq!(config.xdp_mode, Some(XdpMode(ModeChoice::Auto)));
        assert_eq!(
            config.events_file.as_deref(),
            Some(Path::new("/var/log/otfw/events.jsonl"))
        );
    }

    #[test]
    fn an_empty_file_sets_nothing_and_defaults_match_the_flags() {
        assert_eq!(
            RunConfig::parse("# nothing yet\n").unwrap(),
            RunConfig::default()
        );
        let effective = RunConfig {
            policy: Some("p.yaml".into()),
            ..RunConfig::default()
        }
        .effective(None)
        .unwrap();
        assert_eq!(effective.watch_interval, 1.0);
        assert_eq!(effective.xdp_mode, XdpMode(ModeChoice::Auto));
        assert_eq!(
            String::from(effective.metrics),
            crate::metrics::DEFAULT_ADDR
        );
        assert!(!effective.no_pin);
        assert!(!effective.allow_insecure_policy_permissions);
    }

    #[test]
    fn metrics_are_served_on_loopback_unless_configured_otherwise() {
        let effective = RunConfig {
            policy: Some("p.yaml".into()),
            ..RunConfig::default()
        }
        .effective(None)
        .unwrap();
        let addr = effective.metrics.0.expect("metrics are on by default");
        assert!(
            addr.ip().is_loopback(),
            "the default metrics address {addr} is reachable from the network"
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/otfw.yaml");
        let packaged = RunConfig::read(&path, true).unwrap().unwrap();
        let packaged = packaged
            .metrics
            .and_then(|m| m.0)
            .expect("packaged metrics address");
        assert!(packaged.ip().is_loopback(), "packaged: {packaged}");
    }

    #[test]
    fn errors_name_their_position() {
        let err =
            RunConfig::parse("policy: p.yaml\nbridge: br0\nwatch_intervall: 3\n").unwrap_err();
        assert!(
            err.starts_with("3:1: error: unknown field `watch_intervall`"),
            "{err}"
        );
        let err = RunConfig::parse("policy: p.yaml\nxdp_mode: turbo\n").unwrap_err();
        assert!(
            err.starts_with("2:11: error: xdp_mode must be one of"),
            "{err}"
        );
        let err = RunConfig::parse("metrics: localhost\n").unwrap_err();
        assert!(
            err.starts_with("1:10: error: metrics: expected IP:PORT"),
            "{err}"
        );
        let err = RunConfig::parse("watch_interval: 0\n").unwrap_err();
        assert!(
            err.starts_with("1:17: error: watch_interval must be a positive"),
            "{err}"
        );
        let err = RunConfig::parse("bridge: br0\niface: [eth1]\n").unwrap_err();
        assert!(
            err.starts_with("2:1: error: `bridge` and `iface` exclude"),
            "{err}"
        );
        let err = RunConfig::parse("policy: [a\n").unwrap_err();
        assert!(err.starts_with("2:1: error:"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_ports_are_one_setting() {
        let file = RunConfig::parse(
            "policy: file.yaml\nbridge: br0\nmetrics: off\nxdp_mode: generic\ninstance: gw\n",
        )
        .unwrap();
        let flags = RunConfig {
            policy: Some("flag.yaml".into()),
            iface: Some(vec!["eth9".into()]),
            metrics: Some(MetricsSetting(Some("127.0.0.1:1".parse().unwrap()))),
            ..RunConfig::default()
        };
        let merged = file.overridden_by(flags).effective(None).unwrap();
        assert_eq!(merged.policy, Path::new("flag.yaml"));
        assert_eq!(merged.bridge, None, "--iface replaces the file's bridge");
        assert_eq!(merged.iface, ["eth9"]);
        assert_eq!(String::from(merged.metrics), "127.0.0.1:1");
        assert_eq!(merged.xdp_mode, XdpMode(ModeChoice::Generic));
        assert_eq!(merged.instance.as_deref(), Some("gw"));
    }

    #[test]
    fn missing_files_and_relative_paths() {
        let dir = std::env::temp_dir().join(format!("otfw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("absent.yaml");
        assert_eq!(RunConfig::read(&missing, false), Ok(None));
        let err = RunConfig::read(&missing, true).unwrap_err();
        assert!(
            err.contains("absent.yaml: cannot read the configuration"),
            "{err}"
        );
        let path = dir.join("otfw.yaml");
        std::fs::write(&path, "policy: policy.yaml\nevents_file: /abs/events\n").unwrap();
        let config = RunConfig::read(&path, true).unwrap().unwrap();
        assert_eq!(config.policy, Some(dir.join("policy.yaml")));
        assert_eq!(config.events_file, Some(PathBuf::from("/abs/events")));
        std::fs::write(&path, "policy: [a\n").unwrap();
        let err = RunConfig::read(&path, true).unwrap_err();
        assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = RunConfig::default().effective(None).unwrap_err();
        assert!(err.contains("no policy to enforce"), "{err}");
    }
}
