//! Engine benchmarks: phone number normalization, dedupe, segment counting, durable batch
//! writes to the embedded store and the whole broadcast pipeline (no HTTP).
//!
//! ```text
//! cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench engine -- normalize/      # a subset
//! ```
//!
//! Every benchmark reports `Throughput::Elements`: numbers parsed, numbers deduped,
//! bodies counted, messages written or recipients broadcast per second.
//!
//! The actix actors need a running actix `System`. Each actor benchmark creates one
//! `SystemRunner` up front and drives every sample with `system.block_on(..)` inside
//! `iter_custom`, so the actors (and their arbiter threads) live across samples and only
//! the measured work is timed; building inputs and cleaning up happen off the clock.

use actix::{Actor, Addr, Arbiter, System};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use futures::future::join_all;
use sendme_actors::accept::dedupe::{shard_of, Dedupe, DedupeChunk, ForgetBatch};
use sendme_actors::accept::{Broadcast, BroadcastSupervisor, EngineSettings, Recipients};
use sendme_actors::domain::{
    count_segments, load_metadata, now_millis, Account, AccountId, Batch, BatchId, Country,
    Encoding, MemberId, MessageBlock, MessageBody, MessageType, PhoneNumber, StatusCounts,
};
use sendme_actors::embedded::{EmbeddedStore, InProcessQueue};
use sendme_actors::ports::{DispatchQueue, MessageFilter, MessageStore, Ports};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Numbers per normalization iteration.
const NORMALIZE_N: usize = 10_000;
/// Numbers per dedupe iteration, and the share of them that repeat an earlier one.
const DEDUPE_N: usize = 100_000;
const DEDUPE_DUPLICATE_PERCENT: usize = 5;
/// Messages per durable batch write.
const STORE_BATCH_N: usize = 10_000;
/// Raw recipients per broadcast.
const BROADCAST_N: usize = 100_000;

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// A small deterministic PRNG (xorshift64*), so inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn digits(&mut self, n: u32) -> u64 {
        self.next() % 10u64.pow(n)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn country(code: &str) -> Country {
    code.parse().expect("a known country code")
}

/// Valid Colombian mobile prefixes (306–309 are not assigned).
const CO_MOBILE_PREFIXES: [u16; 23] = [
    300, 301, 302, 303, 304, 305, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    323, 350, 351, 370,
];

/// `n` distinct Colombian mobiles as (prefix, 7-digit subscriber).
fn colombian_mobiles(n: usize, rng: &mut Rng) -> Vec<(u16, u64)> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let prefix = CO_MOBILE_PREFIXES[rng.below(CO_MOBILE_PREFIXES.len())];
        let subscriber = 1_000_000 + rng.digits(7) % 9_000_000;
        if seen.insert((prefix, subscriber)) {
            out.push((prefix, subscriber));
        }
    }
    out
}

/// One Colombian mobile in one of the national formats people type.
fn co_national(prefix: u16, subscriber: u64, style: usize) -> String {
    let (a, b) = (subscriber / 10_000, subscriber % 10_000);
    match style % 4 {
        0 => format!("{prefix}{subscriber:07}"),
        1 => format!("{prefix} {a:03} {b:04}"),
        2 => format!("{prefix}-{a:03}-{b:04}"),
        _ => format!("({prefix}) {a:03}-{b:04}"),
    }
}

fn co_e164(prefix: u16, subscriber: u64) -> String {
    format!("+57{prefix}{subscriber:07}")
}

