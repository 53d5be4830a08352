//! `nettool`: what the network tests and benchmarks run inside pods (busybox's nc has no UDP here).
//!
//! - `udp-echo PORT`: answers every datagram with itself.
//! - `tcp-echo PORT`: echoes every connection.
//! - `sink PORT`: accepts connections and reads them to the end; prints the bytes of each.
//! - `send HOST PORT MIB`: sends MIB mebibytes and prints the rate in MB/s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    let r = match a.get(1).map(String::as_str) {
        Some("udp-echo") if a.len() == 3 => udp_echo(&a[2]),
        Some("tcp-echo") if a.len() == 3 => tcp_echo(&a[2]),
        Some("sink") if a.len() == 3 => sink(&a[2]),
        Some("send") if a.len() == 5 => send(&a[2], &a[3], &a[4]),
        _ => Err("usage: nettool udp-echo PORT | tcp-echo PORT | sink PORT | send HOST PORT MIB".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nettool: {e}");
            ExitCode::FAILURE
        }
    }
}

type R = Result<(), String>;

fn udp_echo(port: &str) -> R {
    let s = UdpSocket::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let _ = s.send_to(&buf[..n], from);
    }
}

fn tcp_echo(port: &str) -> R {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = c;
            let mut buf = [0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn sink(port: &str) -> R {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    for c in l.incoming().flatten() {
        let mut c = c;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        println!("{total}");
    }
    Ok(())
}

fn send(host: &str, port: &str, mib: &str) -> R {
    let mib: u64 = mib.parse().map_err(|_| format!("bad size {mib}"))?;
    let mut c = TcpStream::connect(format!("{host}:{port}")).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        c.write_all(&buf).map_err(|e| e.to_string())?;
    }
    c.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let secs = t.elapsed().as_secs_f64();
    println!("{:.1}", (mib as f64 * 1048576.0) / secs / 1e6);
    Ok(())
}
