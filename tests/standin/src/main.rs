//! yelb-standin: one small static binary that stands in for the four Yelb images of the
//! walkthrough in the meshctl test bed (no registry here, so the images are built locally).
//!
//! Mode, first match wins: the program's name (argv[0] basename: `yelb-ui`, `yelb-appserver`,
//! `yelb-db`, `redis-server`, or `ui`, `appserver`, `db`, `redis`), then the first argument,
//! then `YELB_STANDIN_MODE`.
//!
//! * `redis`     TCP 6379: RESP (and inline) commands PING, ECHO, SET, GET, INCR, DEL, QUIT.
//! * `db`        TCP 5432: a line protocol of ours: `PING`, `GETVOTES`, `VOTE <name>`, `GETSTATS`.
//! * `appserver` HTTP/1.1 on 4567: `GET /api/getvotes` and `GET /api/getstats` open a NEW TCP
//!   connection to `yelb-db:5432` and one to `redis-server:6379`, exchange one message with
//!   each and answer 200 with JSON naming both replies (502 with the error text if one fails);
//!   `GET /api/hostname`.
//! * `ui`        HTTP/1.1 on 80: `GET /` is a small HTML page; `GET /api/*` is proxied to
//!   `http://yelb-appserver:4567/api/*` over a new connection per request (Connection: close),
//!   returning the upstream status and body (502 with the error text when it cannot).
//!
//! Every mode logs one line per request to stdout. Overrides for running as a plain process:
//! `--listen ADDR` or `LISTEN=ADDR` (default `0.0.0.0:<port>`), `YELB_DB_ADDR`,
//! `REDIS_ADDR`, `YELB_APPSERVER_ADDR` (`host:port`).
//!
//! Names are resolved by /etc/hosts, then a DNS A query to the resolv.conf name servers with
//! its search list and ndots (as a pod's resolver would), then the libc resolver: the binary
//! is statically linked and a container image has no NSS modules.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Ui,
    Appserver,
    Db,
    Redis,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "ui" | "yelb-ui" => Some(Mode::Ui),
            "appserver" | "yelb-appserver" => Some(Mode::Appserver),
            "db" | "yelb-db" => Some(Mode::Db),
            "redis" | "redis-server" => Some(Mode::Redis),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Ui => "yelb-ui",
            Mode::Appserver => "yelb-appserver",
            Mode::Db => "yelb-db",
            Mode::Redis => "redis-server",
        }
    }
    fn port(self) -> u16 {
        match self {
            Mode::Ui => 80,
            Mode::Appserver => 4567,
            Mode::Db => 5432,
            Mode::Redis => 6379,
        }
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn log(mode: Mode, msg: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{} {msg}", mode.name());
    let _ = out.flush();
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| env_or("HOSTNAME", "unknown"))
}

/// PID 1 in a container has no default action for SIGTERM: without a handler the kubelet
/// waits out the whole grace period (30 s) and then kills. Yelb's real images stop on
/// SIGTERM; so does the stand-in.
fn exit_on_sigterm() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn on_term(_: i32) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }
    const SIGTERM: i32 = 15;
    // SAFETY: installs a handler that only calls _exit.
    unsafe { signal(SIGTERM, on_term) };
}