/// Realistic national-format numbers for several countries, plus some written in
/// international format, each with the country a client would send along.
fn many_country_numbers(n: usize, rng: &mut Rng) -> Vec<(String, Option<Country>, &'static str)> {
    type Gen = fn(&mut Rng) -> String;
    let gens: [(&str, &str, Gen); 12] = [
        ("US", "+1", |r| {
            let area = [212, 415, 312, 617, 305, 206][r.below(6)];
            let exchange = 200 + r.below(700);
            format!("({area}) {exchange}-{:04}", r.digits(4))
        }),
        ("MX", "+52", |r| {
            let area = ["55", "33", "81"][r.below(3)];
            format!("{area} {:04} {:04}", 1000 + r.digits(4) % 9000, r.digits(4))
        }),
        ("BR", "+55", |r| {
            let area = [11, 21, 31, 41, 61][r.below(5)];
            let first = 6 + r.below(4);
            format!("({area}) 9{first}{:03}-{:04}", r.digits(3), r.digits(4))
        }),
        ("AR", "+54", |r| {
            format!(
                "+54 9 11 {}{:03}-{:04}",
                2 + r.below(7),
                r.digits(3),
                r.digits(4)
            )
        }),
        ("ES", "+34", |r| {
            format!(
                "6{:02} {:02} {:02} {:02}",
                r.digits(2),
                r.digits(2),
                r.digits(2),
                r.digits(2)
            )
        }),
        ("GB", "+44", |r| {
            format!("074{}{} {:06}", r.below(5), r.digits(1), r.digits(6))
        }),
        ("DE", "+49", |r| match r.below(2) {
            0 => format!("015{} {:08}", [1, 2, 7][r.below(3)], r.digits(8)),
            _ => format!("017{} {:07}", [0, 1, 6][r.below(3)], r.digits(7)),
        }),
        ("FR", "+33", |r| {
            format!(
                "06 1{} {:02} {:02} {:02}",
                r.digits(1),
                r.digits(2),
                r.digits(2),
                r.digits(2)
            )
        }),
        ("IN", "+91", |r| {
            let first = ["98", "99", "97", "70"][r.below(4)];
            format!("{first}{:03} {:05}", r.digits(3), r.digits(5))
        }),
        ("CO", "+57", |r| {
            let (p, s) = (
                CO_MOBILE_PREFIXES[r.below(CO_MOBILE_PREFIXES.len())],
                1_000_000 + r.digits(7) % 9_000_000,
            );
            co_national(p, s, r.below(4))
        }),
        ("IT", "+39", |r| {
            let prefix = [320, 333, 347, 348][r.below(4)];
            format!("{prefix} {:03} {:04}", r.digits(3), r.digits(4))
        }),
        ("JP", "+81", |r| {
            let prefix = ["090", "080"][r.below(2)];
            format!(
                "{prefix}-{}{:03}-{:04}",
                1 + r.below(9),
                r.digits(3),
                r.digits(4)
            )
        }),
    ];
    (0..n)
        .map(|i| {
            let (code, cc, gen) = gens[i % gens.len()];
            let raw = gen(rng);
            // Numbers already in international form need no country.
            let region = (!raw.starts_with('+')).then(|| country(code));
            (raw, region, cc)
        })
        .collect()
}

/// `n` E.164 numbers, about `percent`% of them repeating an earlier one, shuffled.
fn e164_with_duplicates(n: usize, percent: usize, rng: &mut Rng) -> (Vec<PhoneNumber>, usize) {
    let unique = n - n * percent / 100;
    let mut numbers: Vec<PhoneNumber> = colombian_mobiles(unique, rng)
        .into_iter()
        .map(|(p, s)| PhoneNumber::from_trusted(&co_e164(p, s)).expect("a number"))
        .collect();
    while numbers.len() < n {
        let again = numbers[rng.below(unique)].clone();
        numbers.push(again);
    }
    rng.shuffle(&mut numbers);
    (numbers, unique)
}

/// A batch record and its queued messages, built the way the supervisor builds them.
/// A new batch for `recipients` and fresh message ids, as a request would bring.
fn queued_batch(account: AccountId, recipients: &[PhoneNumber]) -> (Batch, MessageBlock) {
    let body = MessageBody::parse(
        "Hola, tu pedido ya va en camino. Consulta el estado en sendme.example/p".to_owned(),
    )
    .expect("a valid body");
    let segments = body.segments().count;
    let total = recipients.len() as u64;
    let batch = Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind: MessageType::Sms,
        body,
        segments,
        total,
        cost: u64::from(segments) * total,
        counts: StatusCounts {
            queued: total,
            ..StatusCounts::default()
        },
        created_at: now_millis(),
        send_at: None,
        paused: false,
    };
    (batch, MessageBlock::new(recipients.to_vec()))
}

/// An account with more credits than any bench spends.
async fn rich_account(store: &EmbeddedStore) -> AccountId {
    use sendme_actors::ports::{AccountStore, Ledger};
    let account = Account::new(
        AccountId::new(),
        "Bench".into(),
        country("CO"),
        now_millis(),
    );
    store.put_account(&account).await.expect("account");
    store.top_up(account.id, 1 << 50).await.expect("credits");
    account.id
}

