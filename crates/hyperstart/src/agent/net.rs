//! Configuring the pod's network interfaces (a veth end in the ns driver, a virtio-net device in a VM).

use std::net::Ipv4Addr;

use agent_proto::Interface;

fn exists_ok(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Finds each interface by MAC address, names it, sets its MTU and address, brings it up and routes through
/// its gateway. Configuring the same interface again (a `replace`) changes nothing.
///
/// A VM restored from a template has the template's MAC on its one network device: with a single interface
/// wanted and no interface of that MAC, the only Ethernet interface takes the wanted MAC.
pub fn configure(ifaces: &[Interface]) -> Result<(), String> {
    if ifaces.is_empty() {
        return Ok(());
    }
    let mut nl = netlink::Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    for i in ifaces {
        // Usually the interface already has its name (a VM's only NIC is eth0): one sysfs read confirms it.
        // Looking through every interface costs a VM ~8 ms under emulation.
        let named = (!i.name.is_empty() && !i.name.contains('/'))
            .then(|| std::fs::read_to_string(format!("/sys/class/net/{}/address", i.name)).ok())
            .flatten()
            .filter(|mac| mac.trim().eq_ignore_ascii_case(&i.mac))
            .and_then(|mac| netlink::link_index(&i.name).map(|index| (i.name.clone(), index, mac.trim().to_string())));
        let links = if named.is_some() { Vec::new() } else { netlink::links() };
        let found = named.as_ref().or_else(|| links.iter().find(|(_, _, mac)| mac.eq_ignore_ascii_case(&i.mac)));
        // Ethernet devices only (a tunnel such as sit0 has no 6-byte address).
        let others: Vec<_> = links.iter().filter(|(name, _, mac)| name != "lo" && netlink::parse_mac(mac).is_some_and(|m| m != [0; 6])).collect();
        let (name, index, _) = match (found, others.as_slice()) {
            (Some(l), _) => l,
            (None, [only]) if ifaces.len() == 1 => {
                let mac = netlink::parse_mac(&i.mac).ok_or_else(|| format!("invalid MAC {:?}", i.mac))?;
                nl.set_mac(only.1, mac).map_err(|e| format!("setting the MAC of {} to {}: {e}", only.0, i.mac))?;
                only
            }
            _ => return Err(format!("no network interface with MAC {} (have: {:?})", i.mac, links.iter().map(|l| &l.0).collect::<Vec<_>>())),
        };
        let index = *index;
        if !i.name.is_empty() && *name != i.name {
            nl.set_name(index, &i.name).map_err(|e| format!("renaming {name} to {}: {e}", i.name))?;
        }
        if i.mtu > 0 {
            nl.set_mtu(index, i.mtu).map_err(|e| format!("setting the MTU of {}: {e}", i.name))?;
        }
        let (addr, prefix) = i.address.split_once('/').ok_or_else(|| format!("invalid address {:?}", i.address))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("invalid address {:?}", i.address))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("invalid address {:?}", i.address))?;
        exists_ok(nl.add_address(index, addr, prefix)).map_err(|e| format!("adding {} to {}: {e}", i.address, i.name))?;
        nl.set_up(index).map_err(|e| format!("bringing {} up: {e}", i.name))?;
        if !i.gateway.is_empty() {
            let gw: Ipv4Addr = i.gateway.parse().map_err(|_| format!("invalid gateway {:?}", i.gateway))?;
            exists_ok(nl.add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), index)).map_err(|e| format!("routing through {gw}: {e}"))?;
        }
    }
    Ok(())
}
