//! A hostile Kafka client and a hostile upstream for the fault and bad-input tests: raw request frames, crowds of
//! sockets, a TCP relay to a real broker that can fall silent, and the sidecar's resident memory.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A request frame: length prefix, api key, version, correlation id, then `rest` (client id and body) as given.
pub fn request(api_key: i16, version: i16, correlation_id: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + rest.len());
    body.extend_from_slice(&api_key.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(rest);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Metadata v1 for no topics (null client id, empty topic array): forwarded upstream, small answer.
pub fn metadata(correlation_id: i32) -> Vec<u8> {
    request(3, 1, correlation_id, &[0xff, 0xff, 0, 0, 0, 0])
}

/// ApiVersions v0 (null client id), answered by the sidecar itself.
pub fn api_versions(version: i16, correlation_id: i32) -> Vec<u8> {
    request(18, version, correlation_id, &[0xff, 0xff])
}

/// Reads one response frame: its correlation id and the whole frame after the length.
pub fn read_response(s: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if !(4..=64 << 20).contains(&n) {
        return Err(std::io::Error::other(format!("response length {n}")));
    }
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body)?;
    Ok((i32::from_be_bytes([body[0], body[1], body[2], body[3]]), body))
}

/// Whether the peer closes the connection within `within` (EOF or reset), discarding whatever it sends first.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    line.split_whitespace().nth(1).context("empty VmRSS")?.parse().context("VmRSS value")
}

/// Samples a process's resident memory every 100 ms on a thread until stopped; yields the peak in KiB.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        RssWatch { stop, thread }
    }

    /// Peak resident memory seen, in KiB.
    pub fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Lines of a log that contain `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A loopback TCP relay to a real broker. While silent it accepts connections but neither reads nor forwards a
/// byte in either direction, as a hung broker process does; bytes already in flight wait in the kernel buffers.
pub struct Relay {
    /// Where clients (the sidecar) connect.
    pub addr: String,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: &str) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (target, flags) = (target.to_string(), (silent.clone(), stop.clone()));
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if flags.1.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else { continue };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                    let (silent, stop) = flags.clone();
                    std::thread::spawn(move || pump(from, to, &silent, &stop));
                }
            }
        });
        Ok(Relay { addr, silent, stop, accept: Some(accept) })
    }

    /// Returns once every pump has seen the change (a read already under way may still forward its bytes).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if silent.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