fn main() {
    exit_on_sigterm();
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let (mode, rest) = if let Some(m) = Mode::parse(&argv0) {
        (m, &args[1.min(args.len())..])
    } else if let Some(m) = args.get(1).and_then(|a| Mode::parse(a)) {
        (m, &args[2..])
    } else if let Some(m) = std::env::var("YELB_STANDIN_MODE").ok().and_then(|v| Mode::parse(&v)) {
        (m, &args[1.min(args.len())..])
    } else {
        eprintln!(
            "usage: yelb-standin ui|appserver|db|redis [--listen ADDR]\n\
             (or run it as yelb-ui, yelb-appserver, yelb-db, redis-server, or set YELB_STANDIN_MODE)"
        );
        std::process::exit(2);
    };
    let mut listen = env_or("LISTEN", &format!("0.0.0.0:{}", mode.port()));
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == "--listen" {
            if let Some(v) = rest.get(i + 1) {
                listen = v.clone();
                i += 1;
            }
        } else if let Some(v) = rest[i].strip_prefix("--listen=") {
            listen = v.to_string();
        }
        // anything else (e.g. the real images' arguments) is ignored
        i += 1;
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{}: listen on {listen}: {e}", mode.name());
            std::process::exit(1);
        }
    };
    log(mode, &format!("listening on {}", listener.local_addr().map(|a| a.to_string()).unwrap_or(listen)));
    let state = Arc::new(State::default());
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log(mode, &format!("accept: {e}"));
                continue;
            }
        };
        let state = state.clone();
        std::thread::spawn(move || {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let r = match mode {
                Mode::Ui => serve_http(mode, stream, &peer, &state, ui),
                Mode::Appserver => serve_http(mode, stream, &peer, &state, appserver),
                Mode::Db => serve_db(mode, stream, &peer, &state),
                Mode::Redis => serve_redis(mode, stream, &peer, &state),
            };
            if let Err(e) = r {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    log(mode, &format!("{peer}: connection error: {e}"));
                }
            }
        });
    }
}

#[derive(Default)]
struct State {
    requests: AtomicU64,
    kv: Mutex<HashMap<String, String>>,
    votes: Mutex<Vec<(String, u64)>>,
}

// ------------------------------------------------------------------ name resolution

fn connect(addr: &str) -> io::Result<TcpStream> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.trim_matches(|c| c == '[' || c == ']'), p)))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {addr:?} (want host:port)")))?;
    let ips = resolve(host)?;
    let mut last = None;
    for ip in ips {
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = Some(io::Error::new(e.kind(), format!("connect {ip}:{port} ({host}): {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))))
}

fn resolve(host: &str) -> io::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if let Some(ip) = hosts_lookup(host) {
        return Ok(vec![ip]);
    }
    let mut tried = Vec::new();
    if let Ok(conf) = std::fs::read_to_string("/etc/resolv.conf") {
        let (servers, search, ndots) = parse_resolv_conf(&conf);
        if !servers.is_empty() {
            for name in candidates(host, &search, ndots) {
                match dns_query_a(&name, &servers) {
                    Ok(ips) if !ips.is_empty() => return Ok(ips.into_iter().map(IpAddr::V4).collect()),
                    Ok(_) => tried.push(format!("{name}: no A record")),
                    Err(e) => tried.push(format!("{name}: {e}")),
                }
            }
        }
    }
    match (host, 0u16).to_socket_addrs() {
        Ok(a) => {
            let v: Vec<IpAddr> = a.map(|s| s.ip()).collect();
            if !v.is_empty() {
                return Ok(v);
            }
        }
        Err(e) => tried.push(format!("libc: {e}")),
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve {host} ({})", tried.join("; "))))
}

fn hosts_lookup(host: &str) -> Option<IpAddr> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut it = line.split_whitespace();
        let ip = match it.next().and_then(|s| s.parse::<IpAddr>().ok()) {
            Some(ip) => ip,
            None => continue,
        };
        if ip.is_ipv6() {
            continue;
        }
        if it.any(|n| n.eq_ignore_ascii_case(host)) {
            return Some(ip);
        }
    }
    None
}

fn parse_resolv_conf(conf: &str) -> (Vec<SocketAddr>, Vec<String>, usize) {
    let (mut servers, mut search, mut ndots) = (Vec::new(), Vec::new(), 1usize);
    for line in conf.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") => {
                if let Some(ip) = it.next().and_then(|s| s.parse::<IpAddr>().ok()) {
                    servers.push(SocketAddr::new(ip, 53));
                }
            }
            Some("search") | Some("domain") => search = it.map(str::to_string).collect(),
            Some("options") => {
                for o in it {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    servers.truncate(3);
    (servers, search, ndots)
}

fn candidates(host: &str, search: &[String], ndots: usize) -> Vec<String> {
    if let Some(abs) = host.strip_suffix('.') {
        return vec![abs.to_string()];
    }
    let searched: Vec<String> = search.iter().map(|d| format!("{host}.{}", d.trim_end_matches('.'))).collect();
    if host.matches('.').count() >= ndots {
        std::iter::once(host.to_string()).chain(searched).collect()
    } else {
        searched.into_iter().chain(std::iter::once(host.to_string())).collect()
    }
}

fn dns_query_a(name: &str, servers: &[SocketAddr]) -> io::Result<Vec<Ipv4Addr>> {
    let id = (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xffff) as u16;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > 63 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "label too long"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let mut last = io::Error::new(io::ErrorKind::TimedOut, "no name server answered");
    for _attempt in 0..2 {
        for server in servers {
            let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
            let sock = UdpSocket::bind(bind)?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))?;
            if let Err(e) = sock.send_to(&q, server) {
                last = e;
                continue;
            }
            let mut buf = [0u8; 1500];
            let n = match sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) => {
                    last = io::Error::new(e.kind(), format!("{server}: {e}"));
                    continue;
                }
            };
            return parse_dns_answer(&buf[..n], id).map_err(|e| io::Error::new(io::ErrorKind::Other, format!("{server}: {e}")));
        }
    }
    Err(last)
}

