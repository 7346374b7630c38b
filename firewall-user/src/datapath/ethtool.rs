//! The few ethtool ioctls otfw needs on its ports: the driver's name (native XDP on a veth
//! cannot send resets back) and generic receive offload (generic XDP sees merged segments).

use std::os::fd::AsRawFd as _;

use anyhow::{bail, Result};

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GGRO: u32 = 0x0000_002b;
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`: a command and one value.
#[repr(C)]
struct Value {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// Issues SIOCETHTOOL on interface `name` with `data`, a command structure whose first field
/// is the command. The OS error on failure.
fn ioctl<T>(name: &str, data: &mut T) -> std::io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: all-zero is a valid ifreq (plain integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (data as *mut T).cast();
    // Any socket carries device ioctls to the network namespace it was made in; an unbound
    // Unix datagram socket needs no address and is closed when dropped.
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live command structure
    // of the layout the command names; the kernel writes only inside that structure.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel driver behind an interface (`veth`, `ixgbe`, ...).
pub fn driver(name: &str) -> Option<String> {
    // SAFETY: all-zero is a valid DrvInfo (plain integers and arrays).
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ioctl(name, &mut info).ok()?;
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether generic receive offload is on (`None`: the device does not say).
pub fn gro(name: &str) -> Option<bool> {
    let mut value = Value {
        cmd: ETHTOOL_GGRO,
        data: 0,
    };
    ioctl(name, &mut value).ok()?;
    Some(value.data != 0)
}

/// Switches generic receive offload on or off.
pub fn set_gro(name: &str, on: bool) -> Result<()> {
    let mut value = Value {
        cmd: ETHTOOL_SGRO,
        data: on as u32,
    };
    if let Err(e) = ioctl(name, &mut value) {
        bail!(
            "setting GRO {} on {name}: {e}",
            if on { "on" } else { "off" }
        );
    }
    Ok(())
}
