//! The sidecar under many connections and bad input: upstream connections stay few and bounded, and a broken
//! frame closes only the connection that sent it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kproxy_e2e::sidecar::{Sidecar, config};
use kproxy_e2e::{env, unique};

/// Metadata v1 asking for no topics: forwarded upstream, small answer.
fn metadata_request(correlation_id: i32) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 1];
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

fn read_response(s: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok((i32::from_be_bytes([body[0], body[1], body[2], body[3]]), body))
}

/// Whether the sidecar closes the connection within `within` (reads until EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > within {
            return false;
        }
    }
}

#[test]
fn two_hundred_clients_share_a_bounded_number_of_upstream_connections() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--upstream-connections", "4"]).unwrap();
    let mut conns: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&sidecar.listen).unwrap()).collect();
    for round in 0..3 {
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(&metadata_request((round * 1000 + i) as i32)).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let (id, body) = read_response(c).unwrap();
            assert_eq!(id, (round * 1000 + i) as i32, "responses carry each client's own correlation id");
            assert!(body.len() > 8);
        }
    }
    let metrics = sidecar.metrics().unwrap();
    let open = kproxy_e2e::sidecar::sum_series(&metrics, "kproxy_upstream_connections", &["cluster=\"east\""]);
    let opened = kproxy_e2e::sidecar::sum_series(&metrics, "kproxy_upstream_connections_opened_total", &[]);
    let clients = kproxy_e2e::sidecar::sum_series(&metrics, "kproxy_client_connections", &[]);
    eprintln!("200 clients: {open} upstream connections open, {opened} opened in total");
    assert_eq!(clients, 200.0);
    assert!((1.0..=4.0).contains(&open), "200 clients used {open} upstream connections");
    assert!(opened <= 4.0, "{opened} upstream connections were opened");
    drop(conns);
}

#[test]
fn broken_frames_close_only_their_own_connection() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--frame-timeout-secs", "2"]).unwrap();
    let topic = unique("sidecar-bad-frames");
    // A producer on its own connection keeps writing while the bad frames arrive.
    let producer = {
        let listen = sidecar.listen.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let env = kproxy_e2e::env().unwrap();
            for batch in 0..10 {
                let lines: Vec<String> = (0..100).map(|i| format!("{batch}-{i}")).collect();
                env.kcat_produce(&listen, &topic, &lines, &[]).unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: kafka\r\n\r\n".to_vec()),
        ("negative length", vec![0xff, 0xff, 0xff, 0xfe, 1, 2, 3]),
        ("2 GiB length", vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 1]),
        ("unknown api key", vec![0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0]),
        ("cut mid-way", vec![0, 0, 0, 100, 0, 3, 0, 1, 0, 0, 0, 1]),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(&sidecar.listen).unwrap();
        s.write_all(&bytes).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(10)), "{what}: connection was not closed");
    }
    producer.join().expect("the concurrent producer failed");
    let got = env.kcat_consume(&sidecar.listen, &topic, 1000, &[]).unwrap();
    assert_eq!(got.len(), 1000, "every record of the concurrent producer arrived");
    let m = sidecar.metrics().unwrap();
    for reason in ["oversized", "negative_length", "unknown_api", "partial_timeout"] {
        let n = kproxy_e2e::sidecar::sum_series(&m, "kproxy_frames_rejected_total", &[&format!("reason=\"{reason}\"")]);
        assert!(n >= 1.0, "no frame counted as {reason}:\n{m}");
    }
    let log = sidecar.log_text();
    assert!(log.contains("closing client connection"), "the reasons are logged");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let Some(env) = env() else { return };
    let mut sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--shutdown-grace-secs", "5"]).unwrap();
    let mut s = TcpStream::connect(&sidecar.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // An answer first: the connection is accepted and served (one not yet accepted at SIGTERM is refused).
    s.write_all(&metadata_request(76)).unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 76);
    // A request in flight when SIGTERM arrives (sent, perhaps not yet read) still gets its answer.
    s.write_all(&metadata_request(77)).unwrap();
    sidecar.signal("TERM").unwrap();
    let (id, _) = read_response(&mut s).unwrap();
    assert_eq!(id, 77);
    assert!(closed_within(&mut s, Duration::from_secs(10)), "the connection is closed after draining");
    assert!(sidecar.wait_exit(Duration::from_secs(15)).unwrap(), "exit status is success");
    assert!(TcpStream::connect(&sidecar.listen).is_err(), "no longer accepting");
}