fn parse_dns_answer(b: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id {
        return Err("bad DNS reply".into());
    }
    let rcode = b[3] & 0x0f;
    if rcode == 3 {
        return Ok(Vec::new()); // NXDOMAIN
    }
    if rcode != 0 {
        return Err(format!("DNS rcode {rcode}"));
    }
    let qd = u16::from_be_bytes([b[4], b[5]]) as usize;
    let an = u16::from_be_bytes([b[6], b[7]]) as usize;
    let mut p = 12;
    let skip_name = |mut p: usize| -> Option<usize> {
        loop {
            let l = *b.get(p)? as usize;
            if l == 0 {
                return Some(p + 1);
            }
            if l & 0xc0 == 0xc0 {
                return Some(p + 2);
            }
            p += 1 + l;
        }
    };
    for _ in 0..qd {
        p = skip_name(p).ok_or("short DNS reply")? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        p = skip_name(p).ok_or("short DNS reply")?;
        let h = b.get(p..p + 10).ok_or("short DNS reply")?;
        let (typ, len) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[8], h[9]]) as usize);
        p += 10;
        let data = b.get(p..p + len).ok_or("short DNS reply")?;
        if typ == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        p += len;
    }
    Ok(ips)
}

// ------------------------------------------------------------------ HTTP

struct Request {
    method: String,
    path: String,
}

fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("/").to_string();
    Ok(Some(Request { method, path }))
}

fn respond(stream: &mut TcpStream, code: u16, ctype: &str, body: &str) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        c if c < 300 => "OK",
        c if c < 500 => "Client Error",
        _ => "Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

type Handler = fn(Mode, &Request, &State) -> (u16, String, String);

