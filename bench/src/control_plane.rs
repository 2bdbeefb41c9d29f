//! The control plane against raw etcd: PUT and GET throughput and latency through the REST API
//! (OSS V1-signed, HTTP/1.1 keep-alive) and signed gRPC, at several numbers of concurrent
//! clients, beside raw etcd put and get of the same keys' size at the same concurrency on the
//! same etcd. One etcd, one control server on it, the clients in this process; nothing is
//! pinned (etcd and the control server both need a core).
//!
//! Every client is a connection of its own (an etcd client shares one HTTP/2 connection, as
//! the control server's does; `--grpc-channels N`: the gRPC clients share N). `--ops` and
//! `--apis` choose the cells; each cell also reports the load client's own CPU per operation. PUTs alternate each bucket between two policies (the
//! control server runs with `--rest-downgrades allow`, and gRPC PUTs ask `allow_downgrade`,
//! since every other change loosens the bucket). A raw etcd put writes a stored policy's
//! bytes to a key of its own; a control PUT reads the bucket's revision, commits the change
//! guarded by it, and records it in the audit trail.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tlsfleet_proto::{
    signer::{signed_request, AccessKey, Signer},
    v1::{https_config_service_client::HttpsConfigServiceClient, GetRequest, PutRequest},
};
use tlsfleet_testkit::{
    control::{keys, Control},
    etcd::Etcd,
    rest::sign_v1,
};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::{cpu, data::write_policies};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent clients, one measurement each.
    pub clients: Vec<usize>,
    pub seconds: f64,
    pub warmup_seconds: f64,
    /// Buckets stored before the run (GETs spread over them; PUTs cycle over them).
    pub buckets: usize,
    /// The operations measured (PUT, GET), and through which APIs.
    pub ops: Vec<Op>,
    pub apis: Vec<Api>,
    /// HTTP/2 connections the gRPC clients share (their calls multiplexed on them, as one
    /// process's calls on a channel are); 0: a connection for each client.
    pub grpc_channels: usize,
    /// The control server's `--request-log`.
    pub request_log: tlsfleet_control::request_log::RequestLog,
}

/// An operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Put,
    Get,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::Put, Op::Get];
}

/// An API, and etcd underneath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    Etcd,
    /// A raw etcd transaction of the shape a control PUT commits (PUTs only).
    #[value(name = "txn")]
    EtcdTxn,
    Rest,
    Grpc,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Etcd, Api::EtcdTxn, Api::Rest, Api::Grpc];

    pub fn label(self) -> &'static str {
        match self {
            Api::Etcd => "raw etcd",
            Api::EtcdTxn => "raw etcd guarded txn",
            Api::Rest => "REST (OSS V1)",
            Api::Grpc => "gRPC (signed)",
        }
    }
}

/// What one measurement saw.
#[derive(Debug, Clone)]
pub struct Measured {
    pub api: Api,
    pub put: bool,
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    /// The first error, to say what went wrong.
    pub first_error: Option<String>,
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU time per operation over the measured seconds: etcd's, and the control server's
    /// (0 for raw etcd, which does not go through it).
    pub etcd_cpu_us: f64,
    pub control_cpu_us: f64,
    /// The load client's (this process's) CPU time per operation: what the clients took of
    /// the two cores the servers share with them.
    pub client_cpu_us: f64,
}

/// Everything one run measured.
pub struct Results {
    pub settings: Settings,
    pub etcd_version: String,
    pub measured: Vec<Measured>,
}

/// The two policies a PUT alternates between (XML for REST, wire for gRPC).
fn xml(i: u64) -> &'static str {
    if i.is_multiple_of(2) {
        "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion></TLS></HttpsConfiguration>"
    } else {
        "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.2</TLSVersion><TLSVersion>TLSv1.3</TLSVersion></TLS></HttpsConfiguration>"
    }
}

fn wire(i: u64) -> tlsfleet_proto::v1::HttpsConfig {
    let versions: &[&str] = if i.is_multiple_of(2) {
        &["TLSv1.3"]
    } else {
        &["TLSv1.2", "TLSv1.3"]
    };
    tlsfleet_testkit::grpc::https_config(versions, &[], &[])
}

