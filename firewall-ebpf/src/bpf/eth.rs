//! Ethernet with up to two VLAN tags (802.1Q / 802.1ad).

use aya_ebpf::programs::XdpContext;

use firewall_common::reason::Reason;

use super::packet::be16;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;

pub struct Eth {
    /// The ethertype after any VLAN tags (or an 802.3 length, below 0x0600).
    pub ethertype: u16,
    /// Offset of the network header.
    pub l3: usize,
}

impl Eth {
    #[inline(always)]
    pub fn parse(ctx: &XdpContext) -> Result<Eth, Reason> {
        let mut ethertype = be16(ctx, 12, Reason::EthTruncated)?;
        let mut l3 = ETH_HDR_LEN;
        // Unrolled: the outer (S-)tag, then the inner (C-)tag.
        if is_vlan(ethertype) {
            ethertype = be16(ctx, l3 + 2, Reason::VlanMalformed)?;
            l3 += VLAN_HDR_LEN;
            if is_vlan(ethertype) {
                ethertype = be16(ctx, l3 + 2, Reason::VlanMalformed)?;
                l3 += VLAN_HDR_LEN;
                if is_vlan(ethertype) {
                    return Err(Reason::VlanMalformed);
                }
            }
        }
        Ok(Eth { ethertype, l3 })
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}
