//! The wire protocol of Open vSwitch's unixctl: JSON-RPC 1.0 objects back to back on a stream.
//!
//! A request is `{"id": ID, "method": "fdb/show", "params": ["br0"]}` (params: strings); the
//! reply is `{"id": ID, "result": "TEXT", "error": null}` or `{"id": ID, "result": null,
//! "error": "MESSAGE"}`. Objects may follow each other with or without whitespace between.

use serde_json::Value;

/// Largest request accepted, in bytes: a command line, not a file.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply (any JSON value; null for a notification).
    pub id: Value,
    /// The command, e.g. `fdb/show`.
    pub method: String,
    /// Its arguments.
    pub params: Vec<String>,
}

/// Why bytes on the socket are not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON at all.
    #[error("malformed JSON-RPC request: {0}")]
    Json(String),
    /// JSON, but not the shape of a request.
    #[error("invalid JSON-RPC request: {0}; expected {{\"id\": ID, \"method\": \"COMMAND\", \"params\": [\"ARG\", ...]}}")]
    Shape(&'static str),
    /// The request grew past [`MAX_REQUEST`] without ending.
    #[error("request exceeds {MAX_REQUEST} bytes")]
    TooLarge,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A request, and how many bytes of the buffer it took.
    Request(Request, usize),
    /// The start of a request (or nothing but whitespace): read more.
    NeedMore,
    /// Broken input: answer with the error, then close.
    Error(ProtocolError),
}

/// Reads the first request out of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let parsed = match values.next() {
        None => return need_more(buf.len()),
        Some(Err(e)) if e.is_eof() => return need_more(buf.len()),
        Some(Err(e)) => return Parsed::Error(ProtocolError::Json(e.to_string())),
        Some(Ok(v)) => v,
    };
    let used = values.byte_offset();
    if used > MAX_REQUEST {
        return Parsed::Error(ProtocolError::TooLarge);
    }
    match request_of(parsed) {
        Ok(r) => Parsed::Request(r, used),
        Err(e) => Parsed::Error(e),
    }
}

fn need_more(len: usize) -> Parsed {
    if len > MAX_REQUEST {
        Parsed::Error(ProtocolError::TooLarge)
    } else {
        Parsed::NeedMore
    }
}

fn request_of(v: Value) -> Result<Request, ProtocolError> {
    let Value::Object(mut o) = v else {
        return Err(ProtocolError::Shape("not a JSON object"));
    };
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(ProtocolError::Shape("\"method\" is not a string")),
        None => return Err(ProtocolError::Shape("no \"method\"")),
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|p| match p {
                Value::String(s) => Ok(s),
                _ => Err(ProtocolError::Shape(
                    "\"params\" holds a value that is not a string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ProtocolError::Shape("\"params\" is not an array")),
    };
    let id = o.remove("id").unwrap_or(Value::Null);
    Ok(Request { id, method, params })
}

