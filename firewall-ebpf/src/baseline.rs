//! The benchmark's yardstick: the least an XDP program on a bridge port can do and still look at
//! a frame. It parses Ethernet, IPv4 and TCP with the same bounds checks as `otfw` and bumps one
//! per-CPU counter, then passes. `cargo xtask bench` reports every cost of `otfw` as a ratio to
//! this program measured in the same run, so that the noise of a shared machine cancels out.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{map, xdp},
        maps::PerCpuArray,
        programs::XdpContext,
    };

    const ETH_HDR_LEN: usize = 14;
    const ETH_P_IP: [u8; 2] = [0x08, 0x00];
    const IPPROTO_TCP: u8 = 6;
    const TCP_HDR_LEN: usize = 20;

    /// Index 0: frames that parsed as Ethernet/IPv4/TCP; index 1: everything else.
    #[map]
    static BASELINE: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

    #[xdp]
    pub fn baseline(ctx: XdpContext) -> u32 {
        let index = if is_tcp(&ctx) { 0 } else { 1 };
        if let Some(count) = BASELINE.get_ptr_mut(index) {
            // SAFETY: a per-CPU array slot of this CPU; nothing else writes it meanwhile.
            unsafe { *count += 1 };
        }
        xdp_action::XDP_PASS
    }

    /// Ethernet, then IPv4 with its header length, then a whole TCP header.
    #[inline(always)]
    fn is_tcp(ctx: &XdpContext) -> bool {
        let Some(eth) = load::<[u8; ETH_HDR_LEN]>(ctx, 0) else {
            return false;
        };
        if eth[12..14] != ETH_P_IP {
            return false;
        }
        let Some(ip) = load::<[u8; 20]>(ctx, ETH_HDR_LEN) else {
            return false;
        };
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != IPPROTO_TCP {
            return false;
        }
        // The IPv4 header is at most 60 bytes: bounding it lets the verifier follow the offset.
        let l4 = ETH_HDR_LEN + (ihl & 0x3c);
        let Some(tcp) = load::<[u8; TCP_HDR_LEN]>(ctx, l4) else {
            return false;
        };
        tcp[12] >> 4 >= 5
    }

    #[inline(always)]
    fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
        let start = ctx.data();
        if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
            return None;
        }
        // SAFETY: the whole T lies inside the packet, checked just above.
        Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any reachable panic, so this is never called.
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("the baseline XDP program is an eBPF object; firewall-user's build script builds it");
}