fn serve_http(mode: Mode, mut stream: TcpStream, peer: &str, state: &State, h: Handler) -> io::Result<()> {
    let req = match read_request(&mut stream)? {
        Some(r) => r,
        None => return Ok(()),
    };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (code, ctype, body) = if req.method != "GET" && req.method != "HEAD" {
        (405, "text/plain".to_string(), format!("method {} not allowed\n", req.method))
    } else {
        h(mode, &req, state)
    };
    log(mode, &format!("{peer} \"{} {}\" {code} {}", req.method, req.path, body.len()));
    respond(&mut stream, code, &ctype, if req.method == "HEAD" { "" } else { &body })
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

const UI_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Yelb</title></head>\n<body>\n\
<h1>Yelb (meshctl test-bed stand-in)</h1>\n\
<p>Votes: <a href=\"/api/getvotes\">/api/getvotes</a>, stats: <a href=\"/api/getstats\">/api/getstats</a></p>\n\
</body></html>\n";

fn ui(_mode: Mode, req: &Request, _state: &State) -> (u16, String, String) {
    if req.path == "/" || req.path == "/index.html" {
        return (200, "text/html".into(), UI_PAGE.into());
    }
    if req.path.starts_with("/api/") {
        let upstream = env_or("YELB_APPSERVER_ADDR", "yelb-appserver:4567");
        return match http_get(&upstream, "yelb-appserver", &req.path) {
            Ok((code, ctype, body)) => (code, ctype, body),
            Err(e) => (502, "text/plain".into(), format!("yelb-appserver ({upstream}): {e}\n")),
        };
    }
    (404, "text/plain".into(), format!("no such page {}\n", req.path))
}

/// GET over a new connection (Connection: close); returns (status, content type, body).
fn http_get(addr: &str, host: &str, path: &str) -> io::Result<(u16, String, String)> {
    let mut s = connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: yelb-ui-standin\r\nAccept: */*\r\nConnection: close\r\n\r\n")?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad HTTP reply from {addr}: {:?}", String::from_utf8_lossy(&raw)))
    })?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line from {addr}: {head:?}")))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    let ctype = header("content-type").unwrap_or_else(|| "application/octet-stream".into());
    Ok((code, ctype, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

fn appserver(_mode: Mode, req: &Request, _state: &State) -> (u16, String, String) {
    let path = req.path.split('?').next().unwrap_or("");
    let (db_msg, redis_msg): (&str, &[&str]) = match path {
        "/api/getvotes" => ("GETVOTES", &["PING"]),
        "/api/getstats" => ("GETSTATS", &["INCR", "pageviews"]),
        "/api/hostname" => return (200, "text/plain".into(), hostname()),
        _ => return (404, "text/plain".into(), format!("no such endpoint {path}\n")),
    };
    let db_addr = env_or("YELB_DB_ADDR", "yelb-db:5432");
    let redis_addr = env_or("REDIS_ADDR", "redis-server:6379");
    let db = ask_db(&db_addr, db_msg).map_err(|e| format!("yelb-db ({db_addr}): {e}"));
    let redis = ask_redis(&redis_addr, redis_msg).map_err(|e| format!("redis-server ({redis_addr}): {e}"));
    match (db, redis) {
        (Ok(db), Ok(redis)) => (
            200,
            "application/json".into(),
            format!(
                "{{\"service\":\"yelb-appserver\",\"hostname\":{},\"path\":{},\"db\":{},\"redis\":{}}}\n",
                json_str(&hostname()),
                json_str(path),
                json_str(&db),
                json_str(&redis)
            ),
        ),
        (db, redis) => {
            let errs: Vec<String> = [db.err(), redis.err()].into_iter().flatten().collect();
            (502, "text/plain".into(), errs.join("\n") + "\n")
        }
    }
}

fn ask_db(addr: &str, msg: &str) -> io::Result<String> {
    let mut s = connect(addr)?;
    writeln!(s, "{msg}")?;
    s.flush()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed without a reply"));
    }
    Ok(line.trim_end().to_string())
}

fn ask_redis(addr: &str, cmd: &[&str]) -> io::Result<String> {
    let mut s = connect(addr)?;
    let mut m = format!("*{}\r\n", cmd.len());
    for a in cmd {
        m.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(m.as_bytes())?;
    s.flush()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let line = line.trim_end().to_string();
    if line.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed without a reply"));
    }
    if let Some(e) = line.strip_prefix('-') {
        return Err(io::Error::new(io::ErrorKind::Other, format!("redis error: {e}")));
    }
    Ok(line)
}

// ------------------------------------------------------------------ db

fn serve_db(mode: Mode, stream: TcpStream, peer: &str, state: &State) -> io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        let mut it = line.split_whitespace();
        let cmd = it.next().unwrap_or("").to_ascii_uppercase();
        let reply = {
            let mut votes = state.votes.lock().unwrap();
            if votes.is_empty() {
                for r in ["outback", "bucadibeppo", "ihop", "chipotle"] {
                    votes.push((r.to_string(), 0));
                }
            }
            match cmd.as_str() {
                "PING" => "PONG yelb-db".to_string(),
                "GETVOTES" => {
                    let v: Vec<String> = votes.iter().map(|(k, n)| format!("{k}={n}")).collect();
                    format!("VOTES {}", v.join(" "))
                }
                "VOTE" => match it.next() {
                    Some(name) => match votes.iter_mut().find(|(k, _)| k == name) {
                        Some(e) => {
                            e.1 += 1;
                            format!("OK {}={}", e.0, e.1)
                        }
                        None => format!("ERR no restaurant {name}"),
                    },
                    None => "ERR usage: VOTE <restaurant>".into(),
                },
                "GETSTATS" => format!("STATS hostname={} requests={}", hostname(), state.requests.load(Ordering::Relaxed)),
                "QUIT" => {
                    writeln!(w, "BYE")?;
                    log(mode, &format!("{peer} {line:?} -> BYE"));
                    return Ok(());
                }
                _ => format!("ERR unknown command {cmd}"),
            }
        };
        log(mode, &format!("{peer} {line:?} -> {reply:?}"));
        writeln!(w, "{reply}")?;
        w.flush()?;
    }
}

// ------------------------------------------------------------------ redis

fn read_resp_command(r: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<String>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(n) = line.strip_prefix('*') {
        let n: usize = n.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad array length"))?;
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let mut hdr = String::new();
            r.read_line(&mut hdr)?;
            let len: usize = hdr
                .trim_end()
                .strip_prefix('$')
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad bulk length"))?;
            let mut data = vec![0u8; len + 2];
            r.read_exact(&mut data)?;
            data.truncate(len);
            args.push(String::from_utf8_lossy(&data).into_owned());
        }
        Ok(Some(args))
    } else {
        Ok(Some(line.split_whitespace().map(str::to_string).collect()))
    }
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn serve_redis(mode: Mode, stream: TcpStream, peer: &str, state: &State) -> io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let args = match read_resp_command(&mut r)? {
            Some(a) => a,
            None => return Ok(()),
        };
        if args.is_empty() {
            continue;
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        let cmd = args[0].to_ascii_uppercase();
        let mut quit = false;
        let reply = {
            let mut kv = state.kv.lock().unwrap();
            match (cmd.as_str(), args.len()) {
                ("PING", 1) => "+PONG\r\n".to_string(),
                ("PING", 2) | ("ECHO", 2) => bulk(&args[1]),
                ("SET", 3) => {
                    kv.insert(args[1].clone(), args[2].clone());
                    "+OK\r\n".into()
                }
                ("GET", 2) => kv.get(&args[1]).map(|v| bulk(v)).unwrap_or_else(|| "$-1\r\n".into()),
                ("INCR", 2) => {
                    let n = kv.get(&args[1]).map(|v| v.parse::<i64>()).unwrap_or(Ok(0));
                    match n {
                        Ok(n) => {
                            kv.insert(args[1].clone(), (n + 1).to_string());
                            format!(":{}\r\n", n + 1)
                        }
                        Err(_) => "-ERR value is not an integer or out of range\r\n".into(),
                    }
                }
                ("DEL", n) if n >= 2 => {
                    let d = args[1..].iter().filter(|k| kv.remove(*k).is_some()).count();
                    format!(":{d}\r\n")
                }
                ("COMMAND", _) => "*0\r\n".into(),
                ("QUIT", _) => {
                    quit = true;
                    "+OK\r\n".into()
                }
                _ => format!("-ERR unknown command '{}' or wrong number of arguments\r\n", args[0]),
            }
        };
        log(mode, &format!("{peer} {:?} -> {:?}", args.join(" "), reply.trim_end()));
        w.write_all(reply.as_bytes())?;
        w.flush()?;
        if quit {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_search_candidates() {
        assert_eq!(Mode::parse("redis-server"), Some(Mode::Redis));
        assert_eq!(Mode::parse("yelb-standin"), None);
        let s = vec!["yelb.svc.cluster.local".to_string(), "svc.cluster.local".to_string()];
        assert_eq!(candidates("yelb-db", &s, 5)[0], "yelb-db.yelb.svc.cluster.local");
        assert_eq!(candidates("a.b.c.d.e.f", &s, 5)[0], "a.b.c.d.e.f");
        assert_eq!(candidates("x.", &s, 5), vec!["x".to_string()]);
    }

    #[test]
    fn dns_answer_parses_a_records() {
        // header id 0x1234, QR+RD+RA, 1 question, 1 answer; question a.b A IN; answer ptr->12 A 10.0.128.5
        let mut b = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        b.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 128, 5]);
        assert_eq!(parse_dns_answer(&b, 0x1234).unwrap(), vec![Ipv4Addr::new(10, 0, 128, 5)]);
        b[3] = 0x83; // NXDOMAIN
        assert!(parse_dns_answer(&b, 0x1234).unwrap().is_empty());
    }

    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
