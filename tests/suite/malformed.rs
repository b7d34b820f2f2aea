//! Requests that do not decode are the client's fault: INVALID_ARGUMENT
//! with ErrorInfo `MALFORMED_MESSAGE` and, when the decoder knows it, the
//! field it stopped at; never INTERNAL (issue #12, point 4).

use bytes::{Buf, BufMut, Bytes};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

use crate::common::TestServer;

/// A codec that sends raw bytes as the request and ignores the answer.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

async fn call(server: &TestServer, method: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, Raw)
        .await
        .expect_err("a malformed request is refused")
}

fn assert_malformed(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MALFORMED_MESSAGE");
    assert_eq!(info.domain, "agentd.dev");
    let bad = details.bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, field, "{status:?}");
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments_naming_the_field() {
    let server = TestServer::start().await;
    // SearchRequest.collection (field 1) holding bytes that are not UTF-8.
    let status = call(
        &server,
        "/agentd.v1.MemoryService/Search",
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await;
    assert_malformed(&status, "collection");

    // Bytes that are no message at all.
    let status = call(&server, "/agentd.v1.MemoryService/Put", vec![0xff; 16]).await;
    assert_malformed(&status, "");

    // A filter nested beyond the decoder's recursion limit: all_of (2)
    // inside all_of, 200 deep, in CountRequest.filter (2).
    let mut filter: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let mut list = vec![0x0a];
        put_len(&mut list, filter.len());
        list.extend_from_slice(&filter);
        let mut next = vec![0x12];
        put_len(&mut next, list.len());
        next.extend_from_slice(&list);
        filter = next;
    }
    let mut request = vec![0x12];
    put_len(&mut request, filter.len());
    request.extend_from_slice(&filter);
    let status = call(&server, "/agentd.v1.MemoryService/Count", request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("recursion"),
        "{}",
        status.message()
    );
    server.stop().await.unwrap();
}

/// A varint length.
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
