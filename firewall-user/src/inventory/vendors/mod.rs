//! Vendor names for what the inventory sees: CIP vendor ids and device types from the ODVA
//! lists (a table generated into the source from Wireshark's copy, `cargo xtask vendors`), and
//! MAC address vendors from the IEEE registries as Debian's `ieee-data` package ships and
//! updates them, read at run time so that new assignments need no new otfw.

mod odva;

use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result};

/// Where `ieee-data` installs the registries.
pub const IEEE_DATA_DIR: &str = "/usr/share/ieee-data";
/// MA-L (24-bit prefixes), MA-M (28-bit), MA-S (36-bit) registries, in that order.
const REGISTRIES: [(&str, u8); 3] = [("oui.csv", 24), ("mam.csv", 28), ("oui36.csv", 36)];

/// The ODVA name of a CIP vendor id.
pub fn cip_vendor(id: u16) -> Option<&'static str> {
    lookup(odva::VENDORS, id)
}

/// The name of a CIP device type (profile).
pub fn cip_device_type(code: u16) -> Option<&'static str> {
    lookup(odva::DEVICE_TYPES, code)
}

fn lookup(table: &'static [(u16, &'static str)], key: u16) -> Option<&'static str> {
    table
        .binary_search_by_key(&key, |(k, _)| *k)
        .ok()
        .map(|i| table[i].1)
}

/// The IEEE registries of MAC address blocks: organisation by prefix.
#[derive(Default)]
pub struct MacVendors {
    /// Prefix length in bits -> (prefix value, organisation).
    blocks: Vec<(u8, HashMap<u64, String>)>,
}

impl MacVendors {
    /// Reads the registries in `dir` (`oui.csv` required, `mam.csv` and `oui36.csv` if there).
    pub fn load(dir: &Path) -> Result<MacVendors> {
        let mut vendors = MacVendors::default();
        for (file, bits) in REGISTRIES {
            let path = dir.join(file);
            if bits != 24 && !path.exists() {
                continue;
            }
            let text = std::fs::read(&path)
                .with_context(|| format!("reading the IEEE registry {}", path.display()))?;
            vendors
                .add_csv(bits, &text)
                .with_context(|| format!("IEEE registry {}", path.display()))?;
        }
        Ok(vendors)
    }

    /// Reads the default registries; when they are missing, says so once and names no MAC
    /// vendors (the inventory is complete without them).
    pub fn load_default() -> MacVendors {
        MacVendors::load(Path::new(IEEE_DATA_DIR)).unwrap_or_else(|e| {
            log::warn!("MAC vendors unavailable ({e:#}); install Debian's ieee-data package");
            MacVendors::default()
        })
    }

    /// Adds one registry in the IEEE CSV form: `Registry,Assignment,Organization Name,...`,
    /// the assignment in hexadecimal (`bits` / 4 digits).
    pub fn add_csv(&mut self, bits: u8, csv_text: &[u8]) -> Result<()> {
        let mut reader = csv::Reader::from_reader(csv_text);
        let mut map = HashMap::new();
        for (line, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("record {}", line + 2))?;
            let (Some(assignment), Some(name)) = (record.get(1), record.get(2)) else {
                continue;
            };
            if assignment.len() != usize::from(bits / 4) {
                continue;
            }
            if let Ok(prefix) = u64::from_str_radix(assignment, 16) {
                map.insert(prefix, name.trim().to_owned());
            }
        }
        self.blocks.retain(|(b, _)| *b != bits);
        self.blocks.push((bits, map));
        // Longest prefix first: an MA-S block lies inside an MA-L the IEEE registered to
        // itself.
        self.blocks.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(|(_, m)| m.is_empty())
    }

    /// The organisation a MAC address was assigned to; `None` for locally administered and
    /// group addresses and for unregistered blocks.
    pub fn lookup(&self, mac: [u8; 6]) -> Option<&str> {
        if mac[0] & 0x03 != 0 {
            return None;
        }
        let value = mac.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        self.blocks
            .iter()
            .find_map(|(bits, map)| map.get(&(value >> (48 - u32::from(*bits)))))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odva_tables_are_sorted_and_name_known_vendors() {
        for table in [odva::VENDORS, odva::DEVICE_TYPES] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
        }
        assert_eq!(cip_vendor(1), Some("Rockwell Automation/Allen-Bradley"));
        assert_eq!(cip_device_type(14), Some("Programmable Logic Controller"));
        assert_eq!(cip_vendor(0xfffe), None);
    }

    #[test]
    fn longest_registered_block_wins() {
        let mut v = MacVendors::default();
        v.add_csv(24, b"Registry,Assignment,Organization Name,Organization Address\nMA-L,0050C2,IEEE Registration Authority,x\nMA-L,002078,\"Runtop, Inc.\",\"Taipei\"\n")
            .unwrap();
        v.add_csv(36, b"Registry,Assignment,Organization Name,Organization Address\nMA-S,0050C2123,Small Maker,y\n")
            .unwrap();
        assert_eq!(
            v.lookup([0x00, 0x20, 0x78, 0, 0x62, 0x0d]),
            Some("Runtop, Inc.")
        );
        assert_eq!(
            v.lookup([0x00, 0x50, 0xc2, 0x12, 0x34, 0x56]),
            Some("Small Maker")
        );
        assert_eq!(
            v.lookup([0x00, 0x50, 0xc2, 0x99, 0, 0]),
            Some("IEEE Registration Authority")
        );
        assert_eq!(
            v.lookup([0x02, 0x20, 0x78, 0, 0, 0]),
            None,
            "locally administered"
        );
        assert_eq!(v.lookup([0x00, 0x00, 0x01, 0, 0, 0]), None);
    }

    #[test]
    fn a_missing_registry_is_an_error_naming_it() {
        let e = MacVendors::load(Path::new("/nonexistent-ieee-data"))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("oui.csv"), "{e:#}");
    }
}
