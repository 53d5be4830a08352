//! The protocol between hyperd and hyperstart (the agent that is PID 1 of a pod's sandbox).
//!
//! One byte stream (a unix socket for the ns driver, a virtio-serial port for VMs) carries frames:
//!
//! ```text
//! | u8 version | u8 kind | u16 flags=0 | u32 stream | u32 length | payload (length bytes) |   big-endian
//! ```
//!
//! | kind | stream | payload |
//! |---|---|---|
//! | `Request` (1) | 0 | JSON [`Request`] with an id |
//! | `Response` (2) | 0 | JSON [`Response`] for that id |
//! | `Event` (3) | 0 | JSON [`Event`] (agent to daemon) |
//! | `Data` (4) | id | u64 offset, then bytes |
//! | `Ack` (5) | id | u64 offset: everything below it was consumed (written to a pipe, or persisted to a log) |
//! | `Close` (6) | id | u64 offset: end of stream at that offset (EOF of an output, or close of an input) |
//!
//! Streams carry process stdio. Each direction of a stream is flow-controlled: a sender keeps what it sent until
//! it is acknowledged and never has more than [`WINDOW`] bytes unacknowledged, so a slow consumer slows the
//! producer down and no byte is ever dropped. Offsets count bytes from the start of the stream; after a
//! reconnection the daemon tells the agent, per stream, the offset it has (see [`Request::Attach`]) and the agent
//! resends from there. See docs/agent-protocol.md.

mod frame;
mod messages;

pub use frame::{Decoder, Frame, FrameError, FrameKind, HEADER_LEN, MAX_PAYLOAD, encode, encode_ack, encode_close, encode_data, find_control_frame, Resync};
pub use messages::*;

/// Protocol version: the first byte of every frame, and what `Hello` negotiates.
pub const VERSION: u8 = 1;

/// The longest stop timeout honoured (a year): both sides make instants of it, which must not overflow.
pub const MAX_STOP_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;

/// Unacknowledged bytes a stream sender may have in flight.
pub const WINDOW: u64 = 256 << 10;

/// The name of the virtio-serial port the agent listens on inside a VM.
pub const VIRTIO_PORT_NAME: &str = "sh.hyper.agent";

/// The line a VM's agent prints on the console once it waits for its host, before it mounts anything from
/// the host: the qemu driver saves a VM template when it sees it.
pub const VM_PARKED_MARK: &str = "hyperstart: waiting for the host";
/// On the kernel command line of a VM booted to be saved as a template (and of those restored from it): the
/// agent prints [`VM_PARKED_MARK`] only then. Printing it on the emulated serial console costs ~7 ms of a
/// boot under TCG.
pub const VM_TEMPLATE_FLAG: &str = "hyper.template";

/// The 9p tag of a VM sandbox's shared directory.
pub const SHARE_TAG: &str = "hyper-share";
/// Where the guest mounts it. Uncached (9p `cache=none`): the host changes volumes, and containers of
/// different images share lower layers, whose files then have one inode number in several overlays; a
/// caching guest (`cache=loose`) mixes them up across containers (measured: halves a container's start
/// under TCG, but `replace` then found files missing).
pub const GUEST_SHARE: &str = "/run/hyper/share";
