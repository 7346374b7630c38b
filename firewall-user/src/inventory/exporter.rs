//! The inventory as Prometheus series for `otfw run --inventory FILE`: one info-style series per
//! asset (`otfw_asset_info`, value 1, identity in the labels) and the number of assets per
//! zone. Labels carry addresses here, unlike every other otfw family, so the asset series are
//! bounded: at most [`MAX_ASSET_SERIES`], the most recently seen first; the rest are counted in
//! `otfw_assets_not_exported`.
//!
//! The file is the state file `otfw inventory --state FILE` keeps; it is read again when it
//! changes (checked at each scrape), so the series follow whatever feeds it.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Result;
use prometheus::{core::Collector, IntGauge, IntGaugeVec, Opts};

use super::{report, vendors::MacVendors, zones::Zones, Inventory};

/// Asset series exported at most (documented in docs/DISCOVERY.md).
pub const MAX_ASSET_SERIES: usize = 1000;

/// The label names of `otfw_asset_info`.
const INFO_LABELS: [&str; 8] = [
    "zone",
    "ip",
    "mac",
    "mac_vendor",
    "vendor",
    "product",
    "revision",
    "serial",
];

pub struct AssetMetrics {
    info: IntGaugeVec,
    per_zone: IntGaugeVec,
    not_exported: IntGauge,
}

impl AssetMetrics {
    /// The families, handed to `register` (the exporter's registry).
    pub fn new(mut register: impl FnMut(Box<dyn Collector>) -> Result<()>) -> Result<AssetMetrics> {
        let info = IntGaugeVec::new(
            Opts::new(
                "otfw_asset_info",
                "One series per asset of the inventory (value 1): zone, address, MAC and its \
                 vendor, identity (vendor, product, revision, serial). At most 1000 series.",
            ),
            &INFO_LABELS,
        )?;
        let per_zone = IntGaugeVec::new(
            Opts::new("otfw_assets", "Assets of the inventory per zone."),
            &["zone"],
        )?;
        let not_exported = IntGauge::with_opts(Opts::new(
            "otfw_assets_not_exported",
            "Assets left out of otfw_asset_info by its series limit.",
        ))?;
        register(Box::new(info.clone()))?;
        register(Box::new(per_zone.clone()))?;
        register(Box::new(not_exported.clone()))?;
        Ok(AssetMetrics {
            info,
            per_zone,
            not_exported,
        })
    }

    /// Replaces the series by those of `records`.
    pub fn set(&self, records: &[report::AssetRecord]) {
        self.info.reset();
        self.per_zone.reset();
        let mut newest: Vec<&report::AssetRecord> = records.iter().collect();
        // RFC 3339 in UTC with fixed digits sorts as time does.
        newest.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
        for r in records {
            let zone = r.zone.as_deref().unwrap_or("");
            self.per_zone.with_label_values(&[zone]).inc();
        }
        for r in newest.iter().take(MAX_ASSET_SERIES) {
            let (vendor, product, revision, serial) = identity(r);
            let ip = r.ip.to_string();
            let labels = [
                r.zone.as_deref().unwrap_or(""),
                ip.as_str(),
                r.macs.first().map_or("", String::as_str),
                r.mac_vendors.first().map_or("", String::as_str),
                vendor.as_str(),
                product.as_str(),
                revision.as_str(),
                serial.as_str(),
            ];
            self.info.with_label_values(&labels).set(1);
        }
        self.not_exported
            .set(records.len().saturating_sub(MAX_ASSET_SERIES) as i64);
    }
}

/// (vendor, product, revision, serial) from the EtherNet/IP identity, else the Modbus one.
fn identity(r: &report::AssetRecord) -> (String, String, String, String) {
    if let Some(e) = &r.enip {
        return (
            e.vendor
                .map_or_else(|| e.vendor_id.to_string(), str::to_owned),
            e.product_name.clone(),
            e.revision.clone(),
            e.serial_number.clone(),
        );
    }
    if let Some(m) = &r.modbus {
        let product = m
            .objects
            .get("product_name")
            .or(m.product_code.as_ref())
            .cloned()
            .unwrap_or_default();
        return (
            m.vendor_name.clone().unwrap_or_default(),
            product,
            m.revision.clone().unwrap_or_default(),
            String::new(),
        );
    }
    Default::default()
}

/// An inventory state file followed by `otfw run`: read again when its modification time
/// changes. A file that cannot be read keeps the last series and is reported once per change.
pub struct Followed {
    path: PathBuf,
    /// The policy whose zones sort the assets.
    policy: PathBuf,
    modified: Option<SystemTime>,
    macs: MacVendors,
}

impl Followed {
    pub fn new(path: PathBuf, policy: PathBuf) -> Followed {
        Followed {
            path,
            policy,
            modified: None,
            macs: MacVendors::load_default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The asset records when the file changed since the last call.
    pub fn changed(&mut self) -> Option<Vec<report::AssetRecord>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == self.modified {
            return None;
        }
        self.modified = modified;
        match read(&self.path, &self.policy, &self.macs) {
            Ok(records) => Some(records),
            Err(e) => {
                log::warn!("inventory {}: {e:#}", self.path.display());
                None
            }
        }
    }
}

fn read(path: &Path, policy: &Path, macs: &MacVendors) -> Result<Vec<report::AssetRecord>> {
    let inventory = Inventory::load(path)?;
    let zones = match crate::policy::load(policy) {
        Ok(loaded) => Zones {
            zones: loaded.policy.zones,
            proposed: false,
        },
        Err(_) => Zones::propose(inventory.assets.keys().copied()),
    };
    Ok(report::records(&inventory, &zones, macs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_bounded_newest_first() {
        let registry = prometheus::Registry::new();
        let metrics = AssetMetrics::new(|c| Ok(registry.register(c)?)).unwrap();
        let record = |i: usize| report::AssetRecord {
            zone: Some("cell".into()),
            host: None,
            ip: std::net::IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
            macs: vec![],
            mac_vendors: vec![],
            ports: vec![],
            first_seen: "2024-01-01T00:00:00.000000Z".into(),
            last_seen: format!("2024-01-01T00:{:02}:{:02}.000000Z", i / 60 % 60, i % 60),
            packets: 1,
            serves: vec![],
            uses: vec![],
            enip: None,
            modbus: None,
        };
        let records: Vec<_> = (0..MAX_ASSET_SERIES + 5).map(record).collect();
        metrics.set(&records);
        assert_eq!(
            metrics.info.collect()[0].get_metric().len(),
            MAX_ASSET_SERIES
        );
        assert_eq!(metrics.not_exported.get(), 5);
        assert_eq!(
            metrics.per_zone.with_label_values(&["cell"]).get(),
            (MAX_ASSET_SERIES + 5) as i64
        );
        // The oldest (i = 0..5) are the ones left out.
        let exported: Vec<String> = metrics.info.collect()[0]
            .get_metric()
            .iter()
            .map(|m| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == "ip")
                    .unwrap()
                    .value()
                    .to_owned()
            })
            .collect();
        assert!(!exported.contains(&"10.0.0.0".to_owned()));
        assert!(exported.contains(&"10.0.3.236".to_owned()));
    }
}
