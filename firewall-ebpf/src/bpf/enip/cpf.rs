//! The Common Packet Format items of SendRRData (null address, unconnected data) and
//! SendUnitData (connected address naming an open connection, connected data with its
//! sequence count), then the CIP request they carry.

use firewall_common::{enip::*, reason::Reason};

use super::{b16, b32, cip, connection::otfw_enip_connected, R_NONE};

/// The CPF items of SendRRData / SendUnitData, then the CIP request they carry.
#[inline(always)]
pub(super) fn cpf(s: &mut EnipScratch, total: u32, connected: bool) -> u8 {
    let bad = Reason::EnipBadCpf as u8;
    if total < ENCAP_LEN + 8 {
        return bad;
    }
    let count = b16(s, 30);
    if !(2..=4).contains(&count) {
        return bad;
    }
    let mut off = 32;
    let mut data_off = 0;
    let mut data_len = 0;
    let mut conn_id = 0;
    for i in 0..4u32 {
        if i >= count {
            break;
        }
        if off + 4 > total {
            return bad;
        }
        let t = b16(s, off) as u16;
        let l = b16(s, off + 2);
        let body = off + 4;
        if body + l > total {
            return bad;
        }
        let ok = match i {
            0 if connected => t == ITEM_CONNECTED_ADDRESS && l == 4,
            0 => t == ITEM_NULL && l == 0,
            1 if connected => t == ITEM_CONNECTED_DATA && l >= 4,
            1 => t == ITEM_UNCONNECTED_DATA && l >= 2,
            _ => (t == ITEM_SOCKADDR_O2T || t == ITEM_SOCKADDR_T2O) && l == 16,
        };
        if !ok {
            return bad;
        }
        if i == 0 && connected {
            conn_id = b32(s, body);
        }
        if i == 1 {
            data_off = body;
            data_len = l;
        }
        off = body + l;
    }
    if off != total {
        return bad;
    }
    if connected {
        let r = otfw_enip_connected(conn_id as u64) as u8;
        if r != R_NONE {
            return r;
        }
        // The sequence count precedes the request.
        data_off += 2;
        data_len -= 2;
    }
    cip::check(data_off as u64 | (data_len as u64) << 16) as u8
}