// ---------------------------------------------------------------------------------------
// normalize/*
// ---------------------------------------------------------------------------------------

fn bench_normalize(c: &mut Criterion) {
    let db = load_metadata();
    let co = Some(country("CO"));
    let mut rng = Rng::new(0x5e_4d_3e);
    let mobiles = colombian_mobiles(NORMALIZE_N, &mut rng);
    let national: Vec<String> = mobiles
        .iter()
        .enumerate()
        .map(|(i, &(p, s))| co_national(p, s, i))
        .collect();
    let e164: Vec<String> = mobiles.iter().map(|&(p, s)| co_e164(p, s)).collect();
    let mixed = many_country_numbers(NORMALIZE_N, &mut rng);

    // Every input must be valid, or the benchmark would time the error path.
    for (raw, expected) in national.iter().zip(&e164) {
        let parsed = PhoneNumber::parse_with(&db, raw, co)
            .unwrap_or_else(|_| panic!("{raw} should be a valid Colombian mobile"));
        assert_eq!(parsed.as_str(), expected);
        let again = PhoneNumber::parse_with(&db, expected, co).unwrap();
        assert_eq!(again.as_str(), expected);
    }
    let invalid: Vec<_> = mixed
        .iter()
        .filter(|(raw, region, cc)| {
            !PhoneNumber::parse_with(&db, raw, *region).is_ok_and(|n| n.as_str().starts_with(cc))
        })
        .map(|(raw, region, _)| format!("{raw} ({region:?})"))
        .take(10)
        .collect();
    assert!(
        invalid.is_empty(),
        "invalid many-country inputs: {invalid:?}"
    );
    let countries: HashSet<_> = mixed.iter().map(|(_, _, cc)| *cc).collect();
    assert!(countries.len() >= 10);

    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(NORMALIZE_N as u64));
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("colombia_national", |b| {
        b.iter(|| {
            for raw in &national {
                black_box(PhoneNumber::parse_with(&db, black_box(raw), co).ok());
            }
        })
    });
    group.bench_function("colombia_e164", |b| {
        b.iter(|| {
            for raw in &e164 {
                black_box(PhoneNumber::parse_with(&db, black_box(raw), co).ok());
            }
        })
    });
    group.bench_function("many_countries", |b| {
        b.iter(|| {
            for (raw, region, _) in &mixed {
                black_box(PhoneNumber::parse_with(&db, black_box(raw), *region).ok());
            }
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// dedupe/*
// ---------------------------------------------------------------------------------------

/// What the supervisor does with one normalized chunk: route each number to its shard,
/// ask the shards concurrently, and put the first occurrences back in input order.
async fn dedupe_chunk(
    shards: &[Addr<Dedupe>],
    batch: BatchId,
    numbers: Vec<PhoneNumber>,
    offset: u32,
) -> Vec<PhoneNumber> {
    let mut routed: Vec<Vec<(u32, PhoneNumber)>> = vec![Vec::new(); shards.len()];
    for (i, n) in numbers.into_iter().enumerate() {
        routed[shard_of(&n, shards.len())].push((offset + i as u32, n));
    }
    let replies = join_all(
        routed
            .into_iter()
            .zip(shards)
            .filter(|(numbers, _)| !numbers.is_empty())
            .map(|(numbers, shard)| shard.send(DedupeChunk { batch, numbers })),
    )
    .await;
    let mut kept: Vec<(u32, PhoneNumber)> = replies
        .into_iter()
        .flat_map(|r| r.expect("dedupe shard alive"))
        .collect();
    kept.sort_unstable_by_key(|(i, _)| *i);
    kept.into_iter().map(|(_, n)| n).collect()
}

/// Times deduping `numbers` through `shards`, `iters` times, each as a new batch.
async fn time_dedupe(
    shards: &[Addr<Dedupe>],
    numbers: &[PhoneNumber],
    chunk_size: usize,
    unique: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = BatchId::new();
        let chunks: Vec<Vec<PhoneNumber>> = numbers.chunks(chunk_size).map(<[_]>::to_vec).collect();
        let start = Instant::now();
        let mut kept = Vec::with_capacity(unique);
        let mut offset = 0u32;
        for chunk in chunks {
            let n = chunk.len() as u32;
            kept.extend(dedupe_chunk(shards, batch, chunk, offset).await);
            offset += n;
        }
        total += start.elapsed();
        assert_eq!(kept.len(), unique);
        drop(kept);
        for shard in shards {
            shard.send(ForgetBatch(batch)).await.expect("shard alive");
        }
    }
    total
}

fn bench_dedupe(c: &mut Criterion) {
    let mut rng = Rng::new(0xdede_0001);
    let (numbers, unique) = e164_with_duplicates(DEDUPE_N, DEDUPE_DUPLICATE_PERCENT, &mut rng);
    let settings = EngineSettings::default();

    let system = System::new();
    // The supervisor's layout: each shard on its own arbiter thread.
    let (arbiters, shards): (Vec<Arbiter>, Vec<Addr<Dedupe>>) = system.block_on(async {
        (0..settings.dedupe_shards.max(1))
            .map(|_| {
                let arbiter = Arbiter::new();
                let addr = Dedupe::start_in_arbiter(&arbiter.handle(), |_| Dedupe::default());
                (arbiter, addr)
            })
            .unzip()
    });
    // One shard on the benchmark's own thread, all numbers in one message: the set logic
    // plus a single mailbox hop.
    let single = system.block_on(async { Dedupe::default().start() });

    let mut group = c.benchmark_group("dedupe");
    group.throughput(Throughput::Elements(DEDUPE_N as u64));
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(format!("{}_shards_100k", shards.len()), |b| {
        b.iter_custom(|iters| {
            system.block_on(time_dedupe(
                &shards,
                &numbers,
                settings.chunk_size,
                unique,
                iters,
            ))
        })
    });
    group.bench_function("1_shard_100k", |b| {
        b.iter_custom(|iters| {
            system.block_on(time_dedupe(
                std::slice::from_ref(&single),
                &numbers,
                DEDUPE_N,
                unique,
                iters,
            ))
        })
    });
    group.finish();

    drop((shards, single));
    for arbiter in arbiters {
        arbiter.stop();
        arbiter.join().expect("dedupe arbiter thread");
    }
}

// ---------------------------------------------------------------------------------------
// segments/*
// ---------------------------------------------------------------------------------------

fn bench_segments(c: &mut Criterion) {
    let gsm7: String = "Hola Ana, tu pedido #48213 ya llego. Recogelo en Calle 93 #11-26 antes \
                        del viernes. Dudas: 601 555 0101. Responde STOP para no recibir mas. "
        .chars()
        .cycle()
        .take(160)
        .collect();
    let spanish = "¡Hola María! Tu cita está confirmada para mañana a las 3:30 p.m. en la \
                   clínica del norte. Si no puedes asistir, llámanos al 601 555 0101.";
    let emoji = "🎉 ¡Feliz cumpleaños! 🎂 Hoy tienes 20% de descuento en toda la tienda 🛍️ \
                 Usa el código FIESTA20 antes de medianoche 🕛";
    let cases = [
        ("gsm7_160", gsm7.as_str(), Encoding::Gsm7, 1),
        ("spanish_ucs2", spanish, Encoding::Ucs2, 3),
        ("emoji_ucs2", emoji, Encoding::Ucs2, 2),
    ];

    let mut group = c.benchmark_group("segments");
    group.throughput(Throughput::Elements(1));
    for (name, body, encoding, count) in cases {
        let s = count_segments(body);
        assert_eq!((s.encoding, s.count), (encoding, count), "{name}: {s:?}");
        group.bench_function(name, |b| b.iter(|| count_segments(black_box(body))));
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// store/*
// ---------------------------------------------------------------------------------------

/// Criterion's custom timing for a store bench: each round gets a batch of `recipients`
/// with new ids, as a new request would have, and returns the time it measured.
struct StoreRounds<'a> {
    rt: &'a tokio::runtime::Runtime,
    store: &'a EmbeddedStore,
    account: AccountId,
    recipients: &'a [PhoneNumber],
}

impl StoreRounds<'_> {
    fn run<F, Fut>(&self, b: &mut criterion::Bencher<'_>, round: F)
    where
        F: Fn(EmbeddedStore, Batch, MessageBlock) -> Fut,
        Fut: std::future::Future<Output = Duration>,
    {
        b.to_async(self.rt).iter_custom(|iters| {
            let round = &round;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (batch, messages) = queued_batch(self.account, self.recipients);
                    total += round(self.store.clone(), batch, messages).await;
                }
                total
            }
        });
    }
}

fn bench_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open the embedded store");
    let account = rt.block_on(rich_account(&store));
    let mut rng = Rng::new(0x5707_e000);
    let recipients: Vec<PhoneNumber> = colombian_mobiles(STORE_BATCH_N, &mut rng)
        .into_iter()
        .map(|(p, s)| PhoneNumber::from_trusted(&co_e164(p, s)).expect("a number"))
        .collect();

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(STORE_BATCH_N as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let rounds = StoreRounds {
        rt: &rt,
        store: &store,
        account,
        recipients: &recipients,
    };
    group.bench_function("accept_batch_durable", |b| {
        rounds.run(b, |store, batch, messages| async move {
            let start = Instant::now();
            store
                .accept_batch(&batch, messages)
                .await
                .expect("durable batch write");
            start.elapsed()
        })
    });
    // The same, until the recipient index has the batch too (it is written behind the
    // accept, on a thread of its own): what an accept costs in all.
    group.bench_function("accept_batch_durable_and_indexed", |b| {
        let last = recipients.last().cloned();
        rounds.run(b, |store, batch, messages| {
            let last = last.clone();
            async move {
                let start = Instant::now();
                let account = batch.account;
                store
                    .accept_batch(&batch, messages)
                    .await
                    .expect("durable batch write");
                let found = store
                    .list_messages(&MessageFilter {
                        account,
                        recipient: last,
                        limit: 1,
                        ..MessageFilter::default()
                    })
                    .await
                    .expect("a lookup");
                assert!(!found.items.is_empty(), "the recipient is indexed");
                start.elapsed()
            }
        })
    });
    // The store's part of delivery alone: every message claimed (`queued → sending`) and
    // then `sent`, in status groups of 2,048 as the dispatcher's writer makes them, each
    // group durable before the next.
    group.bench_function("claim_and_send_durable", |b| {
        use sendme_actors::domain::{MessageStatus, StatusChange};
        rounds.run(b, |store, batch, messages| async move {
            let ids: Vec<_> = store
                .accept_batch(&batch, messages)
                .await
                .expect("durable batch write")
                .ids()
                .collect();
            let start = Instant::now();
            for (from, to) in [
                (MessageStatus::Queued, MessageStatus::Sending),
                (MessageStatus::Sending, MessageStatus::Sent),
            ] {
                for chunk in ids.chunks(2048) {
                    let changes = chunk
                        .iter()
                        .map(|id| StatusChange::new(*id, from, to, 1))
                        .collect();
                    let applied = store.apply(changes).await.expect("durable");
                    assert!(applied.iter().all(Option::is_some));
                }
            }
            start.elapsed()
        })
    });
    group.finish();
    drop(store);
    drop(rt);
    drop(dir);
}

// ---------------------------------------------------------------------------------------
// pipeline/*
// ---------------------------------------------------------------------------------------

/// 100,000 raw Colombian recipients as a client would send them: mixed national formats,
/// about 2% repeated in another format and 1% with an unassigned prefix.
fn broadcast_recipients(n: usize, rng: &mut Rng) -> (Vec<String>, u64, u64) {
    let invalid = n / 100;
    let duplicates = n * 2 / 100;
    let unique = n - invalid - duplicates;
    let mobiles = colombian_mobiles(unique, rng);
    let mut raw: Vec<String> = mobiles
        .iter()
        .enumerate()
        .map(|(i, &(p, s))| co_national(p, s, i))
        .collect();
    for i in 0..duplicates {
        let (p, s) = mobiles[rng.below(unique)];
        raw.push(if i % 2 == 0 {
            co_e164(p, s)
        } else {
            co_national(p, s, rng.below(4))
        });
    }
    for _ in 0..invalid {
        let prefix = 306 + rng.below(4);
        raw.push(format!("{prefix}{:07}", rng.digits(7)));
    }
    rng.shuffle(&mut raw);
    (raw, invalid as u64, duplicates as u64)
}

fn bench_pipeline(c: &mut Criterion) {
    let mut rng = Rng::new(0xb10a_dca5);
    let (raw, invalid, duplicates) = broadcast_recipients(BROADCAST_N, &mut rng);
    let raw = sendme_actors::domain::RawNumbers::from(raw);
    let co = country("CO");
    let body = MessageBody::parse(
        "SendMe: tu codigo de descuento es AHORRA15. Valido hasta el domingo.".to_owned(),
    )
    .expect("a valid body");

    let dir = tempfile::tempdir().expect("a temp dir");
    let system = System::new();
    let (supervisor, queue, account) = system.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open the embedded store"));
        let queue = Arc::new(InProcessQueue::new(8));
        let account = rich_account(&store).await;
        let ports = Ports::embedded(store, queue.clone());
        let supervisor = BroadcastSupervisor::start(ports, &EngineSettings::default());
        (supervisor, queue, account)
    });
    let member = MemberId::new();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BROADCAST_N as u64));
    group.sample_size(10);
    // About a second per broadcast on two cores: ten samples need about ten seconds.
    group.measurement_time(Duration::from_secs(10));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("broadcast_100k", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let request = Broadcast {
                        batch: BatchId::new(),
                        account,
                        member,
                        country: co,
                        body: body.clone(),
                        kind: MessageType::Sms,
                        recipients: Recipients::Numbers(raw.clone()),
                        send_at: None,
                    };
                    let start = Instant::now();
                    let accepted = supervisor.send(request).await.expect("broadcast accepted");
                    total += start.elapsed();
                    assert_eq!(accepted.stats.invalid, invalid);
                    assert_eq!(accepted.stats.duplicates, duplicates);
                    assert_eq!(
                        accepted.messages.len() as u64,
                        BROADCAST_N as u64 - invalid - duplicates
                    );
                    // Nobody dispatches here: empty the queue so memory stays flat.
                    for p in 0..queue.partition_count() {
                        queue.take(p, usize::MAX);
                    }
                }
                total
            })
        })
    });
    group.finish();
    drop(supervisor);
    drop(system);
    drop(dir);
}

