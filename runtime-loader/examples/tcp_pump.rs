//! A TCP throughput probe for scripts/bench-node.sh (no iperf needed):
//! `tcp_pump serve ADDR:PORT` accepts connections and discards what they
//! send; `tcp_pump send ADDR:PORT SECONDS` sends as fast as it can and
//! prints the rate in Gbit/s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let l = TcpListener::bind(&args[2]).expect("bind");
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        }
        Some("send") => {
            let secs: f64 = args[3].parse().expect("seconds");
            let mut s = TcpStream::connect_timeout(
                &args[2].parse().expect("address"),
                Duration::from_secs(2),
            )
            .expect("connect");
            let buf = vec![0x5au8; 1 << 18];
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                s.write_all(&buf).expect("send");
                sent += buf.len() as u64;
            }
            let t = start.elapsed().as_secs_f64();
            println!("{:.3}", sent as f64 * 8.0 / t / 1e9);
        }
        _ => {
            eprintln!("usage: tcp_pump serve ADDR:PORT | tcp_pump send ADDR:PORT SECONDS");
            std::process::exit(2);
        }
    }
}
