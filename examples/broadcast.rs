//! Broadcast load tool: posts ONE `POST /api/messages/sms/contacts` request with N recipients
//! and reports how the server took it.
//!
//! ```sh
//! cargo build --release --example broadcast
//! SENDME_TOKEN=... target/release/examples/broadcast --recipients 1000000 --pid <server pid>
//! ```
//!
//! Recipients are deterministic (a seeded SplitMix64, `--seed`):
//!
//! - default: Colombian mobiles (prefixes 300–305, 310–323, 350, 351, 370) in national
//!   format, read with `country: "CO"`;
//! - `--country-mix`: valid mobiles of ten countries in E.164 (`+57…`, `+1…`, `+52…`, …).
//!
//! About 5% of the entries repeat an earlier recipient written in another format
//! ("300 123 4567", "+57 300-123-4567", …) and about 2% are invalid (prefixes 306–309, too
//! short), so the server has to normalize, dedupe and drop. The tool knows how many unique
//! valid recipients it generated and compares that with the `messages` the server accepted.
//!
//! `--opt-outs N` first opts N of the unique recipients out (`POST /api/opt-outs`, spread
//! over the list), so the send must leave them out; `--preview` posts the same body to the
//! preview endpoint instead of sending.
//!
//! With `--pid PID` it reads the server's peak RSS (`VmHWM` in `/proc/PID/status`) after the
//! response: that is the peak over the server's whole life, so use a freshly started server
//! for each measurement.

use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Instant;