// ---------------------------------------------------------------------------------------
// delivery/*
// ---------------------------------------------------------------------------------------

const DELIVERY_N: usize = 100_000;

/// From "100,000 messages queued" to "all 100,000 durably `sent`" through the real
/// dispatcher (claims and outcomes group-committed with fsync) and the simulated provider
/// with no rate limit and no receipts.
fn bench_delivery(c: &mut Criterion) {
    use sendme_actors::clock::EngineClock;
    use sendme_actors::deliver::{start_delivery, DispatchSettings};
    use sendme_actors::ports::QueueRecord;
    use sendme_actors::providers::{SimulatedProvider, SimulatedSettings};

    let mut rng = Rng::new(0xde11_7e55);
    let recipients: Vec<PhoneNumber> = colombian_mobiles(DELIVERY_N, &mut rng)
        .into_iter()
        .map(|(p, s)| PhoneNumber::parse(&co_e164(p, s), None).expect("valid"))
        .collect();
    let system = System::new();
    let mut group = c.benchmark_group("delivery");
    group.throughput(Throughput::Elements(DELIVERY_N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("simulated_100k_durable", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("a temp dir");
                    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
                    let queue = Arc::new(InProcessQueue::new(8));
                    let ports = Ports::embedded(store.clone(), queue.clone());
                    let account = rich_account(&store).await;
                    let (batch, messages) = queued_batch(account, &recipients);
                    let messages = store.accept_batch(&batch, messages).await.expect("write");
                    let records = messages
                        .iter()
                        .map(|(id, recipient)| QueueRecord::new(id, recipient, MessageType::Sms))
                        .collect();
                    queue.publish(records).await.expect("publish");
                    drop(messages);
                    let clock = EngineClock::start();
                    let sim = SimulatedSettings {
                        receipt_delay: None,
                        ..SimulatedSettings::default()
                    };
                    let provider = Arc::new(SimulatedProvider::new("simulated", sim, clock));
                    let start = Instant::now();
                    let delivery =
                        start_delivery(ports, provider, None, DispatchSettings::default(), clock);
                    loop {
                        let b = store.batch(batch.id).await.expect("read").expect("batch");
                        if b.counts.sent == DELIVERY_N as u64 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    total += start.elapsed();
                    delivery.shutdown(Duration::from_secs(5)).await;
                }
                total
            })
        })
    });
    group.finish();
}