/// The reply to request `id`: its result text, or an error message.
pub fn reply(id: &Value, outcome: Result<String, String>) -> Vec<u8> {
    let v = match outcome {
        Ok(text) => serde_json::json!({"id": id, "result": text, "error": null}),
        Err(msg) => serde_json::json!({"id": id, "result": null, "error": msg}),
    };
    // Serialising a Value cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A request as a client sends it.
pub fn request(id: u64, method: &str, params: &[String]) -> Vec<u8> {
    let v = serde_json::json!({"id": id, "method": method, "params": params});
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id.
    pub id: Value,
    /// The outcome: result text or error message.
    pub outcome: Result<String, String>,
}

/// Reads the first reply out of `buf`: Ok(None) when more bytes are needed.
#[cfg(test)]
pub fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, ProtocolError> {
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let v = match values.next() {
        None => return Ok(None),
        Some(Err(e)) if e.is_eof() => return Ok(None),
        Some(Err(e)) => return Err(ProtocolError::Json(e.to_string())),
        Some(Ok(v)) => v,
    };
    reply_of(v).map(Some)
}

/// A reply out of a JSON value.
pub fn reply_of(v: Value) -> Result<Reply, ProtocolError> {
    let Value::Object(mut o) = v else {
        return Err(ProtocolError::Shape("reply is not a JSON object"));
    };
    let id = o.remove("id").unwrap_or(Value::Null);
    let outcome = match (o.remove("result"), o.remove("error")) {
        (_, Some(e)) if !e.is_null() => Err(match e {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        (Some(Value::String(s)), _) => Ok(s),
        (Some(other), _) if !other.is_null() => Ok(other.to_string()),
        _ => return Err(ProtocolError::Shape("reply has neither result nor error")),
    };
    Ok(Reply { id, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_like_ovs_appctl_sends() {
        let b = br#"{"id":0,"method":"fdb/show","params":["br0"]}"#;
        match parse(b) {
            Parsed::Request(r, n) => {
                assert_eq!(n, b.len());
                assert_eq!(r.method, "fdb/show");
                assert_eq!(r.params, ["br0"]);
                assert_eq!(r.id, serde_json::json!(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn back_to_back_requests_and_partial_ones() {
        let b = br#"{"id":1,"method":"version","params":[]} {"id":2,"method":"exit","para"#;
        let Parsed::Request(r, n) = parse(b) else {
            panic!()
        };
        assert_eq!((r.id, r.method.as_str()), (serde_json::json!(1), "version"));
        assert_eq!(parse(&b[n..]), Parsed::NeedMore);
        assert_eq!(parse(b"  \n"), Parsed::NeedMore);
        assert_eq!(parse(b""), Parsed::NeedMore);
    }

    #[test]
    fn broken_and_wrong_shapes_are_errors() {
        for bad in [
            &b"{\"id\":1,]"[..],
            b"hello",
            b"[1,2]",
            b"{\"id\":1}",
            b"{\"id\":1,\"method\":3}",
            b"{\"id\":1,\"method\":\"x\",\"params\":[1]}",
            b"{\"id\":1,\"method\":\"x\",\"params\":\"a\"}",
            b"\xff\xfe",
        ] {
            assert!(matches!(parse(bad), Parsed::Error(_)), "{:?}", bad);
        }
        let deep = "[".repeat(100_000);
        assert!(matches!(parse(deep.as_bytes()), Parsed::Error(_)));
    }

    #[test]
    fn oversize_is_refused() {
        let mut big = br#"{"id":1,"method":"x","params":[""#.to_vec();
        big.resize(MAX_REQUEST + 10, b'a');
        assert_eq!(parse(&big), Parsed::Error(ProtocolError::TooLarge));
    }

    #[test]
    fn replies_round_trip() {
        let ok = reply(&serde_json::json!(7), Ok("a\nb\n".into()));
        let r = parse_reply(&ok).unwrap().unwrap();
        assert_eq!(
            (r.id, r.outcome),
            (serde_json::json!(7), Ok("a\nb\n".into()))
        );
        let err = reply(&serde_json::json!("x"), Err("no".into()));
        assert_eq!(
            parse_reply(&err).unwrap().unwrap().outcome,
            Err("no".into())
        );
        assert_eq!(parse_reply(&ok[..5]).unwrap(), None);
        let req = request(3, "fdb/show", &["br0".into()]);
        assert!(matches!(parse(&req), Parsed::Request(r, _) if r.params == ["br0"]));
    }

    /// Arbitrary bytes, and mutations of good requests, never panic and always yield a
    /// request, need-more, or an error; a request never claims more bytes than it was given.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0c71);
        let good = br#"{"id":12,"method":"fdb/add","params":["p0","0","02:00:00:00:00:01"]}"#;
        let alphabet = b"{}[]\":,0123456789.eE+-truefalsnul \\/u\n\tabc";
        let (mut requests, mut more, mut errors) = (0, 0, 0);
        for i in 0..200_000 {
            let len = rng.usize(0..=96);
            let buf: Vec<u8> = match i % 3 {
                0 => (0..len).map(|_| rng.u8(..)).collect(),
                1 => (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
                _ => {
                    let mut b = good.to_vec();
                    for _ in 0..rng.usize(1..4) {
                        let at = rng.usize(..b.len());
                        match rng.u8(..3) {
                            0 => b[at] = alphabet[rng.usize(..alphabet.len())],
                            1 => b.truncate(at),
                            _ => {
                                b.remove(at);
                            }
                        }
                        if b.is_empty() {
                            break;
                        }
                    }
                    b
                }
            };
            match parse(&buf) {
                Parsed::Request(_, n) => {
                    assert!(n <= buf.len());
                    requests += 1;
                }
                Parsed::NeedMore => more += 1,
                Parsed::Error(_) => errors += 1,
            }
            let _ = parse_reply(&buf);
        }
        assert!(
            requests > 0 && more > 0 && errors > 0,
            "{requests} {more} {errors}"
        );
    }
}
