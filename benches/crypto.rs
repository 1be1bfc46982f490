//! Canonical JSON and ed25519 signing of a bind association: the work behind every
//! `/3pid/bind` answer, v1 lookup and onbind callback.

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;
use mxisd::crypto::canonical::to_canonical;
use mxisd::crypto::sign::{verify_json, Signer};
use serde_json::json;
use std::hint::black_box;

fn association() -> serde_json::Value {
    json!({
        "address": "alice.liddell@wonderland.example.org",
        "medium": "email",
        "mxid": "@alice:example.org",
        "not_after": 4_102_444_800_000u64,
        "not_before": 1_700_000_000_000u64,
        "ts": 1_700_000_000_000u64,
    })
}

fn bench(c: &mut Criterion) {
    let signer = Signer::new(SigningKey::from_bytes(&[42; 32]), "ed25519:0");
    let assoc = association();
    c.bench_function("canonical_json/bind_association", |b| {
        b.iter(|| to_canonical(black_box(&assoc)))
    });
    c.bench_function("sign/bind_association", |b| {
        b.iter(|| {
            let mut v = assoc.clone();
            signer
                .sign_json("id.example.org", black_box(&mut v))
                .map(|_| v)
        })
    });
    let mut signed = assoc.clone();
    let _ = signer.sign_json("id.example.org", &mut signed);
    let key = signer.verifying_key();
    c.bench_function("verify/bind_association", |b| {
        b.iter(|| verify_json(black_box(&signed), "id.example.org", "ed25519:0", &key))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