const USAGE: &str = "\
usage: broadcast [options]
  --url URL          server base URL (default http://127.0.0.1:8080)
  --token TOKEN      bearer token (default: env SENDME_TOKEN)
  --recipients N     entries in the request (default 1000000)
  --country-mix      valid mobiles of 10 countries in E.164 instead of Colombian mobiles
  --seed N           PRNG seed (default 42)
  --message TEXT     message body (default a short GSM-7 text)
  --pid PID          server process id: report its peak RSS (VmHWM) after the request
  --opt-outs N       opt N of the unique recipients out first (POST /api/opt-outs)
  --preview          POST to .../contacts/preview (nothing is sent)
  -h, --help         this help";

/// Probability (in percent) that an entry repeats an earlier recipient in another format.
const DUPLICATE_PERCENT: u64 = 5;
/// Probability (in percent) that an entry is invalid.
const INVALID_PERCENT: u64 = 2;

struct Options {
    url: String,
    token: String,
    recipients: usize,
    country_mix: bool,
    seed: u64,
    message: String,
    pid: Option<u32>,
    opt_outs: usize,
    preview: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut url = "http://127.0.0.1:8080".to_owned();
    let mut token = std::env::var("SENDME_TOKEN").ok();
    let mut recipients = 1_000_000usize;
    let mut country_mix = false;
    let mut seed = 42u64;
    let mut opt_outs = 0usize;
    let mut preview = false;
    let mut message = "Hello from SendMe: your appointment is confirmed.".to_owned();
    let mut pid = None;

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--url" => url = value("--url")?,
            "--token" => token = Some(value("--token")?),
            "--recipients" => {
                recipients = value("--recipients")?
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--recipients: {e}"))?
            }
            "--country-mix" => country_mix = true,
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--message" => message = value("--message")?,
            "--pid" => pid = Some(value("--pid")?.parse().map_err(|e| format!("--pid: {e}"))?),
            "--opt-outs" => {
                opt_outs = value("--opt-outs")?
                    .parse()
                    .map_err(|e| format!("--opt-outs: {e}"))?
            }
            "--preview" => preview = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no token: pass --token or set SENDME_TOKEN\n{USAGE}"))?;
    Ok(Options {
        url: url.trim_end_matches('/').to_owned(),
        token,
        recipients,
        country_mix,
        seed,
        message,
        pid,
        opt_outs,
        preview,
    })
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` for a load generator.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    fn digits(&mut self, out: &mut String, count: usize) {
        for _ in 0..count {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

/// How to draw a valid mobile of one country (patterns from the libphonenumber metadata).
struct Plan {
    /// Country calling code.
    code: &'static str,
    /// National number prefixes; one is picked at random.
    prefixes: &'static [&'static str],
    /// Digits allowed right after the prefix.
    next: &'static [u8],
    /// Random digits after that one.
    rest: usize,
    /// Group sizes of the national number when written with separators.
    groups: &'static [usize],
}

const ANY: &[u8] = b"0123456789";

const COLOMBIA: Plan = Plan {
    code: "57",
    prefixes: &[
        "300", "301", "302", "303", "304", "305", "310", "311", "312", "313", "314", "315", "316",
        "317", "318", "319", "320", "321", "322", "323", "350", "351", "370",
    ],
    next: ANY,
    rest: 6,
    groups: &[3, 3, 4],
};

/// Mobiles that libphonenumber (the `phonenumber` crate the server uses) considers valid.
const MIX: &[Plan] = &[
    COLOMBIA,
    // United States, San Francisco: 415 NXX XXXX.
    Plan {
        code: "1",
        prefixes: &["415", "646", "312"],
        next: b"23456789",
        rest: 6,
        groups: &[3, 3, 4],
    },
    // Mexico City: 55 XXXX XXXX.
    Plan {
        code: "52",
        prefixes: &["55"],
        next: ANY,
        rest: 7,
        groups: &[2, 4, 4],
    },
    // Brazil, São Paulo mobile: 11 9XXXX XXXX.
    Plan {
        code: "55",
        prefixes: &["119"],
        next: ANY,
        rest: 7,
        groups: &[2, 5, 4],
    },
    // Argentina, Buenos Aires mobile (international form): 9 11 XXXX XXXX.
    Plan {
        code: "54",
        prefixes: &["911"],
        next: b"12345678",
        rest: 7,
        groups: &[1, 2, 4, 4],
    },
    // Spain: 6XX XXX XXX.
    Plan {
        code: "34",
        prefixes: &["6"],
        next: ANY,
        rest: 7,
        groups: &[3, 3, 3],
    },
    // United Kingdom: 7[1-3]XX XXXXXX.
    Plan {
        code: "44",
        prefixes: &["71", "72", "73"],
        next: ANY,
        rest: 7,
        groups: &[4, 6],
    },
    // Germany: 17X XXXXXXX.
    Plan {
        code: "49",
        prefixes: &[
            "170", "171", "172", "173", "174", "175", "176", "177", "178", "179",
        ],
        next: ANY,
        rest: 6,
        groups: &[3, 7],
    },
    // France: 6 XX XX XX XX (not 63X, 69X).
    Plan {
        code: "33",
        prefixes: &["6"],
        next: b"0124578",
        rest: 7,
        groups: &[1, 2, 2, 2, 2],
    },
    // Peru: 9XX XXX XXX.
    Plan {
        code: "51",
        prefixes: &["9"],
        next: ANY,
        rest: 7,
        groups: &[3, 3, 3],
    },
];

/// One unique valid recipient: its plan and national number.
struct Recipient {
    plan: &'static Plan,
    national: String,
}

impl Recipient {
    fn draw(plan: &'static Plan, rng: &mut Rng) -> Self {
        let mut national = String::with_capacity(12);
        national.push_str(rng.pick(plan.prefixes));
        national.push(char::from(rng.pick(plan.next)));
        rng.digits(&mut national, plan.rest);
        Self { plan, national }
    }

    fn e164(&self) -> String {
        format!("+{}{}", self.plan.code, self.national)
    }

    /// The national number split into groups joined by `sep`.
    fn grouped(&self, sep: &str) -> String {
        let mut out = String::with_capacity(self.national.len() + 4);
        let mut at = 0;
        for (i, size) in self.plan.groups.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            let end = (at + size).min(self.national.len());
            out.push_str(&self.national[at..end]);
            at = end;
        }
        out.push_str(&self.national[at..]);
        out
    }

    /// How the recipient appears the first time.
    fn canonical(&self, national_format: bool) -> String {
        if national_format {
            self.national.clone()
        } else {
            self.e164()
        }
    }

    /// The same recipient written another way.
    fn variant(&self, rng: &mut Rng, national_format: bool) -> String {
        let code = self.plan.code;
        let choice = rng.below(if national_format { 5 } else { 3 });
        match (national_format, choice) {
            (true, 0) => self.grouped(" "), // 300 123 4567
            (true, 1) => self.grouped("-"), // 300-123-4567
            (true, 2) => {
                let n = &self.national;
                format!("({}) {}-{}", &n[..3], &n[3..6], &n[6..]) // (300) 123-4567
            }
            (true, 3) => format!("+{code} {}", self.grouped("-")), // +57 300-123-4567
            (true, _) => self.e164(),                              // +573001234567
            (false, 0) => format!("+{code} {}", self.grouped(" ")), // +34 612 345 678
            (false, 1) => format!("+{code}-{}", self.grouped("-")), // +34-612-345-678
            (false, _) => format!(" +{code}{} ", self.national),   // surrounding blanks
        }
    }
}

/// An invalid entry: a prefix outside the numbering plan or a number too short.
fn invalid(rng: &mut Rng, national_format: bool) -> String {
    let mut s = String::with_capacity(14);
    match (rng.below(2), national_format) {
        (0, true) => {
            s.push_str(rng.pick(&["306", "307", "308", "309"]));
            rng.digits(&mut s, 7);
        }
        (_, true) => {
            s.push_str("300");
            let len = 2 + rng.below(4) as usize;
            rng.digits(&mut s, len);
        }
        (0, false) => {
            s.push_str(rng.pick(&["+57306", "+57307", "+57308", "+57309"]));
            rng.digits(&mut s, 7);
        }
        (_, false) => {
            s.push_str(rng.pick(&["+57300", "+34", "+4471", "+4917"]));
            let len = 2 + rng.below(3) as usize;
            rng.digits(&mut s, len);
        }
    }
    s
}

struct Generated {
    contacts: Vec<String>,
    /// Every unique valid recipient, E.164.
    unique: Vec<String>,
    unique_valid: usize,
    duplicates: usize,
    invalid: usize,
}

fn generate(count: usize, country_mix: bool, seed: u64) -> Generated {
    let mut rng = Rng(seed);
    let national_format = !country_mix;
    let mut contacts = Vec::with_capacity(count);
    let mut seen: HashSet<String> = HashSet::with_capacity(count);
    let mut unique: Vec<Recipient> = Vec::with_capacity(count);
    let (mut duplicates, mut invalids) = (0, 0);
    while contacts.len() < count {
        let roll = rng.below(100);
        if roll < INVALID_PERCENT {
            contacts.push(invalid(&mut rng, national_format));
            invalids += 1;
        } else if roll < INVALID_PERCENT + DUPLICATE_PERCENT && !unique.is_empty() {
            let earlier = &unique[rng.index(unique.len())];
            contacts.push(earlier.variant(&mut rng, national_format));
            duplicates += 1;
        } else {
            let plan = if country_mix {
                &MIX[rng.index(MIX.len())]
            } else {
                &COLOMBIA
            };
            let recipient = Recipient::draw(plan, &mut rng);
            if seen.insert(recipient.e164()) {
                contacts.push(recipient.canonical(national_format));
                unique.push(recipient);
            }
        }
    }
    Generated {
        contacts,
        unique_valid: unique.len(),
        unique: unique.iter().map(Recipient::e164).collect(),
        duplicates,
        invalid: invalids,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviewResponse {
    recipients: usize,
    opted_out: usize,
}

/// Opts `n` of `unique` out, spread over the list, a few requests at a time.
async fn opt_out(
    client: &reqwest::Client,
    o: &Options,
    unique: &[String],
) -> Result<usize, Box<dyn std::error::Error>> {
    use futures_util::StreamExt;
    let n = o.opt_outs.min(unique.len());
    if n == 0 {
        return Ok(0);
    }
    let step = unique.len() / n;
    let url = format!("{}/api/opt-outs", o.url);
    let results: Vec<Result<reqwest::StatusCode, reqwest::Error>> =
        futures_util::stream::iter((0..n).map(|i| &unique[i * step]))
            .map(|phone| {
                client
                    .post(&url)
                    .bearer_auth(&o.token)
                    .json(&serde_json::json!({ "phone": phone }))
                    .send()
            })
            .buffer_unordered(32)
            .map(|r| r.map(|r| r.status()))
            .collect()
            .await;
    for r in results {
        let status = r?;
        if !status.is_success() {
            return Err(format!("opting a number out answered {status}").into());
        }
    }
    Ok(n)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendResponse {
    queue_id: String,
    messages: Vec<IgnoredAny>,
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(options).await {
        eprintln!("broadcast: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Options) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let generated = generate(o.recipients, o.country_mix, o.seed);
    let body = serde_json::to_vec(&serde_json::json!({
        "message": o.message,
        "contacts": generated.contacts,
        "country": "CO",
    }))?;
    let recipients = generated.contacts.len();
    drop(generated.contacts);
    println!(
        "generated {recipients} recipients ({}) in {:.2} s: {} unique valid, {} duplicates in other formats, {} invalid; request body {:.1} MiB",
        if o.country_mix { "10-country mix, E.164" } else { "Colombian mobiles" },
        started.elapsed().as_secs_f64(),
        generated.unique_valid,
        generated.duplicates,
        generated.invalid,
        mib(body.len() as f64),
    );
    let client = reqwest::Client::builder().build()?;
    let opted_out = opt_out(&client, &o, &generated.unique).await?;
    if opted_out > 0 {
        println!("opted out first:     {opted_out} of the unique recipients");
    }
    let expected = generated.unique_valid - opted_out;
    let rss_before = o.pid.and_then(peak_rss_kib);
    let load_before = load_average();

    let url = format!(
        "{}/api/messages/sms/contacts{}",
        o.url,
        if o.preview { "/preview" } else { "" }
    );
    let sent = Instant::now();
    let response = client
        .post(&url)
        .bearer_auth(&o.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let headers_after = sent.elapsed().as_secs_f64();
    let status = response.status();
    let bytes = response.bytes().await?;
    let elapsed = sent.elapsed().as_secs_f64();
    let rss_after = o.pid.and_then(peak_rss_kib);

    println!("url:                 {url}");
    println!("HTTP status:         {status}");
    println!("time to headers:     {headers_after:.3} s");
    println!("time to response:    {elapsed:.3} s (whole body received)");
    println!("recipients sent:     {recipients}");
    println!(
        "recipients/s:        {:.0}",
        recipients as f64 / elapsed.max(1e-9)
    );
    if status.is_success() && o.preview {
        let parsed: PreviewResponse = serde_json::from_slice(&bytes)?;
        let matched = parsed.recipients == expected && parsed.opted_out == opted_out;
        println!(
            "previewed:           {} recipients, {} opted out (expected {expected} and {opted_out}{})",
            parsed.recipients,
            parsed.opted_out,
            if matched { ", match" } else { ", MISMATCH" }
        );
    } else if status.is_success() {
        let parsed: SendResponse = serde_json::from_slice(&bytes)?;
        let accepted = parsed.messages.len();
        println!(
            "accepted messages:   {accepted} (expected {expected} unique valid, not opted out{})",
            if accepted == expected {
                ", match"
            } else {
                ", MISMATCH"
            }
        );
        println!(
            "queueId:             {}",
            if parsed.queue_id.is_empty() {
                "(none)"
            } else {
                &parsed.queue_id
            }
        );
    } else {
        let text = String::from_utf8_lossy(&bytes);
        println!(
            "error body:          {}",
            text.chars().take(500).collect::<String>()
        );
    }
    println!(
        "response size:       {} bytes ({:.1} MiB)",
        bytes.len(),
        mib(bytes.len() as f64)
    );
    match (o.pid, rss_after) {
        (Some(pid), Some(kib)) => println!(
            "server peak RSS:     {:.1} MiB (VmHWM of pid {pid}; {} before the request)",
            kib as f64 / 1024.0,
            rss_before.map_or("?".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1024.0)),
        ),
        (Some(pid), None) => println!("server peak RSS:     unavailable (/proc/{pid}/status)"),
        (None, _) => println!("server peak RSS:     not measured (pass --pid PID)"),
    }
    println!(
        "load average:        {load_before} before, {} after",
        load_average()
    );
    if !status.is_success() {
        return Err(format!("the server answered {status}").into());
    }
    Ok(())
}
