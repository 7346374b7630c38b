//! Interface addresses with their prefix length, as `ip addr` takes them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use anyhow::{bail, Context, Error, Result};

/// An address and prefix length, e.g. `192.0.2.10/24` or `2001:db8::10/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let (addr, prefix_len) = text
            .split_once('/')
            .with_context(|| format!("`{text}` has no prefix length (like 192.0.2.1/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .with_context(|| format!("`{addr}` in `{text}` is not an IP address"))?;
        let prefix_len: u8 = prefix_len
            .parse()
            .with_context(|| format!("`{prefix_len}` in `{text}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            bail!("prefix length {prefix_len} in `{text}` exceeds {max}");
        }
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let v4: Cidr = "192.0.2.10/24".parse().unwrap();
        assert_eq!(v4.to_string(), "192.0.2.10/24");
        let v6: Cidr = "2001:db8::10/64".parse().unwrap();
        assert_eq!(v6.prefix_len, 64);
        assert!(v6.addr.is_ipv6());
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "192.0.2.10",
            "192.0.2.10/33",
            "2001:db8::1/129",
            "host/24",
            "1.2.3.4/x",
        ] {
            assert!(text.parse::<Cidr>().is_err(), "{text} parsed");
        }
    }
}
