//! Property tests of the frame decoder and request parser: arbitrary bytes
//! never panic, and valid frames round-trip however they are split.

use proptest::prelude::*;
use ri_control::protocol::{self, FrameError, Framing, decode, encode, parse_request};
use serde_json::{Value, json};

const MAX: usize = 4096;

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![Just(Framing::LengthPrefixed), Just(Framing::Lines)]
}

/// JSON-ish payload without newlines (what a line may carry).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        0..600,
    )
}

/// Decodes every complete frame from a stream fed in the given chunks, the
/// way the server does.
fn decode_stream(f: Framing, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(span) = decode(f, &buf, MAX)? {
            assert!(span.consumed <= buf.len());
            assert!(span.payload.end <= span.consumed);
            out.push(buf[span.payload.clone()].to_vec());
            buf.drain(..span.consumed);
        }
        // The buffer never needs to grow past one frame plus a chunk.
        assert!(buf.len() <= MAX + protocol::HEADER_LEN + chunk.len());
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(f in framing(), bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        match decode(f, &bytes, MAX) {
            Ok(Some(span)) => {
                prop_assert!(span.consumed <= bytes.len());
                prop_assert!(span.payload.start <= span.payload.end);
                prop_assert!(span.payload.end - span.payload.start <= MAX);
            }
            Ok(None) => prop_assert!(bytes.len() <= MAX + protocol::HEADER_LEN),
            Err(FrameError::TooLarge { max, .. }) => prop_assert_eq!(max, MAX),
        }
        let _ = parse_request(&bytes);
    }

    #[test]
    fn frames_round_trip_across_splits(
        f in framing(),
        payloads in proptest::collection::vec(payload(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend(encode(f, p, MAX).unwrap());
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let got = decode_stream(f, &chunks).unwrap();
        let expected: Vec<Vec<u8>> = payloads
            .iter()
            .map(|p| {
                let mut p = p.clone();
                // Lines framing strips one trailing carriage return.
                if f == Framing::Lines && p.last() == Some(&b'\r') {
                    p.pop();
                }
                p
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn oversized_length_prefix_is_rejected_from_the_header(len in (MAX as u32 + 1)..=u32::MAX, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(tail);
        let is_too_large = matches!(
            decode(Framing::LengthPrefixed, &bytes, MAX),
            Err(FrameError::TooLarge { .. })
        );
        prop_assert!(is_too_large);
    }

    #[test]
    fn requests_round_trip(
        id in prop_oneof![any::<u64>().prop_map(|n| json!(n)), "[a-z0-9]{0,8}".prop_map(Value::from), Just(Value::Null)],
        cmd in "[a-z][a-z0-9_.:-]{0,20}",
        mutate in any::<bool>(),
        n in any::<i64>(),
        s in ".{0,40}",
    ) {
        let req = json!({"v": 1, "id": id, "cmd": cmd, "args": {"n": n, "s": s}, "mutate": mutate});
        let bytes = req.to_string().into_bytes();
        let framed = encode(Framing::LengthPrefixed, &bytes, MAX).unwrap();
        let span = decode(Framing::LengthPrefixed, &framed, MAX).unwrap().unwrap();
        let parsed = parse_request(&framed[span.payload]).unwrap();
        prop_assert_eq!(parsed.id, id);
        prop_assert_eq!(parsed.cmd, cmd);
        prop_assert_eq!(parsed.mutate, mutate);
        prop_assert_eq!(&parsed.args["n"], &json!(n));
        prop_assert_eq!(&parsed.args["s"], &json!(s));
    }

    #[test]
    fn arbitrary_json_objects_never_panic(keys in proptest::collection::vec(("[a-z]{1,6}", any::<i32>()), 0..6)) {
        let mut obj = serde_json::Map::new();
        for (k, v) in keys {
            obj.insert(k, json!(v));
        }
        let _ = parse_request(Value::Object(obj).to_string().as_bytes());
    }
}
