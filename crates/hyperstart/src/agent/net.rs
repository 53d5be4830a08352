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
pub fn configure(ifaces: &[Interface]) -> Result<(), String> {
    if ifaces.is_empty() {
        return Ok(());
    }
    let mut nl = netlink::Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    for i in ifaces {
        let links = netlink::links();
        let (name, index, _) = links
            .iter()
            .find(|(_, _, mac)| mac.eq_ignore_ascii_case(&i.mac))
            .ok_or_else(|| format!("no network interface with MAC {} (have: {:?})", i.mac, links.iter().map(|l| &l.0).collect::<Vec<_>>()))?;
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