/// The bucket a client's `i`-th call names: clients cycle over disjoint slices of the stored
/// buckets, so no two PUTs race on one key (and a V1 signature, which covers the date to the
/// second, never repeats).
fn bucket_for(client: usize, clients: usize, i: u64, buckets: usize) -> String {
    let per_client = (buckets / clients).max(1);
    let n = client * per_client + (i as usize % per_client);
    crate::data::bucket(n % buckets)
}

/// Runs every API at every concurrency.
pub fn run(s: &Settings) -> anyhow::Result<Results> {
    let etcd = Etcd::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(write_policies(&etcd.endpoint(), s.buckets))?;
    let control = Control::on_etcd_with(
        &etcd.endpoint(),
        &[
            "--rest-downgrades".to_owned(),
            "allow".to_owned(),
            // One access key at more than 10,000 signed calls a second (the default bound of
            // its replay cache) would be refused: room for a minute of them.
            "--replay-cache-per-key".to_owned(),
            "1000000".to_owned(),
            "--request-log".to_owned(),
            clap::ValueEnum::to_possible_value(&s.request_log)
                .map_or_else(|| "all".to_owned(), |v| v.get_name().to_owned()),
        ],
    );
    let etcd_version = etcd_version();
    let mut measured = Vec::new();
    for &clients in &s.clients {
        for put in [true, false] {
            if !s.ops.contains(if put { &Op::Put } else { &Op::Get }) {
                continue;
            }
            for api in Api::ALL {
                if (api == Api::EtcdTxn && !put) || !s.apis.contains(&api) {
                    continue;
                }
                let m = runtime.block_on(measure(s, &etcd, &control, api, put, clients))?;
                let (label, op) = (api.label(), if put { "PUT" } else { "GET" });
                let (rate, p50, p99, errors) = (m.per_second, m.p50_us, m.p99_us, m.errors);
                eprintln!("{label} {op} x{clients}: {rate:.0}/s p50 {p50} µs p99 {p99} µs ({errors} errors)");
                measured.push(m);
            }
        }
    }
    Ok(Results {
        settings: s.clone(),
        etcd_version,
        measured,
    })
}

