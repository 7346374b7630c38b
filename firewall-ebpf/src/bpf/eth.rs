//! Ethernet with up to two VLAN tags (802.1Q / 802.1ad).

use aya_ebpf::programs::XdpContext;

use firewall_common::reason::Reason;

use super::packet::{be16, be16_in_word, load_word, ptr_at};

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
        // The ethertype is the top two bytes of one unaligned word load of bytes 6..14 (as a
        // two-byte array it was two byte loads and a shift; the first header every frame
        // pays for).
        let h = ptr_at::<[u8; ETH_HDR_LEN]>(ctx, 0).map_err(|_| Reason::EthTruncated)?;
        // SAFETY: the fourteen bytes at `h` lie inside the frame; the load reads 6..14.
        let word = unsafe { load_word((h as *const u8).add(6)) };
        let mut ethertype = be16_in_word(word, 6);
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