/// A webhook receiver on 127.0.0.1 that answers 204 to everything, counting the POSTs.
fn start_receiver(system: &actix::SystemRunner) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let url = system.block_on(async move {
        let server = HttpServer::new(move || {
            let counter = counter.clone();
            App::new().default_service(web::to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { HttpResponse::NoContent().finish() }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("binding the receiver");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        format!("http://127.0.0.1:{port}/hook")
    });
    (url, received)
}

/// delivery_receipts/*: 100,000 messages through the durable delivery pipeline with the
/// simulated provider sending a receipt for each (after 10 ms), timed until every one is
/// `delivered`: with status callbacks off (no webhook), with the outbox written but no
/// dispatcher (what the status writes pay), and on (the account has a webhook, a local
/// receiver answers 204, the callback dispatcher runs). The difference is what
/// callbacks cost the pipeline: the outbox value per status group, and the CPU the
/// dispatcher and the receiver take meanwhile on the same machine.
fn bench_delivery_callbacks(c: &mut Criterion) {
    use sendme::webhooks::HttpCallbackSender;
    use sendme_actors::clock::EngineClock;
    use sendme_actors::deliver::{start_delivery, CallbackSettings, DispatchSettings};
    use sendme_actors::domain::Webhook;
    use sendme_actors::ports::{QueueRecord, WebhookStore};
    use sendme_actors::providers::{SimulatedProvider, SimulatedSettings};

    let mut rng = Rng::new(0xca11_bac5);
    let recipients: Vec<PhoneNumber> = colombian_mobiles(DELIVERY_N, &mut rng)
        .into_iter()
        .map(|(p, s)| PhoneNumber::parse(&co_e164(p, s), None).expect("valid"))
        .collect();
    let system = System::new();
    let (url, received) = start_receiver(&system);
    let mut group = c.benchmark_group("delivery_receipts");
    group.throughput(Throughput::Elements(DELIVERY_N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.sampling_mode(SamplingMode::Flat);
    // (name, the account has a webhook, the callback dispatcher runs)
    let modes = [
        ("simulated_100k_callbacks_off", false, false),
        ("simulated_100k_callbacks_outbox_only", true, false),
        ("simulated_100k_callbacks_on", true, true),
    ];
    for (name, callbacks, dispatcher) in modes {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().expect("a temp dir");
                        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
                        let queue = Arc::new(InProcessQueue::new(8));
                        let ports = Ports::embedded(store.clone(), queue.clone());
                        let account = rich_account(&store).await;
                        if callbacks {
                            let hook = Webhook {
                                account,
                                url: url.clone(),
                                secret: "bench-secret-0123456789".into(),
                            };
                            store.put_webhook(&hook).await.expect("webhook");
                        }
                        let (batch, messages) = queued_batch(account, &recipients);
                        let messages = store.accept_batch(&batch, messages).await.expect("write");
                        let records = messages
                            .iter()
                            .map(|(id, recipient)| {
                                QueueRecord::new(id, recipient, MessageType::Sms)
                            })
                            .collect();
                        queue.publish(records).await.expect("publish");
                        drop(messages);
                        let clock = EngineClock::start();
                        let sim = SimulatedSettings {
                            receipt_delay: Some(Duration::from_millis(10)),
                            ..SimulatedSettings::default()
                        };
                        let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
                        let provider = Arc::new(
                            SimulatedProvider::new("simulated", sim, clock).with_receipts(tx),
                        );
                        let before = received.load(std::sync::atomic::Ordering::Relaxed);
                        let start = Instant::now();
                        let delivery = start_delivery(
                            ports,
                            provider,
                            Some(inbox),
                            DispatchSettings::default(),
                            clock,
                        );
                        if dispatcher {
                            let sender = HttpCallbackSender::new(Duration::from_secs(5))
                                .expect("an HTTP client");
                            delivery.start_callbacks(Arc::new(sender), CallbackSettings::default());
                        }
                        loop {
                            let b = store.batch(batch.id).await.expect("read").expect("batch");
                            if b.counts.delivered == DELIVERY_N as u64 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        let took = start.elapsed();
                        total += took;
                        if dispatcher {
                            let posted =
                                received.load(std::sync::atomic::Ordering::Relaxed) - before;
                            eprintln!(
                                "callbacks received while delivering: {posted} in {:.2} s",
                                took.as_secs_f64()
                            );
                        }
                        delivery.shutdown(Duration::from_secs(5)).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_normalize,
    bench_dedupe,
    bench_segments,
    bench_store,
    bench_pipeline,
    bench_delivery,
    bench_delivery_callbacks
);
/// `criterion_main!`, with the server's allocator settings first.
fn main() {
    sendme::allocator::tune();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
