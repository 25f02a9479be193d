//! Whether a Produce response (v10+) may carry KIP-951 leader hints, read from its bytes without decoding it.
//! The hints (a partition's `current_leader`, the response's `node_endpoints`) are tagged fields a broker sends
//! only with NOT_LEADER_OR_FOLLOWER-like errors; an answer with no tagged field anywhere has nothing to rewrite
//! and goes out as received, without the decode that would otherwise cost about a sixth of a small request.

use super::uvarint;

/// `Some(false)` when a Produce response body of `version` (v9+, flexible) has no tagged field at any level;
/// `Some(true)` at the first one found; `None` when the body does not parse (the full decode then reports it).
pub fn produce_tagged(body: &[u8], version: i16) -> Option<bool> {
    if version < 9 {
        return None;
    }
    let mut r = Reader(body);
    for _ in 0..r.compact_len()? {
        if version >= 13 {
            r.skip(16)?; // topic_id
        } else {
            r.compact_bytes()?; // name
        }
        for _ in 0..r.compact_len()? {
            // index, error_code, base_offset, log_append_time_ms, log_start_offset
            r.skip(4 + 2 + 8 + 8 + 8)?;
            for _ in 0..r.compact_len()? {
                r.skip(4)?; // batch_index
                r.compact_bytes()?; // batch_index_error_message
                if r.tagged()? {
                    return Some(true);
                }
            }
            r.compact_bytes()?; // error_message
            if r.tagged()? {
                return Some(true);
            }
        }
        if r.tagged()? {
            return Some(true);
        }
    }
    r.skip(4)?; // throttle_time_ms
    let tagged = r.tagged()?;
    (tagged || r.0.is_empty()).then_some(tagged)
}

/// A cursor over a flexible-version body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }

    fn uvarint(&mut self) -> Option<usize> {
        let (value, n) = uvarint(self.0)?;
        self.skip(n)?;
        usize::try_from(value).ok()
    }

    /// A compact array's element count (a null array has none).
    fn compact_len(&mut self) -> Option<usize> {
        Some(self.uvarint()?.saturating_sub(1))
    }

    /// Skips a compact (nullable) string or byte array.
    fn compact_bytes(&mut self) -> Option<()> {
        let len = self.compact_len()?;
        self.skip(len)
    }

    /// Whether a tagged-field section has any field (only its count is read).
    fn tagged(&mut self) -> Option<bool> {
        Some(self.uvarint()? > 0)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_response::{
        BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{BrokerId, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::produce_tagged;

    fn partition(index: i32) -> PartitionProduceResponse {
        PartitionProduceResponse::default().with_index(index).with_base_offset(42).with_record_errors(vec![
            BatchIndexAndErrorMessage::default()
                .with_batch_index(1)
                .with_batch_index_error_message(Some(StrBytes::from_static_str("bad"))),
        ])
    }

    fn response(partitions: Vec<PartitionProduceResponse>) -> ProduceResponse {
        let topic = TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_responses(partitions);
        ProduceResponse::default().with_responses(vec![topic.clone(), topic]).with_throttle_time_ms(7)
    }

    fn encoded(r: &ProduceResponse, version: i16) -> BytesMut {
        let mut out = BytesMut::new();
        r.encode(&mut out, version).unwrap();
        out
    }

    #[test]
    fn finds_leader_hints_at_every_level_and_none_in_a_plain_answer() {
        let hinted = partition(1)
            .with_error_code(6)
            .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(2)).with_leader_epoch(3));
        let endpoint = NodeEndpoint::default()
            .with_node_id(BrokerId(2))
            .with_host(StrBytes::from_static_str("kafka-2"))
            .with_port(9092);
        for version in 10..=13 {
            let plain = response(vec![partition(0), partition(1)]);
            assert_eq!(produce_tagged(&encoded(&plain, version), version), Some(false), "v{version}");
            let leader = response(vec![partition(0), hinted.clone()]);
            assert_eq!(produce_tagged(&encoded(&leader, version), version), Some(true), "v{version}");
            let endpoints = response(vec![partition(0)]).with_node_endpoints(vec![endpoint.clone()]);
            assert_eq!(produce_tagged(&encoded(&endpoints, version), version), Some(true), "v{version}");
        }
    }

    #[test]
    fn a_body_that_does_not_parse_is_left_to_the_decoder() {
        let body = encoded(&response(vec![partition(0)]), 11);
        for cut in 0..body.len() {
            assert_eq!(produce_tagged(&body[..cut], 11), None, "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(produce_tagged(&longer, 11), None);
        assert_eq!(produce_tagged(&body, 8), None);
    }
}
