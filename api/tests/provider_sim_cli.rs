//! `cva provider-sim` as a process: it prints its URL, answers over HTTP, and refuses a bad
//! fault specification naming the item.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_simulator_serves_until_stopped() {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("cva"))
        .args(["provider-sim", "--listen", "127.0.0.1:0", "--seed", "7"])
        .args(["--faults", "lost_response=0.2,status_503=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("provider simulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    let addr = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /heartbeat HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A fault rate above 0 makes the service "degraded".
    assert!(answer.contains(r#""serviceStatus":"degraded""#), "{answer}");
}

#[test]
fn a_bad_fault_spec_is_refused_naming_the_item() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cva"))
        .args([
            "provider-sim",
            "--listen",
            "127.0.0.1:0",
            "--faults",
            "lost_response=1.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--faults") && err.contains("lost_response=1.5"),
        "{err}"
    );
}
