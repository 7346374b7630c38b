//! `on_deny: reset`: turn the refused TCP segment into a RST and send it back out of the port it
//! came in on, so the client fails at once instead of retrying into a silent drop.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};

use super::{
    eth::{Eth, ETH_P_IP, ETH_P_IPV6},
    ip::Ip,
    l4::{L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    packet::{frame_len, load, ptr_at_mut},
};

const TCP_HDR_LEN: usize = 20;
const IPV4_MAX_HDR_WORDS: usize = 30;

#[inline(always)]
pub fn answer(ctx: &XdpContext) -> u32 {
    match build(ctx, true) {
        Ok(()) => xdp_action::XDP_TX,
        Err(()) => xdp_action::XDP_DROP,
    }
}

/// Turns the refused segment into a RST that continues to its destination in its place: its
/// sequence number is exactly what the receiver expects next, so the receiver accepts it and
/// closes (used toward a server whose client sent a denied request).
#[inline(always)]
pub fn forward(ctx: &XdpContext) -> u32 {
    match build(ctx, false) {
        Ok(()) => xdp_action::XDP_PASS,
        Err(()) => xdp_action::XDP_DROP,
    }
}

/// Rewrites the segment into a bare RST: back to its sender (`reflect`) or onward.
#[inline(always)]
fn build(ctx: &XdpContext, reflect: bool) -> Result<(), ()> {
    let eth = Eth::parse(ctx).map_err(|_| ())?;
    let ip = match eth.ethertype {
        ETH_P_IP => Ip::parse_v4(ctx, eth.l3),
        ETH_P_IPV6 => Ip::parse_v6(ctx, eth.l3),
        _ => return Err(()),
    }
    .map_err(|_| ())?;
    let tcp = L4::parse(ctx, &ip).map_err(|_| ())?;

    // RFC 9293 3.10.7.1: answer an ACK with seq = its ack; anything else with ack = the
    // sequence space the segment occupied.
    let (seq, ack, flags) = if !reflect {
        (tcp.seq, tcp.ack, TCP_RST | (tcp.tcp_flags & TCP_ACK))
    } else if tcp.tcp_flags & TCP_ACK != 0 {
        (tcp.ack, 0u32, TCP_RST)
    } else {
        let mut len = tcp.payload_len as u32;
        if tcp.tcp_flags & TCP_SYN != 0 {
            len += 1;
        }
        if tcp.tcp_flags & TCP_FIN != 0 {
            len += 1;
        }
        (0u32, tcp.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };

    // Cut options and payload: the reset is a bare 20-byte header.
    let new_len = ip.l4 + TCP_HDR_LEN;
    let delta = new_len as i32 - frame_len(ctx) as i32;
    // SAFETY: shrinking the frame is always within the buffer; pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(());
    }

    if reflect {
        let macs: [u8; 12] = load(ctx, 0, firewall_common::reason::Reason::None).map_err(|_| ())?;
        let eth_p = ptr_at_mut::<[u8; 12]>(ctx, 0)?;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&macs[6..]);
        swapped[6..].copy_from_slice(&macs[..6]);
        // SAFETY: ptr_at_mut checked the 12 bytes are inside the frame.
        unsafe { core::ptr::write_unaligned(eth_p, swapped) };
    }

    let l3 = eth.l3;
    let mut sum: u32;
    if ip.v6 {
        let hdr = ptr_at_mut::<[u8; 40]>(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at_mut; the header is rewritten in place.
        let h = unsafe { &mut *hdr };
        let plen = (ip.l4 - l3 - 40 + TCP_HDR_LEN) as u16;
        h[4..6].copy_from_slice(&plen.to_be_bytes());
        if reflect {
            h[7] = 64;
            let mut src = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&h[24..40]);
            h[8..24].copy_from_slice(&dst);
            h[24..40].copy_from_slice(&src);
        }
        sum = add_bytes(0, &h[8..40]);
    } else {
        let hdr = ptr_at_mut::<[u8; 20]>(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at_mut.
        let h = unsafe { &mut *hdr };
        let ihl = ip.l4 - l3;
        let total = (ihl + TCP_HDR_LEN) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        if reflect {
            h[8] = 64;
            let mut src = [0u8; 4];
            src.copy_from_slice(&h[12..16]);
            let mut dst = [0u8; 4];
            dst.copy_from_slice(&h[16..20]);
            h[12..16].copy_from_slice(&dst);
            h[16..20].copy_from_slice(&src);
        }
        let check = fold(ipv4_header_sum(ctx, l3, ihl / 2)?);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        sum = add_bytes(0, &h[12..20]);
    }
    // Pseudo-header: addresses (already summed), protocol and TCP length.
    sum += 6 + TCP_HDR_LEN as u32;

    let th = ptr_at_mut::<[u8; TCP_HDR_LEN]>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at_mut.
    let t = unsafe { &mut *th };
    if reflect {
        let mut ports = [0u8; 4];
        ports.copy_from_slice(&t[0..4]);
        t[0..2].copy_from_slice(&ports[2..4]);
        t[2..4].copy_from_slice(&ports[0..2]);
    }
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (TCP_HDR_LEN as u8 / 4) << 4;
    t[13] = flags;
    t[14..20].copy_from_slice(&[0; 6]);
    sum = add_bytes(sum, &t[..]);
    let check = fold(sum);
    t[16..18].copy_from_slice(&check.to_be_bytes());
    Ok(())
}

#[inline(always)]
fn ipv4_header_sum(ctx: &XdpContext, l3: usize, words: usize) -> Result<u32, ()> {
    let mut sum = 0u32;
    for i in 0..IPV4_MAX_HDR_WORDS {
        if i >= words {
            break;
        }
        let w: [u8; 2] =
            load(ctx, l3 + i * 2, firewall_common::reason::Reason::None).map_err(|_| ())?;
        sum += u16::from_be_bytes(w) as u32;
    }
    Ok(sum)
}

#[inline(always)]
fn add_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
