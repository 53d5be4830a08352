//! Inside a VM: network interfaces (configured by the agent for VM pods).

use agent_proto::Interface;

/// Configures the VM's network interfaces. VM networking arrives with the networking work; until then a pod
/// that asks for interfaces is refused rather than started without them.
pub fn configure_interfaces(interfaces: &[Interface]) -> Result<(), String> {
    if interfaces.is_empty() {
        return Ok(());
    }
    Err("configuring network interfaces inside a VM is not supported by this agent".into())
}