fn etcd_version() -> String {
    std::process::Command::new("/usr/bin/etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().last().map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

/// One client's connection.
enum Conn {
    /// With a tag (for its guard keys), a PUT is the control server's transaction, not a put.
    Etcd(Box<etcd_client::KvClient>, Option<u128>),
    Rest(
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        SocketAddr,
    ),
    Grpc(Box<GrpcClient>),
}

type GrpcClient =
    HttpsConfigServiceClient<tonic::service::interceptor::InterceptedService<Channel, Signer>>;

async fn connect(
    api: Api,
    etcd: &etcd_client::Client,
    control: &Control,
    channel: Option<&Channel>,
) -> anyhow::Result<Conn> {
    Ok(match api {
        Api::Etcd => Conn::Etcd(Box::new(etcd.kv_client()), None),
        // Guard keys unique to this connection (and run).
        Api::EtcdTxn => Conn::Etcd(
            Box::new(etcd.kv_client()),
            Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            ),
        ),
        Api::Rest => {
            let stream = TcpStream::connect(control.http).await?;
            stream.set_nodelay(true)?;
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            // Ends when the connection closes (the client is dropped at the end of the run).
            tokio::spawn(conn);
            Conn::Rest(send, control.http)
        }
        Api::Grpc => {
            let channel = match channel {
                Some(c) => c.clone(),
                None => Channel::from_shared(control.grpc_url())?.connect().await?,
            };
            let key = AccessKey::new(keys::ADMIN.0, keys::ADMIN.1)?;
            Conn::Grpc(Box::new(HttpsConfigServiceClient::with_interceptor(
                channel,
                Signer::new(key),
            )))
        }
    })
}

/// About the size of a PUT's audit record (JSON with the policy before and after).
const AUDIT_RECORD_BYTES: usize = 700;

/// A stored policy's bytes, what a raw etcd put writes.
fn raw_value(i: u64) -> Vec<u8> {
    let policy = if i.is_multiple_of(2) {
        crate::data::policy(11)
    } else {
        crate::data::policy(0)
    };
    let stored = tlsfleet_control::store::StoredPolicy {
        config: policy,
        updated_by: keys::ADMIN.0.into(),
        updated_at_unix_ms: 0,
        ..Default::default()
    };
    // A StoredPolicy always encodes (plain data to JSON).
    stored.encode().unwrap_or_default()
}

impl Conn {
    async fn call(&mut self, put: bool, bucket: &str, i: u64) -> anyhow::Result<()> {
        match self {
            Conn::Etcd(kv, Some(tag)) => {
                // What a control PUT commits: the key compared with its revision and its
                // audit record's key (the write's guard) absent; the policy and the record
                // written; the key and the record read back otherwise.
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let key = format!("/bench/raw/{bucket}");
                let audit = format!("/bench/audit/{:013}-{tag:x}-{bucket}-{i}", i);
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(key.as_str(), CompareOp::NotEqual, -1),
                        Compare::create_revision(audit.as_str(), CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put(key.as_str(), raw_value(i), None),
                        TxnOp::put(audit.as_str(), vec![b'x'; AUDIT_RECORD_BYTES], None),
                    ])
                    .or_else([
                        TxnOp::get(key.as_str(), None),
                        TxnOp::get(audit.as_str(), None),
                    ]);
                let resp = kv.txn(txn).await?;
                anyhow::ensure!(resp.succeeded(), "the transaction's comparisons failed");
            }
            Conn::Etcd(kv, None) => {
                let key = format!("/bench/raw/{bucket}");
                if put {
                    kv.put(key, raw_value(i), None).await?;
                } else {
                    kv.get(key, None).await?;
                }
            }
            Conn::Rest(send, addr) => {
                let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                let (verb, ct, body) = if put {
                    ("PUT", "application/xml", xml(i))
                } else {
                    ("GET", "", "")
                };
                let auth = sign_v1(keys::ADMIN, verb, ct, &date, bucket);
                let mut req = hyper::Request::builder()
                    .method(verb)
                    .uri(format!("/{bucket}/?httpsConfig"))
                    .header("host", addr.to_string())
                    .header("date", date)
                    .header("authorization", auth);
                if put {
                    req = req.header("content-type", ct);
                }
                let req = req.body(Full::new(Bytes::from_static(body.as_bytes())))?;
                send.ready().await?;
                let resp = send.send_request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                anyhow::ensure!(
                    status.is_success(),
                    "{verb} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Conn::Grpc(client) => {
                if put {
                    client
                        .put(signed_request(PutRequest {
                            bucket: bucket.to_owned(),
                            config: Some(wire(i)),
                            allow_downgrade: true,
                            ..Default::default()
                        }))
                        .await?;
                } else {
                    client
                        .get(signed_request(GetRequest {
                            bucket: bucket.to_owned(),
                        }))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// One client's tally.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn measure(
    s: &Settings,
    etcd: &Etcd,
    control: &Control,
    api: Api,
    put: bool,
    clients: usize,
) -> anyhow::Result<Measured> {
    let etcd_client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .context("connecting to etcd")?;
    if api == Api::Etcd && !put {
        // The raw keys a GET reads: one for each bucket a client names.
        let mut kv = etcd_client.kv_client();
        for b in 0..s.buckets {
            kv.put(
                format!("/bench/raw/{}", crate::data::bucket(b)),
                raw_value(b as u64),
                None,
            )
            .await?;
        }
    }
    let warmup = Duration::from_secs_f64(s.warmup_seconds);
    let measured = Duration::from_secs_f64(s.seconds);
    let start = Instant::now() + warmup;
    let end = start + measured;
    let mut channels = Vec::new();
    if api == Api::Grpc {
        for _ in 0..s.grpc_channels.min(clients) {
            channels.push(Channel::from_shared(control.grpc_url())?.connect().await?);
        }
    }
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let shared = (!channels.is_empty()).then(|| &channels[client % channels.len()]);
        let mut conn = connect(api, &etcd_client, control, shared).await?;
        let buckets = s.buckets;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i: u64 = 0;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let bucket = bucket_for(client, clients, i, buckets);
                let result = conn.call(put, &bucket, i).await;
                i += 1;
                if t0 < start {
                    continue;
                }
                match result {
                    Ok(()) => tally
                        .latencies_us
                        .push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            tally
        }));
    }
    let pids = [
        etcd.pid().context("etcd is not running")?,
        control
            .process()
            .pid()
            .context("the control server is not running")?,
        std::process::id(),
    ];
    let sleep_until = |t: Instant| tokio::time::sleep_until(tokio::time::Instant::from_std(t));
    let cpu_times =
        || -> std::io::Result<Vec<Duration>> { pids.iter().map(|&p| cpu::cpu_time(p)).collect() };
    sleep_until(start).await;
    let cpu_before = cpu_times()?;
    sleep_until(end).await;
    let cpu_after = cpu_times()?;
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let tally = t.await?;
        all.extend(tally.latencies_us);
        errors += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let idx = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        u64::from(all[idx])
    };
    let per_op = |i: usize| {
        let used = cpu_after[i].saturating_sub(cpu_before[i]).as_secs_f64() * 1e6;
        if all.is_empty() {
            0.0
        } else {
            used / all.len() as f64
        }
    };
    Ok(Measured {
        api,
        put,
        clients,
        etcd_cpu_us: per_op(0),
        control_cpu_us: if matches!(api, Api::Etcd | Api::EtcdTxn) {
            0.0
        } else {
            per_op(1)
        },
        client_cpu_us: per_op(2),
        ops: all.len() as u64,
        errors,
        first_error,
        per_second: all.len() as f64 / measured.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// The markdown table: one row per operation and concurrency, the APIs side by side, ratios
/// to raw etcd.
pub fn markdown(r: &Results) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "etcd {}, {} buckets stored, {} s per cell after {} s of warm-up, control server with \
         `--request-log {}`{}.\n",
        r.etcd_version,
        r.settings.buckets,
        r.settings.seconds,
        r.settings.warmup_seconds,
        clap::ValueEnum::to_possible_value(&r.settings.request_log)
            .map_or_else(|| "?".to_owned(), |v| v.get_name().to_owned()),
        match r.settings.grpc_channels {
            0 => String::new(),
            n => format!(", gRPC clients sharing {n} connection(s)"),
        }
    );
    let _ = writeln!(
        out,
        "| operation | clients | raw etcd put or get /s (p50 / p99 ms) | raw etcd guarded txn /s (p50 / p99 ms) | REST /s (p50 / p99 ms) | vs etcd (put, txn) | gRPC /s (p50 / p99 ms) | vs etcd (put, txn) | CPU µs per op: etcd for raw / txn / REST / gRPC; control for REST / gRPC; client for raw / txn / REST / gRPC |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let cell = |m: &Measured| {
        let mut c = format!(
            "{:.0} ({:.2} / {:.2})",
            m.per_second,
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0
        );
        if m.errors > 0 {
            let _ = write!(c, ", **{} errors**", m.errors);
        }
        c
    };
    for put in [true, false] {
        for &clients in &r.settings.clients {
            let find = |api| {
                r.measured
                    .iter()
                    .find(|m| m.api == api && m.put == put && m.clients == clients)
            };
            let (e, rest, grpc) = (find(Api::Etcd), find(Api::Rest), find(Api::Grpc));
            if e.is_none() && rest.is_none() && grpc.is_none() {
                continue;
            }
            let txn = find(Api::EtcdTxn);
            let over = |m: &Measured, base: Option<&Measured>| match base {
                Some(b) if b.per_second > 0.0 => format!("{:.2}x", m.per_second / b.per_second),
                _ => "–".into(),
            };
            let ratio = |m: Option<&Measured>| match (m, txn) {
                (None, _) => "–".into(),
                (Some(m), Some(_)) => format!("{}, {}", over(m, e), over(m, txn)),
                (Some(m), None) => over(m, e),
            };
            let dash = || "–".to_owned();
            let us = |v: f64| format!("{v:.0}");
            let _ = writeln!(
                out,
                "| {} | {clients} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {}; {} / {}; {} / {} / {} / {} |",
                if put { "PUT" } else { "GET" },
                e.map_or_else(dash, cell),
                txn.map_or_else(dash, cell),
                rest.map_or_else(dash, cell),
                ratio(rest),
                grpc.map_or_else(dash, cell),
                ratio(grpc),
                e.map_or_else(dash, |m| us(m.etcd_cpu_us)),
                txn.map_or_else(dash, |m| us(m.etcd_cpu_us)),
                rest.map_or_else(dash, |m| us(m.etcd_cpu_us)),
                grpc.map_or_else(dash, |m| us(m.etcd_cpu_us)),
                rest.map_or_else(dash, |m| us(m.control_cpu_us)),
                grpc.map_or_else(dash, |m| us(m.control_cpu_us)),
                e.map_or_else(dash, |m| us(m.client_cpu_us)),
                txn.map_or_else(dash, |m| us(m.client_cpu_us)),
                rest.map_or_else(dash, |m| us(m.client_cpu_us)),
                grpc.map_or_else(dash, |m| us(m.client_cpu_us))
            );
        }
    }
    for m in &r.measured {
        if let Some(e) = &m.first_error {
            let _ = writeln!(
                out,
                "\n{} {} x{}: first error: {e}",
                m.api.label(),
                if m.put { "PUT" } else { "GET" },
                m.clients
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_name_disjoint_buckets() {
        let names = |c| (0..50).map(move |i| bucket_for(c, 4, i, 100));
        let a: std::collections::BTreeSet<_> = names(0).collect();
        let b: std::collections::BTreeSet<_> = names(1).collect();
        assert_eq!(a.len(), 25);
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn the_two_policies_differ() {
        assert_ne!(xml(0), xml(1));
        assert_ne!(wire(0), wire(1));
        assert_ne!(raw_value(0), raw_value(1));
    }

    #[test]
    fn a_failed_cell_says_so() {
        let m = |api, errors| Measured {
            api,
            put: true,
            clients: 1,
            ops: 10,
            errors,
            first_error: (errors > 0).then(|| "refused".to_owned()),
            per_second: 100.0,
            p50_us: 1000,
            p99_us: 2000,
            etcd_cpu_us: 50.0,
            control_cpu_us: 0.0,
            client_cpu_us: 20.0,
        };
        let r = Results {
            settings: Settings {
                clients: vec![1],
                seconds: 1.0,
                warmup_seconds: 0.0,
                buckets: 10,
                ops: Op::ALL.to_vec(),
                apis: Api::ALL.to_vec(),
                grpc_channels: 0,
                request_log: Default::default(),
            },
            etcd_version: "3.4".into(),
            measured: vec![m(Api::Etcd, 0), m(Api::Rest, 3), m(Api::Grpc, 0)],
        };
        let md = markdown(&r);
        assert!(md.contains("**3 errors**"), "{md}");
        assert!(md.contains("first error: refused"), "{md}");
        assert!(md.contains("| PUT | 1 | 100 (1.00 / 2.00) | – |"), "{md}");
    }

    #[test]
    fn apis_left_out_are_dashes() {
        let rest = Measured {
            api: Api::Rest,
            put: false,
            clients: 4,
            ops: 10,
            errors: 0,
            first_error: None,
            per_second: 250.0,
            p50_us: 1000,
            p99_us: 2000,
            etcd_cpu_us: 1.0,
            control_cpu_us: 30.0,
            client_cpu_us: 20.0,
        };
        let r = Results {
            settings: Settings {
                clients: vec![4],
                seconds: 1.0,
                warmup_seconds: 0.0,
                buckets: 10,
                ops: vec![Op::Get],
                apis: vec![Api::Rest],
                grpc_channels: 0,
                request_log: Default::default(),
            },
            etcd_version: "3.4".into(),
            measured: vec![rest],
        };
        let md = markdown(&r);
        assert!(
            md.contains("| GET | 4 | – | – | 250 (1.00 / 2.00) | – | – | – | – / – / 1 / –; 30 / –; – / – / 20 / – |"),
            "{md}"
        );
        assert!(!md.contains("| PUT"), "{md}");
    }
}
