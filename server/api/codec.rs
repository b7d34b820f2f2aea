//! The codec of every agentd service: prost's, except that a request that
//! does not decode is the client's fault.
//!
//! tonic-prost answers a message that is not valid protobuf (bytes that are
//! not a message, a string that is not UTF-8, nesting deeper than the
//! decoder's recursion limit) with INTERNAL and no details, as if the
//! server had failed. The gRPC status-code guide gives INTERNAL for a
//! broken server; a malformed request is INVALID_ARGUMENT. This codec, set
//! for the generated services and clients by `build.rs` (`codec_path`),
//! answers INVALID_ARGUMENT with the usual ErrorInfo (reason
//! `MALFORMED_MESSAGE`) and a BadRequest naming the field the decoder
//! stopped at. Encoding is prost's, unchanged.

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::error::Error;

/// prost's codec with decode errors mapped to INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(self.0.decoder())
    }
}

/// prost's decoder, with its errors as the client's.
#[derive(Debug, Clone)]
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::from(malformed(&e)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        tonic::codec::Decoder::buffer_settings(&self.0)
    }
}

/// A decode error as the engines' error. prost writes the message and
/// field at each level it unwound through, innermost first
/// ("failed to decode Protobuf message: Filter.field: SearchRequest.filter:
/// invalid wire type"); the field path is those fields outermost first.
fn malformed(e: &prost::DecodeError) -> Error {
    let text = e.to_string();
    let text = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some((segment, tail)) = rest.split_once(": ") {
        let Some((message, field)) = segment.split_once('.') else {
            break;
        };
        let is_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !is_name(message) || !is_name(field) {
            break;
        }
        fields.push(field);
        rest = tail;
    }
    fields.reverse();
    Error::Malformed {
        field: fields.join("."),
        description: rest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1 as pb;

    #[test]
    fn invalid_utf8_names_the_field() {
        // Field 1 (collection), length-delimited, two bytes that are not UTF-8.
        let bytes = [0x0a, 0x02, 0xff, 0xfe];
        let err = pb::SearchRequest::decode(&bytes[..]).unwrap_err();
        let Error::Malformed { field, description } = malformed(&err) else {
            panic!("malformed")
        };
        assert_eq!(field, "collection");
        assert!(description.contains("UTF-8"), "{description}");
    }

    #[test]
    fn nested_errors_name_the_path_outermost_first() {
        // SearchRequest.filter (5) holding a Filter whose `field` (1) holds a
        // FieldCondition whose key (1) is not UTF-8.
        let condition = [0x0a, 0x01, 0xff];
        let mut filter = vec![0x0a, condition.len() as u8];
        filter.extend_from_slice(&condition);
        let mut request = vec![0x2a, filter.len() as u8];
        request.extend_from_slice(&filter);
        let err = pb::SearchRequest::decode(&request[..]).unwrap_err();
        let Error::Malformed { field, .. } = malformed(&err) else {
            panic!("malformed")
        };
        // prost names a oneof member by its oneof (`kind`).
        assert_eq!(field, "filter.kind.key");
    }

    #[test]
    fn garbage_is_malformed_without_a_field() {
        let err = pb::SearchRequest::decode(&[0xff, 0xff, 0xff][..]).unwrap_err();
        let status = Status::from(malformed(&err));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        use tonic_types::StatusExt;
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "MALFORMED_MESSAGE");
    }
}
